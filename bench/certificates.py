"""500 certificates from the shipped template: PdfPool(1) and PdfPool(2) against bare xhtml2pdf.

Prints PDFs/s for each, the ratio to bare per process (target >= 0.90) and the two-process
speedup (target >= 1.8). Run: python bench/certificates.py [--count N]
"""

import argparse
import io
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xhtml2pdf import pisa  # noqa: E402

from providers.local.pdf import _POLICY, PdfPool, qr_png_data_uri, with_fonts  # noqa: E402
from sidecar.render import Renderer  # noqa: E402

NAMES = ["Łukasz Żółć", "Дмитрий Иванов", "Ελένη Παπαδοπούλου", "Aoife O'Brien", "José Núñez"]


def documents(n: int) -> list[str]:
    renderer = Renderer()
    qr = qr_png_data_uri("https://offload.example/verify/ABCDEFGH2345")
    return [
        renderer.render_certificate("certificate", {
            "learner": {"fullname": f"{NAMES[i % len(NAMES)]} {i}"},
            "course": {"fullname": "Safety at Work 101"}, "company": {"name": "Acme Training"},
            "issued_date": "18 November 2025",
            "verification": {
                "code": f"CODE{i:08d}", "url": "https://offload.example/verify/x", "qr": qr,
            },
        })
        for i in range(n)
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=500)
    args = ap.parse_args()
    docs = documents(args.count)

    pisa.CreatePDF(with_fonts(docs[0]), dest=io.BytesIO(), resource_policy=_POLICY)  # warm
    t = time.perf_counter()
    for html in docs:
        pisa.CreatePDF(with_fonts(html), dest=io.BytesIO(), resource_policy=_POLICY)
    bare = args.count / (time.perf_counter() - t)

    rates = {}
    for procs in (1, 2):
        with PdfPool(procs) as pool:
            list(pool.map(docs[: procs * 2]))  # start and warm the workers
            t = time.perf_counter()
            pdfs = list(pool.map(docs))
            rates[procs] = args.count / (time.perf_counter() - t)
        assert len(pdfs) == args.count and all(p.startswith(b"%PDF") for p in pdfs)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"bare xhtml2pdf, 1 process:  {bare:.1f} PDFs/s")
    print(
        f"PdfPool(1):                 {rates[1]:.1f} PDFs/s  "
        f"ratio {rates[1] / bare:.2f} (target >= 0.90)"
    )
    print(
        f"PdfPool(2):                 {rates[2]:.1f} PDFs/s  "
        f"speedup {rates[2] / rates[1]:.2f}x (target >= 1.8)"
    )
    print(f"peak RSS (parent):          {rss:.0f} MB")


if __name__ == "__main__":
    main()
