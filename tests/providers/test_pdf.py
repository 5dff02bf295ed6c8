"""Certificates rendered with embedded fonts, read back with pypdf."""

from io import BytesIO

from pypdf import PdfReader

from providers.local.pdf import PdfPool, qr_png_data_uri, render_pdf
from sidecar.render import Renderer

NAMES = ["Łukasz Żółć", "Дмитрий Иванов", "Ελένη Παπαδοπούλου"]


def certificate(name):
    return Renderer().render_certificate("certificate", {
        "learner": {"fullname": name}, "course": {"fullname": "Safety 101"},
        "company": {"name": ""}, "issued_date": "18 November 2025",
        "verification": {"code": "ABCD2345EFGH", "url": "https://x.example/verify/ABCD2345EFGH",
                         "qr": qr_png_data_uri("https://x.example/verify/ABCD2345EFGH")},
    })  # fmt: skip


def text_of(pdf: bytes) -> str:
    return "".join(p.extract_text() for p in PdfReader(BytesIO(pdf)).pages)


def test_international_names_render_as_letters_with_code_and_qr():
    for name in NAMES:
        pdf = render_pdf(certificate(name))
        text = text_of(pdf)
        assert name in text and "ABCD2345EFGH" in text
        reader = PdfReader(BytesIO(pdf))
        assert len(reader.pages) == 1 and len(reader.pages[0].images) == 1


def test_arabic_and_other_scripts_have_glyphs_in_the_embedded_fonts(caplog):
    # xhtml2pdf logs a warning for every character no embedded font can draw.
    names = ["أحمد عبد الله", "דוד בן־גוריון", "Nguyễn Thị Hương", "Ólafur Þórsson", "Şükrü Çelik"]
    for name in names:
        render_pdf(certificate(name))
    assert "No font this document has can draw" not in caplog.text


def test_pool_with_two_processes_gives_the_same_documents_in_order():
    with PdfPool(2) as pool:
        pdfs = list(pool.map([certificate(n) for n in NAMES]))
    assert [n in text_of(p) for n, p in zip(NAMES, pdfs, strict=True)] == [True] * 3
