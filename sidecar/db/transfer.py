"""`db copy`: the whole ledger from one database into another (SQLite → PostgreSQL, ...).

The target gets today's schema first (`migrations.upgrade`), then every table of ours in
foreign-key order, read in primary-key pages of `batch` rows (keyset, so memory stays flat
and a page never rescans the ones before) and written one round trip a page. Booleans and
times go through the models' fields (SQLite keeps 0/1 and text); text, numbers and JSON
text go as the driver gives them. Primary keys are
kept, so ids in links, logs and the dashboard still name the same rows; afterwards the
target's sequences (PostgreSQL) or AUTO_INCREMENT counters (MariaDB) start past them.
Sealed secrets (temporary passwords) are copied as they are: the same encryption key
reads them.

The source is read in one snapshot (a read transaction; REPEATABLE READ on PostgreSQL),
and on SQLite under the exclusive lock `db restore` takes, so no daemon runs meanwhile.
The target is written in one transaction: a copy that fails leaves the target with the
empty schema, and running it again starts over.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from peewee import (
    SQL,
    AutoField,
    BooleanField,
    Database,
    DatabaseError,
    DateTimeField,
    MySQLDatabase,
    PostgresqlDatabase,
    Tuple,
    __exception_wrapper__,
    fn,
    sort_models,
)

from sidecar.db import backup, migrations
from sidecar.db import models as m
from sidecar.db.connect import make_database, redact
from sidecar.errors import ConfigError, SidecarError

BATCH = 5_000  # rows a page: ~5 MB of recipients in memory at most

#: every table of ours but the schema's own record (the target's upgrade writes that one)
TABLES = [model for model in sort_models(m.ALL_MODELS) if model is not m.SchemaVersion]


class CopyError(SidecarError):
    """A copy that cannot be done, or went wrong; the message says what the target holds."""


@dataclass(frozen=True)
class Count:
    table: str
    source: int
    target: int


@dataclass(frozen=True)
class Copied:
    version: int
    counts: list[Count]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(c.target for c in self.counts)


def copy_ledger(
    source_url: str,
    target_url: str,
    *,
    batch: int = BATCH,
    progress: Callable[[str, int], None] | None = None,
) -> Copied:
    """Copy every row of the ledger at `source_url` into the database at `target_url`.

    Raises CopyError, the target unchanged, when the target holds moodle-offload rows, the
    source's schema is not this release's, or a daemon holds an SQLite source; `progress`
    is told (table, rows copied so far) after each page.
    """
    if _same_database(source_url, target_url):
        raise CopyError(f"{redact(target_url)} is the configured database itself: give another")
    started = time.perf_counter()
    with ExitStack() as stack:
        source = stack.enter_context(_opened(source_url, "database.url", must_exist=True))
        version = _check_source(source, source_url)
        target = stack.enter_context(_opened(target_url, "--to"))
        _prepare_target(target, target_url)
        with source.atomic():
            if isinstance(source, PostgresqlDatabase):  # one snapshot for every table
                source.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            with target.atomic():
                for model in TABLES:
                    _copy_table(model, source, target, batch, progress, target_url)
            held = [_count(source, model) for model in TABLES]  # in the source's snapshot
        _reset_counters(target)
        counts = [Count(model._meta.table_name, n, _count(target, model))
                  for model, n in zip(TABLES, held, strict=True)]  # fmt: skip
    wrong = [c for c in counts if c.source != c.target]
    if wrong:
        listed = ", ".join(f"{c.table} {c.source} → {c.target}" for c in wrong)
        raise CopyError(
            f"{redact(target_url)}: row counts differ after the copy ({listed}); empty the "
            "target's tables and copy again with the daemon stopped"
        )
    return Copied(version, counts, time.perf_counter() - started)


def _same_database(a: str, b: str) -> bool:
    paths = backup.sqlite_path(a), backup.sqlite_path(b)
    if paths[0] is None or paths[1] is None:
        return paths == (None, None) and _server_and_name(a) == _server_and_name(b)
    return paths[0].resolve() == paths[1].resolve()


def _server_and_name(url: str) -> tuple:
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    kind, port = ("pg", 5432) if scheme.startswith("postgres") else ("mysql", 3306)
    return kind, parts.hostname or "127.0.0.1", parts.port or port, unquote(parts.path)


@contextmanager
def _opened(url: str, name: str, *, must_exist: bool = False) -> Iterator[Database]:
    """The database at `url` (not bound to the models), connected; an SQLite file under
    the exclusive lock of `db restore`, so no daemon runs on it meanwhile. A failure to
    connect is one line without the password."""
    try:
        db = make_database(url)
    except ConfigError as exc:  # its message names database.url
        raise CopyError(f"{name}: {str(exc).removeprefix('database.url: ')}") from None
    path = backup.sqlite_path(url)
    with ExitStack() as stack:
        if path is not None:
            if must_exist and not path.is_file():
                raise CopyError(f"{path}: no database there ({name})")
            path.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(backup.hold_exclusive(path, "copy"))
        try:
            db.connect()
        except DatabaseError as exc:
            raise CopyError(f"{redact(url)}: cannot connect: {scrub(exc, url)}") from None
        stack.callback(db.close)
        yield db


def scrub(exc: Exception, url: str) -> str:
    """The first line of a driver's error, without the URL's password."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    password = urlsplit(url).password
    for secret in (password, unquote(password or "")):
        if secret:
            text = text.replace(secret, "***")
    return text


