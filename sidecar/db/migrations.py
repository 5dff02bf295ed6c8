"""Numbered schema steps, applied in order by `db upgrade` and at daemon start.

Rule for later steps: a step adds what it needs and tolerates a database created by
step 1 from today's models (use `_add_column` which skips an existing column), so a
fresh database and an upgraded one end in the same shape. Steps never drop or rename a
column: a table with a column today's model lacks is not ours (`tables_of_others`).
"""

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from peewee import Database
from playhouse.migrate import SchemaMigrator, migrate

from sidecar.db import models as m
from sidecar.errors import ConfigError, SchemaTooNew

log = logging.getLogger(__name__)


def _step_1_initial(db: Database) -> None:
    db.create_tables(
        [
            m.Company,
            m.Job,
            m.Batch,
            m.Recipient,
            m.SendKey,
            m.SeenCallback,
            m.Certificate,
            m.AuditLog,
        ],
        safe=True,
    )


def _step_2_schedules(db: Database) -> None:
    db.create_tables([m.ScheduleRecord, m.ScheduleRun, m.SyncState], safe=True)


def _step_3_cloud(db: Database) -> None:
    _add_column(db, "batch", "message_ids", m.Batch.message_ids)
    _add_column(db, "batch", "error", m.Batch.error)
    db.create_tables([m.SuppressedAddress], safe=True)


def _step_4_bounces(db: Database) -> None:
    _add_column(db, "recipient", "bounced_at", m.Recipient.bounced_at)


def _step_5_opt_outs(db: Database) -> None:
    db.create_tables([m.OptOut], safe=True)


def _step_6_dashboard_access(db: Database) -> None:
    db.create_tables([m.AdminAccount, m.ApiToken, m.WebSession, m.LoginFailure], safe=True)


def _step_7_activity_index(db: Database) -> None:
    _add_indexes(db, m.Recipient)


def _step_8_job_page_index(db: Database) -> None:
    _add_indexes(db, m.Recipient)


def _step_9_revoke_reason(db: Database) -> None:
    _add_column(db, "certificate", "revoked_reason", m.Certificate.revoked_reason)


def _step_10_record_state(db: Database) -> None:
    for name in ("record_state", "record_at", "record_error"):
        _add_column(db, "certificate", name, getattr(m.Certificate, name))
    _add_indexes(db, m.Certificate)


def _step_11_retention(db: Database) -> None:
    _add_column(db, "job", "erased_at", m.Job.erased_at)
    _add_column(db, "job", "erased", m.Job.erased)


def _add_indexes(db: Database, model) -> None:
    """Create the model's declared indexes that the table lacks (by name: MariaDB has no
    CREATE INDEX IF NOT EXISTS in peewee's dialect)."""
    present = {i.name for i in db.get_indexes(model._meta.table_name)}
    for index in model._meta.fields_to_index():
        if index._name not in present:
            db.execute(model._schema._create_index(index, safe=False))


def _add_column(db: Database, table: str, name: str, field) -> None:
    if name not in {c.name for c in db.get_columns(table)}:
        migrate(SchemaMigrator.from_database(db).add_column(table, name, field))


STEPS: list[tuple[int, str, Callable[[Database], None]]] = [
    (1, "initial ledger", _step_1_initial),
    (2, "schedules, their runs and sync state", _step_2_schedules),
    (3, "cloud batches (message ids, errors) and the suppression list", _step_3_cloud),
    (4, "bounces that a late sent report cannot undo", _step_4_bounces),
    (5, "unsubscribes by learner and kind of mail", _step_5_opt_outs),
    (6, "dashboard accounts, API tokens, sessions and sign-in failures", _step_6_dashboard_access),
    (7, "an index for the dashboard's mail per hour", _step_7_activity_index),
    (
        8,
        "an index for a job's counts and progress (the dashboard's job page)",
        _step_8_job_page_index,
    ),  # fmt: skip
    (9, "why a certificate was revoked", _step_9_revoke_reason),
    (10, "certificates written back to Moodle", _step_10_record_state),
    (11, "what retention erased from a job", _step_11_retention),
]

LATEST = STEPS[-1][0]


