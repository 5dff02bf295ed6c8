"""Files uploaded from the dashboard, kept between their preview and their confirmation.

An upload is a folder `{root}/{token}/` holding the file under its own (cleaned) name
and `upload.json` (who uploaded it, when, and the form's fields). The token is random
and the folder belongs to the one who uploaded it: another admin cannot confirm it.
A staged file holds learners' addresses, so folders are private (0700) and removed once
sent or after `KEEP`.
"""

import json
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sidecar.config import state_dir
from sidecar.errors import SidecarError

KEEP = 24 * 3600  # seconds an unconfirmed upload is kept
MAX_BYTES = 10 * 1024 * 1024  # 50,000 rows of a CSV are ~4 MB
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,64}")
_META = "upload.json"


class UploadTooLarge(SidecarError):
    pass


@dataclass(frozen=True)
class Staged:
    token: str
    path: Path  # the file
    filename: str  # as uploaded, cleaned
    owner: str
    fields: dict

    def remove(self) -> None:
        shutil.rmtree(self.path.parent, ignore_errors=True)


def root() -> Path:
    """`uploads/` in the daemon's state directory when it can write there (systemd's
    StateDirectory), else a private folder in the temporary directory."""
    base = state_dir()
    if not (base.is_dir() and os.access(base, os.W_OK)):
        base = Path(tempfile.gettempdir()) / f"moodle-offload-{os.getuid()}"
    path = base / "uploads"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def clean_name(name: str) -> str:
    """The file's own name, without folders or characters a path should not hold."""
    base = re.split(r"[\\/]", name)[-1]
    base = re.sub(r"[^\w.\- ]", "_", base).strip(" .") or "upload.csv"
    return base[:120]


def stage(where: Path, filename: str, stream: BinaryIO, *, owner: str, fields: dict) -> Staged:
    """Copy `stream` (at most MAX_BYTES, else UploadTooLarge and nothing kept) into a new
    upload folder under `where`; expired uploads are removed on the way."""
    expire(where)
    token = secrets.token_urlsafe(24)
    folder = where / token
    folder.mkdir(mode=0o700)
    name = clean_name(filename)
    path = folder / name
    try:
        total = 0
        with open(path, "wb") as out:
            while chunk := stream.read(64 * 1024):
                total += len(chunk)
                if total > MAX_BYTES:
                    raise UploadTooLarge(f"the file is over {MAX_BYTES // (1024 * 1024)} MB")
                out.write(chunk)
        meta = {"owner": owner, "filename": name, "at": time.time(), "fields": fields}
        (folder / _META).write_text(json.dumps(meta), encoding="utf-8")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Staged(token, path, name, owner, fields)


def find(where: Path, token: str, *, owner: str) -> Staged | None:
    """The upload `token` of `owner` that has not expired, or None."""
    if not _TOKEN.fullmatch(token):
        return None
    folder = where / token
    try:
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("owner") != owner or time.time() - meta.get("at", 0) > KEEP:
        return None
    path = folder / meta["filename"]
    if not path.is_file():
        return None
    return Staged(token, path, meta["filename"], owner, meta["fields"])


def expire(where: Path, now: float | None = None) -> int:
    """Remove uploads older than KEEP; returns how many."""
    now = time.time() if now is None else now
    removed = 0
    for folder in where.iterdir():
        try:
            at = json.loads((folder / _META).read_text(encoding="utf-8")).get("at", 0)
        except (OSError, ValueError):
            at = folder.stat().st_mtime
        if now - at > KEEP:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
