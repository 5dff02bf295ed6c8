"""`db backup` and `db restore` for SQLite, and the lock that tells a restore (or a `db copy`)
a daemon runs.

A backup is SQLite's online backup API (`sqlite3.Connection.backup`): a consistent copy
while the daemon keeps writing. PostgreSQL and MariaDB have their own tools; for them
`refusal()` gives the exact `pg_dump` / `mariadb-dump` line instead.

Every daemon on an SQLite ledger holds a shared `flock` on `<database>.lock` while it runs;
a restore takes it exclusively, so it refuses while a daemon runs and no daemon starts
while it replaces the file.
"""

import fcntl
import os
import shlex
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

from sidecar.db import migrations, models
from sidecar.errors import Conflict, SidecarError

SCHEMA_TABLE = models.SchemaVersion._meta.table_name


class BackupError(SidecarError):
    """A backup or restore that cannot be done; nothing was changed."""


def sqlite_path(url: str) -> Path | None:
    """The file of an sqlite:// URL (as sidecar.db.connect reads it), else None."""
    if urlsplit(url).scheme.split("+")[0] != "sqlite":
        return None
    path = unquote(url.split("://", 1)[1].split("?", 1)[0])
    return Path(path[1:] if path.startswith("/") else path)


def refusal(url: str, file: str, *, restore: bool = False) -> str:
    """What to run instead, for a PostgreSQL or MariaDB database (password left out: give
    it as PGPASSWORD / ~/.pgpass, or at the `-p` prompt)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    host = parts.hostname or "127.0.0.1"
    user = unquote(parts.username) if parts.username else None
    name = unquote(parts.path.lstrip("/"))
    q = shlex.quote
    command = "restore" if restore else "backup"
    if scheme in ("postgresql", "postgres"):
        kind = "PostgreSQL"
        where = f"--host {q(host)} --port {parts.port or 5432}"
        where += f" --username {q(user)}" if user else ""
        if restore:
            line = f"pg_restore {where} --clean --if-exists --dbname {q(name)} {q(file)}"
        else:
            line = f"pg_dump {where} --format=custom --file {q(file)} {q(name)}"
    elif scheme in ("mysql", "mariadb"):
        kind = "MariaDB/MySQL"
        where = f"--host {q(host)} --port {parts.port or 3306}"
        where += f" --user {q(user)}" if user else ""
        if restore:
            line = f"mariadb {where} -p {q(name)} < {q(file)}"
        else:
            line = f"mariadb-dump {where} -p --single-transaction --routines {q(name)} > {q(file)}"
    else:
        return f"database.url: unsupported scheme {parts.scheme!r}"
    return f"database.url is {kind}: `db {command}` is for SQLite; run:\n  {line}"


# --- the daemon's lock -----------------------------------------------------------------------


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def hold_shared(db_path: Path) -> IO | None:
    """For a daemon: a shared lock on the ledger, kept (with the returned file) while it
    runs. Raises Conflict while a restore holds it."""
    handle = open(lock_path(db_path), "a+")  # noqa: SIM115 - kept open while the daemon runs
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise Conflict(
            f"{db_path}: a `db restore` or `db copy` holds this database; start again after it"
        ) from None
    return handle


def hold_exclusive(db_path: Path, step: str = "restore") -> IO:
    """For `db restore` and `db copy`: the lock no daemon holds meanwhile, or BackupError
    (telling to stop the daemon, then `step`) while one runs. Closing the file frees it."""
    handle = open(lock_path(db_path), "a+")  # noqa: SIM115 - closed by the caller
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise BackupError(
            f"{db_path}: a moodle-offload daemon is using this database: stop it first "
            f"(systemctl stop moodle-offload), {step}, then start it; nothing changed"
        ) from None
    return handle


# --- backup and restore ----------------------------------------------------------------------


@dataclass(frozen=True)
class Copied:
    source: Path
    target: Path
    version: int
    jobs: int
    kept: Path | None = None  # restore: where the replaced database went


def _version(conn: sqlite3.Connection) -> int:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if SCHEMA_TABLE not in tables or "job" not in tables:
        return 0
    return conn.execute(f"SELECT COALESCE(MAX(version), 0) FROM {SCHEMA_TABLE}").fetchone()[0]


def _jobs(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM job").fetchone()[0]


def _copy(src: sqlite3.Connection, target: Path) -> None:
    """Write `src` to `target` through a temporary file beside it, then rename: a failed
    copy leaves no half file under the target's name."""
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    dst = sqlite3.connect(partial)
    try:
        src.backup(dst, pages=1024)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        dst.close()
    os.replace(partial, target)


def backup(db_path: Path, file: Path) -> Copied:
    """A consistent copy of the live SQLite ledger at `db_path` into the new file `file`."""
    if file.exists():
        raise BackupError(f"{file}: already exists; give a new file name")
    if not db_path.is_file():
        raise BackupError(f"{db_path}: no database there (database.url)")
    if not file.parent.is_dir():
        raise BackupError(f"{file.parent}: no such folder")
    src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        version = _version(src)
        if version == 0:
            raise BackupError(f"{db_path}: not a moodle-offload database (no schema recorded)")
        _copy(src, file)
        return Copied(db_path, file, version, _jobs(src))
    finally:
        src.close()


def restore(file: Path, db_path: Path, now: datetime | None = None) -> Copied:
    """Replace the ledger at `db_path` by the backup `file`, keeping the old one aside."""
    if not file.is_file():
        raise BackupError(f"{file}: no such file")
    try:
        src = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
        check = src.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{file}: not an SQLite database ({exc}); nothing changed") from None
    try:
        if check != "ok":
            raise BackupError(f"{file}: damaged ({check}); nothing changed")
        version = _version(src)
        if version == 0:
            raise BackupError(
                f"{file}: not a moodle-offload backup (no schema recorded); nothing changed"
            )
        if version > migrations.LATEST:
            raise BackupError(
                f"{file}: schema version {version} is newer than this release's "
                f"({migrations.LATEST}): restore it with the release that made it; nothing changed"
            )
        db_path.parent.mkdir(parents=True, exist_ok=True)
        lock = hold_exclusive(db_path)
        try:
            kept = None
            if db_path.exists():
                stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
                kept = db_path.with_name(f"{db_path.name}.before-restore-{stamp}")
                for suffix in ("", "-wal", "-shm"):  # a WAL left beside it belongs to it
                    old = Path(str(db_path) + suffix)
                    if old.exists():
                        os.replace(old, Path(str(kept) + suffix))
            _copy(src, db_path)
            return Copied(file, db_path, version, _jobs(src), kept)
        finally:
            lock.close()
    finally:
        src.close()