def _not_ours(db: Database, model) -> list[str]:
    """The columns of `model`'s table that the model never had (sorted)."""
    ours = {f.column_name for f in model._meta.sorted_fields}
    return sorted({c.name for c in db.get_columns(model._meta.table_name)} - ours)


def applied_versions(db: Database) -> set[int]:
    table = m.SchemaVersion._meta.table_name
    if not db.table_exists(table) or _not_ours(db, m.SchemaVersion):
        return set()  # none yet, or another application's table of that name
    return {row.version for row in m.SchemaVersion.select(m.SchemaVersion.version)}


def tables_named_like_ours(db: Database) -> list[str]:
    """Tables of this database that have the name of one of ours (sorted)."""
    names = {model._meta.table_name for model in m.ALL_MODELS}
    return sorted(names & set(db.get_tables()))


def tables_of_others(db: Database) -> dict[str, list[str]]:
    """{table: its columns we never had} for the tables named like ours that cannot be
    ours, in a database where no step of ours is recorded (where one is, they are ours)."""
    if applied_versions(db):
        return {}
    present = set(tables_named_like_ours(db))
    found = {model._meta.table_name: _not_ours(db, model) for model in m.ALL_MODELS
             if model._meta.table_name in present}  # fmt: skip
    return {table: extra for table, extra in found.items() if extra}


def refuse_shared(db: Database) -> None:
    """Raise ConfigError naming them when tables of another application have our names:
    an upgrade would mix the two schemas (or stop half way on the first index)."""
    others = tables_of_others(db)
    if others:
        listed = "; ".join(f"{t} (columns {', '.join(c)})" for t, c in others.items())
        raise ConfigError(
            f"the database holds tables of another application under names moodle-offload "
            f"uses: {listed}; give moodle-offload a database of its own (database.url)"
        )


def refuse_newer(db: Database) -> None:
    """Raise SchemaTooNew when a newer release upgraded this database: this code would run
    on a schema it does not know (its steps recorded, so `upgrade` would apply nothing)."""
    version = current_version(db)
    if version > LATEST:
        raise SchemaTooNew(
            f"the database's schema is at version {version}, newer than this release of "
            f"moodle-offload knows ({LATEST}): a newer release upgraded it; install that "
            "release (upgrade moodle-offload) or restore the backup taken before; nothing changed"
        )


def upgrade(db: Database) -> list[int]:
    """Apply every missing step; returns the versions applied (empty when up to date).

    Raises ConfigError, creating nothing, when another application's tables have our names,
    and SchemaTooNew, changing nothing, when a newer release upgraded the schema.
    """
    refuse_shared(db)
    refuse_newer(db)
    db.create_tables([m.SchemaVersion], safe=True)
    done = applied_versions(db)
    applied = []
    for version, name, step in STEPS:
        if version in done:
            continue
        with db.atomic():
            step(db)
            m.SchemaVersion.insert(
                version=version, name=name, applied_at=datetime.now(UTC).replace(tzinfo=None)
            ).on_conflict_ignore().execute()
        log.info("database: applied migration %d (%s)", version, name)
        applied.append(version)
    return applied


def pending(db: Database) -> list[tuple[int, str]]:
    """(version, what it does) of each step `upgrade` would apply, changing nothing.
    Raises ConfigError when another application's tables have our names, SchemaTooNew
    when a newer release upgraded the schema."""
    refuse_shared(db)
    refuse_newer(db)
    done = applied_versions(db)
    return [(version, name) for version, name, _ in STEPS if version not in done]


def current_version(db: Database) -> int:
    done = applied_versions(db)
    return max(done) if done else 0


def is_empty(db: Database) -> bool:
    """No table of ours and no step recorded: a database `upgrade` has not created yet
    (tables of other applications in the same database do not count, unless they have
    one of our names)."""
    named = set(tables_named_like_ours(db)) - {m.SchemaVersion._meta.table_name}
    return not named and not applied_versions(db) and not tables_of_others(db)


def unrecorded_steps(db: Database) -> list[int]:
    """Steps missing below the newest one recorded, or every step when tables of ours exist
    but none is recorded: an upgrade that stopped half way (`upgrade` finishes it)."""
    done = applied_versions(db)
    if not done:
        return [] if is_empty(db) else [v for v, _, _ in STEPS]
    return [v for v, _, _ in STEPS if v < max(done) and v not in done]
