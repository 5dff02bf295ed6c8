"""The ledger as each earlier release left it: its schema (frozen SQL from git history,
tests/sidecar/schemas/, made by scripts/schema_history.py) and data of the kinds it held.

The data is written in plain SQL, column by column as that release had them, never through
today's models: a column a later step added is simply absent from an older ledger.
"""

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

from peewee import Database

from sidecar.db.models import ALL_MODELS

SCHEMAS = Path(__file__).with_name("schemas")

JOB_CSV = "0c5e4a7e-0000-4000-8000-00000000000a"  # a CSV mail, settled with failures
JOB_CERT = "0c5e4a7e-0000-4000-8000-00000000000b"  # a scheduled certificate job, under way
BATCH_CSV = "0c5e4a7e-0000-4000-8000-0000000000a1"
BATCH_CERT = "0c5e4a7e-0000-4000-8000-0000000000b1"
PASSWORD = "correct horse battery staple"
TOKEN = "mo_reports-token-of-an-older-release"
T0 = datetime(2026, 11, 30, 9, 0, 0)

#: (userid, email, status, attempts, last_error, bounced_at) of the CSV job's recipients
CSV_RECIPIENTS = [
    (1, "ana@example.org", "sent", 1, None, None),
    (2, "bob@example.org", "sent", 1, None, None),
    (3, "bounced@example.org", "permanently_failed", 1, "550 5.1.1 mailbox unavailable", T0),
    (4, "dora@example.org", "suppressed", 0, "on the suppression list: bounced", None),
    (5, "eve@example.org", "failed", 3, "SMTP timeout", None),
]
CERT_RECIPIENTS = [
    (11, "fay@example.org", "queued", 1, None, None),
    (12, "gil@example.org", "pending", 0, None, None),
    (13, "hal@example.org", "sent", 1, None, None),
]

#: the schedule row of release 2 onwards (schedules/model.py Schedule.as_row(), unchanged since)
SCHEDULE_DATA = {
    "id": 1,
    "name": "Daily reminder",
    "enabled": True,
    "companyid": 0,
    "courseid": 7,
    "frequency": "daily",
    "custom_interval": 0,
    "timeofday": 32400,
    "weekday": 1,
    "monthday": 1,
    "action_type": "email",
    "cloud_preference": "auto",
    "suppresstarget": 0,
    "suppress_course_completion": True,
    "audience": "enrolled",
    "inactive_days": 0,
    "template_id": "reminder_v1",
    "subject": "",
    "timemodified": 1764547200,
}
SCHEDULE_FINGERPRINT = "56951db11611a7c41e5b96a5f95dad6e7ebc8021463c3a85afa4bc8486e43667"
#: sidecar.passwords' scrypt hash of PASSWORD (the format of release 6 onwards)
PASSWORD_HASH = (
    "scrypt$32768$8$1$nvx8VSbSlHzh-ySiduxNhg$OcnI3etJcKnVKo-WUre26zqv7igBHPOV0S1g7DSns8I"
)


def dialect(db: Database) -> str:
    name = type(db).__name__
    return "postgres" if "Postgres" in name else "mariadb" if "MySQL" in name else "sqlite"


def released_versions() -> list[int]:
    """The schema versions of the earlier releases the frozen files hold (1, 2, ...)."""
    text = (SCHEMAS / "sqlite.sql").read_text()
    return sorted(
        {
            int(line.split()[4].rstrip(":"))
            for line in text.splitlines()
            if line.startswith("-- release of version")
        }
    )


def statements(kind: str, version: int) -> list[str]:
    """The statements the release at `version` sent to create its ledger, in order."""
    out, first, last = [], 0, -1
    for line in (SCHEMAS / f"{kind}.sql").read_text().splitlines():
        tag = re.fullmatch(r"-- versions (\d+)-(\d+)", line)
        if tag:
            first, last = int(tag[1]), int(tag[2])
        elif line and not line.startswith("--") and first <= version <= last:
            out.append(line.rstrip(";"))
    return out


def drop_ours(db: Database) -> None:
    """Drop every table of ours (today's names), whichever release made it."""
    db.drop_tables(list(ALL_MODELS), safe=True)


def create(db: Database, version: int) -> None:
    """The empty ledger exactly as the release at `version` created it."""
    drop_ours(db)
    for sql in statements(dialect(db), version):
        db.execute_sql(sql)


