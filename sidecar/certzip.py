"""A course's certificates in one ZIP: `certificates zip` and the dashboard's download.

Every issued (delivered: the recipient is `sent`), non-revoked certificate of the course,
each entry named `Lastname_Firstname_YYYY-MM-DD_CODE.pdf` (the code makes it unique).
PDFs are already compressed: entries are stored, not deflated. Memory stays bounded
whatever the course's size: the PDFs are read one at a time, in chunks, from
`providers.local.certificate_dir` or the S3 bucket, and written out as they come (to a
temp file renamed at the end, or to the HTTP response).

A PDF that cannot be read (file or object missing, storage without a connector) does
not stop the ZIP: it is left out, listed in a `MISSING.txt` entry of the ZIP and
returned, so the command can list it and exit 1.
"""

import contextlib
import logging
import os
import re
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from peewee import JOIN

from sidecar.db.models import Certificate, Job, Recipient
from sidecar.errors import SidecarError
from sidecar.ledgerview import EVERYTHING, Scope
from sidecar.status import RecipientStatus

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
MISSING_NAME = "MISSING.txt"


@dataclass(frozen=True)
class Entry:
    code: str
    userid: int
    storage: str
    key: str
    issued_at: datetime
    name: str  # inside the ZIP


@dataclass(frozen=True)
class Missing:
    entry: Entry
    why: str


class Unreadable(SidecarError):
    """The PDF of one certificate cannot be read: it goes into MISSING.txt."""


_UNSAFE = re.compile(r"[^\w-]+")


def safe_part(text: str | None, limit: int = 40) -> str:
    """A piece of a file name: letters, digits, `-` and `_` only (accents kept), no dots,
    slashes or spaces, at most `limit` characters; "" for nothing left."""
    if not text:
        return ""
    if not text.isalnum():
        text = _UNSAFE.sub("_", unicodedata.normalize("NFC", text)).strip("_")
    return text[:limit].strip("_")


def entry_name(lastname: str | None, firstname: str | None, issued_at: datetime,
               code: str, userid: int) -> str:  # fmt: skip
    who = [p for p in (safe_part(lastname), safe_part(firstname)) if p] or [f"user{userid}"]
    return "_".join([*who, issued_at.date().isoformat(), safe_part(code, 32)]) + ".pdf"


def select(course: int, since: datetime | None = None, scope: Scope = EVERYTHING) -> list[Entry]:
    """The course's issued, non-revoked certificates that `scope` sees, issued at or after
    `since`, sorted by entry name."""
    recipient = (Recipient.job == Certificate.job_id) & (Recipient.userid == Certificate.userid)
    query = (
        Certificate.select(
            Certificate.code,
            Certificate.userid,
            Certificate.storage,
            Certificate.key,
            Certificate.issued_at,
            Recipient.lastname,
            Recipient.firstname,
        )  # fmt: skip
        .join(Recipient, on=recipient)
        .join(Job, JOIN.LEFT_OUTER, on=(Job.id == Certificate.job_id))
        .where(
            Certificate.courseid == course,
            Certificate.revoked_at.is_null(),
            Recipient.status == RecipientStatus.SENT,
        )
    )
    if since is not None:
        query = query.where(Certificate.issued_at >= since)
    if scope.companies is not None:
        query = query.where(Job.tenant_id.in_(sorted(scope.companies) or [-1]))
    out = [
        Entry(code, uid, storage, key, at, entry_name(last, first, at, code, uid))
        for code, uid, storage, key, at, last, first in query.tuples().iterator()
    ]
    return sorted(out, key=lambda e: e.name.casefold())


_PROVIDER = {"s3": ("S3", "providers.aws"), "r2": ("R2", "providers.cloudflare")}


def cloud_stores(config, runtime) -> dict[str, Callable[[], object]]:
    """{storage: the bucket's store, built on first use} of the configured providers."""
    stores: dict[str, Callable[[], object]] = {}
    if runtime is None:
        return stores
    if config.providers.aws is not None:
        stores["s3"] = lambda: runtime.aws.certificates
    if config.providers.cloudflare is not None and config.providers.cloudflare.r2_bucket:
        stores["r2"] = lambda: runtime.cloudflare.certificates
    return stores


def opener(certificate_dir: Path, stores: dict[str, Callable[[], object]] | None = None):
    """`open_pdf(entry)` -> a binary stream (close it), or Unreadable. `stores` gives the
    bucket of each cloud storage ("s3", "r2"; see cloud_stores); a storage without one is
    not configured."""
    stores = stores or {}

    def open_pdf(e: Entry) -> BinaryIO:
        if e.storage == "local":
            try:
                return open(certificate_dir / e.key, "rb")  # noqa: SIM115 - the caller closes
            except OSError as exc:
                raise Unreadable(
                    f"{e.key}: {exc.strerror} (providers.local.certificate_dir)"
                ) from None
        if e.storage in _PROVIDER:
            where, section = _PROVIDER[e.storage]
            if e.storage not in stores:
                raise Unreadable(f"{e.key}: stored in {where}, but {section} is not configured")
            body = stores[e.storage]().open(e.key)
            if body is None:
                raise Unreadable(f"{e.key}: no such object in the certificates bucket")
            return body
        raise Unreadable(f"{e.key}: stored in {e.storage}, which this version cannot read")

    return open_pdf


def _steps(entries: list[Entry], out, open_pdf, missing: list[Missing]) -> Iterator[Entry]:
    """Write the ZIP to `out`, yielding after each entry (written or found missing)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for e in entries:
            try:
                src = open_pdf(e)
            except Unreadable as exc:
                log.warning("certificate %s: left out of the ZIP: %s", e.code, exc)
                missing.append(Missing(e, str(exc)))
                yield e
                continue
            info = zipfile.ZipInfo(e.name, date_time=e.issued_at.timetuple()[:6])
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            with contextlib.closing(src), zf.open(info, "w") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
            yield e
        if missing:
            zf.writestr(MISSING_NAME, missing_text(missing))


def missing_text(missing: list[Missing]) -> str:
    lines = ["These certificates could not be read and are not in this ZIP:", ""]
    lines += [f"{m.entry.code}  user {m.entry.userid}  {m.entry.name}  {m.why}" for m in missing]
    return "\n".join(lines) + "\n"


def write_file(entries: list[Entry], path: Path, open_pdf,
               progress: Callable[[Entry], None] | None = None) -> list[Missing]:  # fmt: skip
    """Write the ZIP to `path` through a temp file beside it, renamed when complete (an
    interrupted run leaves no partial ZIP). Returns the certificates left out."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    missing: list[Missing] = []
    try:
        with os.fdopen(fd, "wb") as out:
            # no fsync: an export can be made again, and it cost ~40% of the run
            for e in _steps(entries, out, open_pdf, missing):
                if progress:
                    progress(e)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return missing


class _Sink:
    """A write-only, unseekable buffer the ZIP is written to and the response drains."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data) -> int:
        self.buf += data
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = bytes(self.buf)
        self.buf.clear()
        return data


def stream(entries: list[Entry], open_pdf) -> Iterator[bytes]:
    """The ZIP as chunks of bytes, about one PDF each (an HTTP response body). A PDF that
    cannot be read goes into MISSING.txt, as with `write_file`."""
    sink = _Sink()
    missing: list[Missing] = []
    for _ in _steps(entries, sink, open_pdf, missing):
        if sink.buf:
            yield sink.take()
    if sink.buf:
        yield sink.take()
    if missing:
        log.warning("course ZIP streamed with %d certificates left out", len(missing))
