"""A database URL → a peewee database bound to the models."""

import logging
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from peewee import Database, MySQLDatabase, PostgresqlDatabase, SqliteDatabase

from sidecar.db.models import database as proxy
from sidecar.errors import ConfigError

log = logging.getLogger(__name__)

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 10_000,
    "synchronous": "normal",  # with WAL: durable across process crashes, not power loss
    "foreign_keys": 1,
}


def open_database(url: str) -> Database:
    """Open (lazily) the database at `url` and bind the models to it.

    sqlite:///relative.db, sqlite:////abs/path.db, postgresql://user@host:port/name,
    mysql://user:pw@host:port/name. Raises ConfigError for an unsupported URL.
    """
    db = make_database(url)
    proxy.initialize(db)
    return db


def make_database(url: str) -> Database:
    """The database at `url`, not bound to the models (`db copy` holds two at once)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    options = dict(parse_qsl(parts.query))
    if scheme == "sqlite":
        path = unquote(url.split("://", 1)[1].split("?", 1)[0])
        path = path[1:] if path.startswith("/") else path
        if not path or path == ":memory:":
            raise ConfigError(f"database.url: {url!r}: give a file path, e.g. sqlite:///offload.db")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SqliteDatabase(path, pragmas=SQLITE_PRAGMAS, timeout=10)
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ConfigError(f"database.url: {redact(url)}: the database name is missing")
    common = {
        "host": parts.hostname or "127.0.0.1",
        "user": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
    }
    common = {k: v for k, v in common.items() if v is not None}
    if parts.port:
        common["port"] = parts.port
    if scheme in ("postgresql", "postgres"):
        return PostgresqlDatabase(name, **common, **options)
    if scheme in ("mysql", "mariadb"):
        return MySQLDatabase(name, charset="utf8mb4", **common, **options)
    raise ConfigError(
        f"database.url: unsupported scheme {parts.scheme!r}: use sqlite://, postgresql:// or mysql://"
    )


def redact(url: str) -> str:
    """`url` with its password (if any) shown as ***."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
