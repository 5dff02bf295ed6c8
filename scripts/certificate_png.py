"""Render the shipped certificate for a sample learner to docs/certificate.png (shown in README).

Run it after changing sidecar/templates/certificate.html: python scripts/certificate_png.py
It renders through the product's path (Composer, Renderer, render_pdf) and rasterises the
PDF with pypdfium2 (a test extra). tests/providers/test_certificate_layout.py fails while the
committed PNG no longer matches the template.
"""

import argparse
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pypdfium2  # noqa: E402

from providers.local.pdf import render_pdf  # noqa: E402
from sidecar.certificates import Issued  # noqa: E402
from sidecar.compose import Composer  # noqa: E402
from sidecar.db.models import Job, Recipient  # noqa: E402
from sidecar.render import Renderer  # noqa: E402


def sample_pdf() -> bytes:
    job = Job(
        template_id="completion",
        template_data={
            "course": {"fullname": "Fire Safety and Emergency Evacuation", "shortname": "FS101",
                       "url": "https://moodle.example/course/view.php?id=12"},
            "company": {"name": "Acme Training"},
        },
    )  # fmt: skip
    learner = Recipient(
        userid=42, email="aoife@example.test", firstname="Aoife", lastname="Ní Bhriain", vars={}
    )
    composer = Composer(Renderer(), "https://offload.example", lambda: datetime(2025, 11, 18))
    return render_pdf(
        composer.certificate_html(job, learner, Issued("7KQ2M9XH4TPA", "42.pdf", True))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "certificate.png")
    parser.add_argument("--width", type=int, default=1200, help="pixels (default 1200)")
    args = parser.parse_args()
    page = pypdfium2.PdfDocument(sample_pdf())[0]
    image = page.render(scale=args.width / page.get_width()).to_pil()
    image.convert("RGB").save(args.out, optimize=True)
    print(f"{args.out}: {image.width}x{image.height}")


if __name__ == "__main__":
    main()
