"""Every earlier release's ledger, with data in it, upgraded by today's code on SQLite,
PostgreSQL and MariaDB: nothing lost, readable and writable through today's code, the same
schema as a fresh install, and a second upgrade changes nothing.

The old schemas are the statements each release sent (tests/sidecar/schemas/, frozen from
git history by scripts/schema_history.py), not today's steps replayed: step 1 creates
today's tables, which no old release had.
"""

from datetime import timedelta

import pytest
from click.testing import CliRunner

from schedules.model import Schedule
from sidecar import access, jobs, suppression, unsubscribe
from sidecar.cli import main
from sidecar.db import migrations, store
from sidecar.db.models import Batch, Certificate, ScheduleRecord
from sidecar.schedulelist import run_counts, run_of_job
from tests.e2e.conftest import write_config

from . import schema_history as old

VERSIONS = old.released_versions()


def test_every_earlier_release_is_frozen():
    assert VERSIONS == list(range(1, migrations.LATEST)), (
        "a migration step was added: run scripts/schema_history.py to freeze the release before it"
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_the_ledger_of_an_earlier_release_upgrades_to_todays_schema_keeping_its_data(
    db, db_url, version, tmp_path
):
    fresh = old.schema(db)  # the fixture's ledger: a fresh install of today's release
    old.create(db, version)
    old.fill(db)
    assert migrations.current_version(db) == version
    assert migrations.unrecorded_steps(db) == []
    assert migrations.pending(db) == [(v, n) for v, n, _ in migrations.STEPS if v > version]

    assert migrations.upgrade(db) == list(range(version + 1, migrations.LATEST + 1))
    assert old.schema(db) == fresh
    assert migrations.upgrade(db) == [] and old.schema(db) == fresh

    # `jobs list`: both jobs, with their counts by status
    assert {j.id for j in store.list_jobs()} == {old.JOB_CSV, old.JOB_CERT}
    assert store.recipient_counts([old.JOB_CSV, old.JOB_CERT]) == {
        old.JOB_CSV: {"sent": 2, "permanently_failed": 1, "suppressed": 1, "failed": 1},
        old.JOB_CERT: {"queued": 1, "pending": 1, "sent": 1},
    }
    # `jobs show`: the job and every recipient, address, status, attempts and last error
    job = store.get_job(old.JOB_CSV)
    assert (job.status, job.route, job.total, job.actions) == (
        "partial_failure",
        "local",
        5,
        {"email": True, "certificate": False},
    )
    assert job.template_data == {"course": "FS101"} and job.erased_at is None
    got = [
        (r.userid, r.email, r.status, r.attempts, r.last_error, r.bounced_at)
        for r in jobs.recipients_of(old.JOB_CSV)
    ]
    bounced_kept = version >= 4  # release 4 added bounced_at
    assert got == [row[:5] + (row[5] if bounced_kept else None,) for row in old.CSV_RECIPIENTS]
    assert all(r.vars == {"grade": "A"} for r in jobs.recipients_of(old.JOB_CERT))
    shown = CliRunner().invoke(
        main, ["-c", str(write_config(tmp_path, db_url=db_url)), "jobs", "show", old.JOB_CSV]
    )
    assert shown.exit_code == 0, shown.output
    assert f"job {old.JOB_CSV}  send_csv  partial_failure" in shown.output
    assert "failed 1  permanently_failed 1  sent 2  suppressed 1" in shown.output
    assert " 3 permanently_failed attempts 1  550 5.1.1 mailbox unavailable\n" in shown.output
    assert " 5 failed             attempts 3  SMTP timeout\n" in shown.output

    batch = Batch.get_by_id(old.BATCH_CERT)
    assert batch.message_ids == (["msg-1"] if version >= 3 else None)
    revoked, recorded = Certificate.get_by_id("CERT99"), Certificate.get_by_id("CERT13")
    assert revoked.revoked_at is not None
    assert revoked.revoked_reason == ("issued by mistake" if version >= 9 else None)
    assert recorded.record_state == ("recorded" if version >= 10 else None)

    cert_job = store.get_job(old.JOB_CERT)
    if version >= 2:  # schedules: the record, its run and the job it made
        (record,) = ScheduleRecord.select()
        assert Schedule.from_remote(record.data, record.source).name == "Daily reminder"
        run = run_of_job(cert_job)
        assert run.status == "done" and run_counts(run) == "3 recipients"  # before learners
    if version >= 3:
        assert suppression.suppressed_among(["bounced@example.org"]) == {
            "bounced@example.org": "550 5.1.1 mailbox unavailable"
        }
    if version >= 5:
        assert unsubscribe.opted_out([1, 2], "custom") == {2}
    if version >= 6:
        assert access.verify_account("admin", old.PASSWORD)
        principal = access.token_principal(old.TOKEN, old.T0 + timedelta(days=1))
        assert principal.companies == (3,) and principal.read_only

    # today's code writes to it: a new job (the old suppression list and opt-outs apply)
    now = old.T0 + timedelta(days=1)
    created = jobs.create_job(
        jobs.JobSpec(type="send_csv", template_id="custom", source="csv"),
        [
            jobs.RecipientIn(1, "ana@example.org"),
            jobs.RecipientIn(2, "bob@example.org"),
            jobs.RecipientIn(3, "bounced@example.org"),
        ],
        batch_size=100,
        now=now,
    )
    assert created.suppressed == (version >= 3) + (version >= 5)
    assert created.pending == 3 - created.suppressed
    assert len(store.list_jobs()) == 3
    # and an old job goes on: `jobs retry` takes up the failed recipient again
    assert jobs.retry_job(old.JOB_CSV, now) >= 1
    assert jobs.recipients_of(old.JOB_CSV, ["failed"]) == []
