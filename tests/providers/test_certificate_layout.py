"""The shipped certificate fills its A4 landscape page: rendered, read back and rasterised.

Each certificate goes through the product's path (Composer → Renderer → render_pdf), is
read back with pypdf (one page, the learner's words), and is rasterised with pypdfium2 to
check what a printed page shows: the frame at the margins all round, the content in the
middle, nothing run off the edges.
"""

import subprocess
import sys
import unicodedata
from datetime import datetime
from io import BytesIO
from pathlib import Path

import pypdfium2
import pytest
from PIL import Image, ImageChops
from pypdf import PdfReader

from providers.local.pdf import render_pdf
from sidecar.certificates import Issued
from sidecar.compose import Composer
from sidecar.db.models import Job, Recipient
from sidecar.render import Renderer

REPO = Path(__file__).resolve().parents[2]
CODE = "ABCD2345EFGH"
DARK = 160  # grey level below which a pixel is ink (the frame's brown is ~100)

NAME_60 = "Anna-Maria Wilhelmina Alexandra von Hohenzollern-Sigmaringen"
COURSE_120 = (
    "Occupational Health and Safety Management Systems: Advanced Risk Assessment, "
    "Incident Investigation and Compliance, 2025"
)

CASES = {
    "ordinary": ("Jane", "Doe", "Safety 101"),
    "60-character name, 120-character course": (*NAME_60.split(" ", 1), COURSE_120),
    "Moodle's longest name and course": (
        ("Anna-Katharina " * 7)[:100], ("Montgomery-Windsor " * 6)[:100],
        ("Workplace Health and Safety Leadership " * 7)[:254],
    ),
    "Hebrew": ("דוד", "בן־גוריון", "בטיחות בעבודה"),
    "Arabic": ("أحمد", "عبد الله", "السلامة في العمل"),
    "Polish": ("Łukasz", "Żółć", "Bezpieczeństwo pracy"),
    "Russian": ("Дмитрий", "Иванов", "Охрана труда"),
    "Greek": ("Ελένη", "Παπαδοπούλου", "Ασφάλεια στην εργασία"),
}  # fmt: skip


def certificate_pdf(firstname: str, lastname: str, course: str) -> bytes:
    job = Job(
        template_id="completion",
        template_data={
            "course": {"fullname": course, "shortname": "C1", "url": ""},
            "company": {"name": "Acme Training"},
        },
    )
    r = Recipient(
        userid=7, email="learner@example.test", firstname=firstname, lastname=lastname, vars={}
    )
    composer = Composer(Renderer(), "https://offload.example", lambda: datetime(2025, 11, 18))
    return render_pdf(composer.certificate_html(job, r, Issued(CODE, "7.pdf", True)))


def raster(pdf: bytes, width: int = 842) -> Image.Image:
    """The first page in grey levels, `width` pixels wide."""
    page = pypdfium2.PdfDocument(pdf)[0]
    return page.render(scale=width / page.get_width()).to_pil().convert("L")


def dark_share(img: Image.Image) -> tuple[list[float], list[float]]:
    """The share of ink pixels in each row and in each column."""
    w, h = img.size
    px = img.load()
    ink = [[px[x, y] < DARK for x in range(w)] for y in range(h)]
    rows = [sum(row) / w for row in ink]
    cols = [sum(ink[y][x] for y in range(h)) / h for x in range(w)]
    return rows, cols


def content_centre(img: Image.Image) -> float:
    """Vertical centre of mass of the ink that is not a frame line, as a share of the height."""
    rows, cols = dark_share(img)
    px = img.load()
    frame_cols = {x for x, share in enumerate(cols) if share > 0.5}
    total = weighted = 0
    for y, share in enumerate(rows):
        if share > 0.5:  # a horizontal frame line
            continue
        n = sum(1 for x in range(img.width) if x not in frame_cols and px[x, y] < DARK)
        total += n
        weighted += n * y
    return weighted / total / img.height


def letters(text: str) -> str:
    """Text as the letters a reader sees: Arabic presentation forms folded, no whitespace."""
    return "".join(unicodedata.normalize("NFKC", text).split())


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def case(request):
    firstname, lastname, course = CASES[request.param]
    pdf = certificate_pdf(firstname, lastname, course)
    return f"{firstname} {lastname}", course, pdf, raster(pdf)


def test_test_names_have_the_lengths_the_issue_names():
    assert (len(NAME_60), len(COURSE_120)) == (60, 120)
    first, last, course = CASES["Moodle's longest name and course"]
    assert (len(first), len(last), len(course)) == (100, 100, 254)


def test_certificate_is_one_page_with_name_course_code_and_qr(case):
    name, course, pdf, _ = case
    reader = PdfReader(BytesIO(pdf))
    assert len(reader.pages) == 1
    text = letters(reader.pages[0].extract_text())
    assert letters(name) in text and letters(course) in text and CODE in text
    assert len(reader.pages[0].images) == 1  # the QR code


def test_frame_reaches_the_bottom_margin(case):
    img = case[3]
    rows, _ = dark_share(img)
    bottom = rows[int(img.height * 0.92) :]
    assert max(bottom) > 0.8, "no frame line across the bottom 8% of the page"


def test_ink_spans_the_page_and_stays_inside_its_margins(case):
    img = case[3]
    left, top, right, bottom = img.point(lambda v: 255 if v < DARK else 0).getbbox()
    assert (bottom - top) / img.height > 0.85
    # Equal margins all round: nothing ran off an edge or pushed the frame aside.
    margins = [left, img.width - right, top, img.height - bottom]
    assert min(margins) > 0.03 * img.width and max(margins) - min(margins) <= 3


def test_content_is_centred_vertically(case):
    assert content_centre(case[3]) == pytest.approx(0.5, abs=0.06)


def test_docs_png_is_the_shipped_certificate(tmp_path):
    # scripts/certificate_png.py wrote docs/certificate.png; after a template change it
    # must be run again, or the README shows a certificate that is no longer shipped.
    out = tmp_path / "certificate.png"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "certificate_png.py"), "--out", str(out)],
        check=True,
    )
    fresh = Image.open(out).convert("L")
    shipped = Image.open(REPO / "docs" / "certificate.png").convert("L")
    assert shipped.size == fresh.size
    diff = ImageChops.difference(fresh, shipped).histogram()
    changed = sum(diff[32:]) / (fresh.width * fresh.height)
    assert changed < 0.002, "docs/certificate.png is stale: run python scripts/certificate_png.py"