def schema(db: Database) -> dict[str, dict]:
    """{table: {"columns": {name: (type, null, primary key)}, "indexes": {name: (columns,
    unique)}}} of our tables: what a fresh install and an upgraded ledger must share."""
    ours = {model._meta.table_name for model in ALL_MODELS}
    out = {}
    for table in sorted(ours & set(db.get_tables())):
        columns = {c.name: (c.data_type, c.null, c.primary_key) for c in db.get_columns(table)}
        indexes = {i.name: (tuple(i.columns), i.unique) for i in db.get_indexes(table)}
        foreign = sorted(
            (f.column, f.dest_table, f.dest_column) for f in db.get_foreign_keys(table)
        )
        out[table] = {"columns": columns, "indexes": indexes, "foreign keys": foreign}
    return out


def _insert(db: Database, table: str, row: dict) -> None:
    """INSERT the columns of `row` that this ledger's table has (an older release's lacks
    the later ones)."""
    present = {c.name for c in db.get_columns(table)}
    row = {k: v for k, v in row.items() if k in present}
    q = "`" if dialect(db) == "mariadb" else '"'
    names = ", ".join(f"{q}{k}{q}" for k in row)
    marks = ", ".join([db.param] * len(row))
    db.execute_sql(f"INSERT INTO {q}{table}{q} ({names}) VALUES ({marks})", list(row.values()))


def _id_of(db: Database, table: str, where: str, *params) -> int:
    q = "`" if dialect(db) == "mariadb" else '"'
    sql = f"SELECT id FROM {q}{table}{q} WHERE {where.replace('?', db.param)}"
    return db.execute_sql(sql, list(params)).fetchone()[0]


