"""HTML → PDF with xhtml2pdf, DejaVu fonts embedded, in a process pool.

xhtml2pdf's built-in fonts have no Polish, Cyrillic or Greek letters, so the shipped
DejaVu files are embedded through @font-face. Its resource policy lets a document read
local files only from allowed folders: the fonts folder is the one allowed root, remote
fetches are off (a certificate template needs nothing from the network; the QR code is
an inline data: URI).
"""

import base64
import io
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import qrcode
from xhtml2pdf import pisa
from xhtml2pdf.config.resources import ResourceAccessPolicy

from providers.base import ProviderError

log = logging.getLogger(__name__)

FONT_DIR = Path(__file__).resolve().parent / "fonts"

FONT_CSS = "\n".join(
    f'@font-face {{ font-family: "{family}"; src: url("{(FONT_DIR / file).as_posix()}");'
    f" font-weight: {weight}; }}"
    for family, file, weight in (
        ("DejaVu Sans", "DejaVuSans.ttf", "normal"),
        ("DejaVu Sans", "DejaVuSans-Bold.ttf", "bold"),
        ("DejaVu Serif", "DejaVuSerif.ttf", "normal"),
        ("DejaVu Serif", "DejaVuSerif-Bold.ttf", "bold"),
    )
)

_POLICY = ResourceAccessPolicy.server(FONT_DIR, allow_remote=False)


def render_pdf(html: str) -> bytes:
    """One PDF from one HTML document, DejaVu fonts available. Raises ProviderError on errors."""
    out = io.BytesIO()
    result = pisa.CreatePDF(with_fonts(html), dest=out, resource_policy=_POLICY)
    if result.err:
        raise ProviderError(f"certificate PDF could not be rendered ({result.err} errors)")
    return out.getvalue()


def with_fonts(html: str) -> str:
    """Put the @font-face rules in front of the document's own styles."""
    tag = "<head>"
    style = f"<style>{FONT_CSS}</style>"
    if tag in html:
        return html.replace(tag, tag + style, 1)
    return style + html


def qr_png_data_uri(text: str) -> str:
    """A QR code of `text` as a PNG data: URI, to embed as <img src>."""
    qr = qrcode.QRCode(border=1, box_size=6, error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(text)
    qr.make(fit=True)
    buf = io.BytesIO()
    qr.make_image().save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _warm() -> None:
    render_pdf(
        "<html><head></head><body><p style='font-family: \"DejaVu Sans\"'>Ł</p></body></html>"
    )


class PdfPool:
    """Renders PDFs in worker processes so the daemon's threads stay responsive."""

    def __init__(self, processes: int = 1):
        self.processes = max(1, processes)
        self._pool = ProcessPoolExecutor(
            self.processes, mp_context=get_context("forkserver"), initializer=_warm
        )

    def submit(self, html: str) -> "Future[bytes]":
        return self._pool.submit(render_pdf, html)

    def map(self, htmls: Iterable[str]) -> Iterator[bytes]:
        return self._pool.map(render_pdf, htmls, chunksize=1)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