def _check_source(db: Database, url: str) -> int:
    with db.bind_ctx(m.ALL_MODELS):
        migrations.refuse_shared(db)
        version = migrations.current_version(db)
        if version == 0:
            raise CopyError(f"{redact(url)}: not a moodle-offload database (no schema recorded)")
        if version > migrations.LATEST:
            raise CopyError(
                f"{redact(url)}: schema version {version} is newer than this release's "
                f"({migrations.LATEST}): copy it with the release that made it; nothing changed"
            )
        if version < migrations.LATEST or migrations.unrecorded_steps(db):
            raise CopyError(
                f"{redact(url)}: schema at version {version}, this release's is "
                f"{migrations.LATEST}: run `moodle-offload db upgrade` first; nothing changed"
            )
    return version


def _prepare_target(db: Database, url: str) -> None:
    """Refuse a target holding rows of ours; else give it today's schema."""
    with db.bind_ctx(m.ALL_MODELS):
        migrations.refuse_shared(db)
        version = migrations.current_version(db)
        if version > migrations.LATEST:
            raise CopyError(
                f"{redact(url)}: schema version {version} is newer than this release's "
                f"({migrations.LATEST}); give an empty database; nothing changed"
            )
        present = set(migrations.tables_named_like_ours(db))
        held = [(model._meta.table_name, _count(db, model)) for model in TABLES
                if model._meta.table_name in present]  # fmt: skip
        held = [(table, n) for table, n in held if n]
        if held:
            listed = ", ".join(f"{table} {n}" for table, n in held)
            raise CopyError(
                f"{redact(url)} already holds moodle-offload data ({listed} rows): give an "
                "empty database (or drop its tables); nothing changed"
            )
        migrations.upgrade(db)


def _copy_table(model, source, target, batch, progress, url) -> None:
    insert = _inserter(target, model)
    convert = _converters(model)
    done = 0
    for rows in _pages(model, source, batch):
        rows = [tuple(v if c is None or v is None else c(v) for c, v in zip(convert, row,
                                                                            strict=True))
                for row in rows]  # fmt: skip
        try:
            insert(rows)
        except DatabaseError as exc:
            raise CopyError(
                f"{redact(url)}: table {model._meta.table_name}: {scrub(exc, url)}; nothing "
                "was copied (the target holds the empty schema)"
            ) from None
        done += len(rows)
        if progress is not None:
            progress(model._meta.table_name, done)


def _converters(model) -> list[Callable | None]:
    """Per column, what turns the source driver's value into the target's: booleans (SQLite
    keeps 0/1) and times (SQLite keeps text) through the field; text, numbers and JSON text
    go as they are (no JSON parsed and written again)."""

    def through(field):
        return lambda v: field.db_value(field.python_value(v))

    return [through(f) if isinstance(f, BooleanField | DateTimeField) else None
            for f in model._meta.sorted_fields]  # fmt: skip


def _inserter(db: Database, model) -> Callable[[list[tuple]], None]:
    """Rows → one round trip per page (peewee's insert_many spends 4/5 of a copy building
    the SQL): psycopg2's execute_values, or the driver's executemany (which PyMySQL turns
    into multi-row INSERTs, and sqlite3 runs in C)."""
    q = db.quote
    columns = ", ".join(f"{q[0]}{f.column_name}{q[1]}" for f in model._meta.sorted_fields)
    head = f"INSERT INTO {q[0]}{model._meta.table_name}{q[1]} ({columns}) VALUES "
    one = "(" + ", ".join([db.param] * len(model._meta.sorted_fields)) + ")"

    def insert(rows: list[tuple]) -> None:
        with __exception_wrapper__:  # driver errors as peewee's DatabaseError
            cursor = db.cursor()
            if isinstance(db, PostgresqlDatabase):
                from psycopg2.extras import execute_values

                execute_values(cursor, head + "%s", rows, page_size=1000)
            else:
                cursor.executemany(head + one, rows)

    return insert


def _pages(model, db: Database, batch: int) -> Iterator[list[tuple]]:
    """The table's rows (as the driver gives them) in primary-key order, `batch` at a
    time: a keyset page never reads again the rows before it."""
    fields = model._meta.sorted_fields
    keys = model._meta.get_primary_keys()
    names = [f.name for f in fields]  # (a field's == makes an expression: no .index)
    at = [names.index(k.name) for k in keys]
    query = model.select(*fields).order_by(*keys).limit(batch)
    last = None
    while True:
        page = query
        if last is not None:
            page = query.where(keys[0] > last[0] if len(keys) == 1 else Tuple(*keys) > Tuple(*last))
        rows = db.execute(page).fetchall()
        if not rows:
            return
        yield rows
        if len(rows) < batch:
            return
        last = [rows[-1][i] for i in at]


def _count(db: Database, model) -> int:
    return model.select(fn.COUNT(SQL("*"))).scalar(db)


def _reset_counters(db: Database) -> None:
    """New rows on the target get ids past the copied ones."""
    for model in TABLES:
        pk = model._meta.primary_key
        if not isinstance(pk, AutoField):
            continue
        table, column = model._meta.table_name, pk.column_name
        top = model.select(fn.MAX(pk)).scalar(db) or 0
        if isinstance(db, PostgresqlDatabase):
            db.execute_sql(
                "SELECT setval(pg_get_serial_sequence(%s, %s), %s, false)", (table, column, top + 1)
            )
        elif isinstance(db, MySQLDatabase):
            db.execute_sql(f"ALTER TABLE `{table}` AUTO_INCREMENT = {int(top) + 1}")
        # SQLite: a rowid key takes MAX(id) + 1 by itself