def fill(db: Database) -> None:
    """Jobs, batches, recipients in several statuses, a certificate, callbacks, an audit line
    and, where the release had them, a schedule with a run, the suppression list, an opt-out,
    an account, a token and a session: what a ledger in use held."""
    tables = set(db.get_tables())
    later = T0.replace(hour=10)
    run_id = schedule_id = None
    if "schedule" in tables:
        _insert(
            db,
            "schedule",
            dict(
                source="moodle",
                remote_id=1,
                name="Daily reminder",
                enabled=True,
                data=_json(SCHEDULE_DATA),
                fingerprint=SCHEDULE_FINGERPRINT,
                timemodified=1764547200,
                first_seen_at=T0,
                synced_at=later,
            ),
        )
        schedule_id = _id_of(db, "schedule", "source = ? AND remote_id = ?", "moodle", 1)
        _insert(
            db,
            "schedule_run",
            dict(
                schedule_id=schedule_id,
                due_at=T0,
                status="done",
                manual=False,
                owner="host-a:4242",
                missed=0,
                claimed_at=T0,
                finished_at=later,
                recipients=3,
                counts='{"recipients":3,"suppressed":{"completed":2}}',
                route="aws",
                route_reason="3 recipients >= threshold 2",
            ),
        )
        run_id = _id_of(db, "schedule_run", "schedule_id = ? AND due_at = ?", schedule_id, T0)
        _insert(db, "sync_state", dict(source="moodle", ok_at=later, schedules=1, skipped=0))
    _insert(
        db,
        "company",
        dict(
            id=3,
            name="Northwind Training",
            enabled=True,
            provider="aws",
            threshold=2,
            updated_at=T0,
        ),
    )
    for job_id, kind, status, route, recipients, extra in (
        (
            JOB_CSV,
            "send_csv",
            "partial_failure",
            "local",
            CSV_RECIPIENTS,
            dict(source="csv", finished_at=later, template_id="custom"),
        ),
        (
            JOB_CERT,
            "send_certificate",
            "processing",
            "aws",
            CERT_RECIPIENTS,
            dict(
                source="schedule",
                schedule_id=schedule_id,
                run_id=run_id,
                courseid=7,
                template_id="completion",
                certificate_template_id="default",
                idempotency_key=f"schedule:{schedule_id}:{T0:%Y%m%dT%H%M}",
            ),
        ),
    ):
        _insert(
            db,
            "job",
            dict(
                id=job_id,
                type=kind,
                status=status,
                tenant_id=3,
                created_by=2,
                actions=f'{{"email":true,"certificate":{str(route == "aws").lower()}}}',
                sender="Academy <noreply@academy.example>",
                template_data='{"course":"FS101"}',
                route=route,
                route_reason=f"{len(recipients)} recipients, company 3",
                total=len(recipients),
                created_at=T0,
                updated_at=later,
                **extra,
            ),
        )
    _insert(
        db,
        "batch",
        dict(
            id=BATCH_CSV,
            job_id=JOB_CSV,
            index=0,
            status="done",
            route="local",
            size=5,
            attempts=1,
            submitted_at=T0,
            updated_at=later,
        ),
    )
    _insert(
        db,
        "batch",
        dict(
            id=BATCH_CERT,
            job_id=JOB_CERT,
            index=0,
            status="queued",
            route="aws",
            size=3,
            attempts=1,
            external_id="sqs-1",
            submitted_at=T0,
            message_ids='["msg-1"]',
            updated_at=later,
        ),
    )
    for job_id, batch_id, recipients in (
        (JOB_CSV, BATCH_CSV, CSV_RECIPIENTS),
        (JOB_CERT, BATCH_CERT, CERT_RECIPIENTS),
    ):
        for userid, email, status, attempts, error, bounced in recipients:
            _insert(
                db,
                "recipient",
                dict(
                    job_id=job_id,
                    batch_id=batch_id,
                    userid=userid,
                    email=email,
                    firstname=f"First{userid}",
                    lastname=f"Last{userid}",
                    vars='{"grade":"A"}',
                    status=status,
                    attempts=attempts,
                    last_error=error,
                    timesent=T0 if status == "sent" else None,
                    updated_at=later,
                    certificate_key=f"{JOB_CERT}/13.pdf" if userid == 13 else None,
                    bounced_at=bounced,
                ),
            )
    _insert(
        db,
        "send_key",
        dict(
            idempotency_key=f"schedule:{schedule_id}:{T0:%Y%m%dT%H%M}",
            userid=13,
            action="certificate",
            job_id=JOB_CERT,
        ),
    )
    _insert(
        db,
        "seen_callback",
        dict(
            callback_id="0c5e4a7e-0000-4000-8000-0000000000c1",
            job_id=JOB_CERT,
            batch_id=BATCH_CERT,
            accepted=1,
            ignored=0,
            received_at=later,
        ),
    )
    _insert(
        db,
        "certificate",
        dict(
            code="CERT13",
            job_id=JOB_CERT,
            userid=13,
            courseid=7,
            storage="s3",
            key=f"{JOB_CERT}/13.pdf",
            issued_at=T0,
            record_state="recorded",
            record_at=later,
        ),
    )
    _insert(
        db,
        "certificate",
        dict(
            code="CERT99",
            job_id=JOB_CSV,
            userid=1,
            courseid=7,
            storage="local",
            key=f"{JOB_CSV}/1.pdf",
            issued_at=T0,
            revoked_at=later,
            revoked_reason="issued by mistake",
        ),
    )
    _insert(
        db, "audit_log", dict(at=T0, event="job.created", job_id=JOB_CSV, detail="5 recipients")
    )
    if "suppressed_address" in tables:
        _insert(
            db,
            "suppressed_address",
            dict(
                email="bounced@example.org",
                reason="550 5.1.1 mailbox unavailable",
                source="ses_bounce",
                job_id=JOB_CSV,
                userid=3,
                created_at=T0,
            ),
        )
    if "opt_out" in tables:
        _insert(db, "opt_out", dict(userid=2, kind="custom", source="one-click", created_at=T0))
    if "admin_account" in tables:
        _insert(
            db,
            "admin_account",
            dict(name="admin", password_hash=PASSWORD_HASH, created_at=T0, updated_at=T0),
        )
        _insert(
            db,
            "api_token",
            dict(
                name="reports",
                company_id=3,
                read_only=True,
                token_hash=hashlib.sha256(TOKEN.encode()).hexdigest(),
                created_at=T0,
            ),
        )
        _insert(
            db,
            "web_session",
            dict(
                id_hash="a" * 64,
                name="admin",
                source="local",
                is_admin=True,
                companies="[]",
                read_only=False,
                csrf="c" * 64,
                address="127.0.0.1",
                created_at=T0,
                seen_at=later,
            ),
        )
        _insert(db, "login_failure", dict(at=later, address="127.0.0.1", username="admin"))


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"))
