"""Erasure: `purge-user` (CLI and API) across the ledger, local PDFs and moto's S3, and
retention of old jobs, on every backend."""

import time
import uuid
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from sidecar import certificates, erasures, jobs, ledgerview, privacy, suppression, unsubscribe
from sidecar.cli import main
from sidecar.config import Config
from sidecar.db import store
from sidecar.db.models import ALL_MODELS, Batch, Certificate, Job, Recipient
from sidecar.errors import Conflict
from sidecar.runtime import Runtime
from sidecar.status import JobStatus
from sidecar.status import RecipientStatus as R
from tests.sidecar.api_helpers import serve_api

REGION = "eu-west-1"
TARGET = 3
ADDRESS = "purge.me.3@example.com"


@pytest.fixture
def bucket(moto):
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto)
    name = f"certs-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    yield s3, name
    s3.close()


def config_for(db_url, tmp_path, moto, name) -> Config:
    return Config.model_validate({
        "database": {"url": db_url},
        "server": {"public_url": "https://sidecar.example.org"},
        "security": {"callback_secrets": ["privacy-test"]},
        "providers": {
            "aws": {"region": REGION, "sqs_queue_url": f"{moto}/123456789012/none",
                    "s3_bucket": name, "ses_from": "noreply@example.org",
                    "endpoint_url": moto},
            "local": {"certificate_dir": str(tmp_path / "certs"),
                      "maildir": str(tmp_path / "mail")},
        },
    })  # fmt: skip


def address(u: int) -> str:
    return ADDRESS if u == TARGET else f"learner{u}@example.com"


def make_job(clock, users=range(1, 6), **spec) -> str:
    people = [jobs.RecipientIn(u, address(u), f"First{u}", f"Last{u}") for u in users]
    fields = dict(type="certificate", template_id="completion", source="test", route="local",
                  route_reason="test", actions=jobs.Actions(email=True, certificate=True),
                  courseid=101, template_data={})  # fmt: skip
    fields.update(spec)
    return jobs.create_job(jobs.JobSpec(**fields), people, batch_size=50, now=clock()).job_id


def finish(job_id: str, clock, *, fail=(TARGET,), key_of=None) -> None:
    """Every recipient sent (with certificate key), but `fail`ed ones, with the address in
    the error, as a bounce report says it."""
    batch = Batch.get(Batch.job == job_id)
    users = [r.userid for r in Recipient.select().where(Recipient.job == job_id)]
    ups = [
        store.Update(u, R.FAILED, error=f"550 5.1.1 <{address(u)}>: mailbox unknown",
                     attempts=9)
        if u in fail else
        store.Update(u, R.SENT, external_id=f"ses-{u}",
                     certificate_key=(key_of or (lambda u: None))(u))
        for u in users
    ]  # fmt: skip
    with store.atomic():
        Recipient.update(status=R.QUEUED).where(Recipient.job == job_id).execute()
        store.apply_updates(job_id, batch.id, ups, clock(), max_attempts=3)


def ledger_text(db) -> str:
    """Every row of every table, as text."""
    out = []
    for model in ALL_MODELS:
        for row in model.select().dicts():
            out.append(repr(row))
    return "\n".join(out)


def counts(job_id):
    job = Job.get_by_id(job_id)
    return job.total, job.status, store.recipient_counts([job_id])[job_id]


@pytest.fixture
def world(db, db_url, tmp_path, clock, moto, bucket):
    """Two finished jobs with user 3 in both: certificates in S3 (one job) and locally (the
    other), the address on the suppression list, an unsubscribe and audit lines naming it."""
    s3, name = bucket
    config = config_for(db_url, tmp_path, moto, name)
    rt = Runtime(config, clock=clock)
    cloud = make_job(clock, route="aws")
    local = make_job(clock, users=range(2, 5))
    for job_id, storage in ((cloud, "s3"), (local, "local")):
        issued = certificates.reserve_many(job_id, [2, 3, 4], 101, storage, f"certs/{job_id}/",
                                           clock())  # fmt: skip
        for uid, cert in issued.items():
            if storage == "s3":
                s3.put_object(Bucket=name, Key=cert.key, Body=b"%PDF " + address(uid).encode())
            else:
                certificates.write_file(config.providers.local.certificate_dir, cert.key,
                                        b"%PDF " + address(uid).encode())  # fmt: skip
        finish(job_id, clock, key_of=lambda u, j=job_id: f"certs/{j}/{u}.pdf")
    with store.atomic():
        suppression.suppress(ADDRESS, f"bounce: {ADDRESS} unknown", "ses_bounce", clock(),
                             job_id=cloud, userid=TARGET)  # fmt: skip
        suppression.suppress("learner4@example.com", "complaint", "ses_complaint", clock())
        store.audit("bounce_seen", clock(), cloud, email=ADDRESS, userid=TARGET)
    unsubscribe.opt_out(TARGET, "reminders", "page", clock())
    yield {"rt": rt, "config": config, "s3": s3, "bucket": name, "jobs": (cloud, local),
           "certs": Path(config.providers.local.certificate_dir)}  # fmt: skip
    rt.close()


def bucket_text(s3, name) -> str:
    out = []
    for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
        out.append(obj["Key"])
        out.append(s3.get_object(Bucket=name, Key=obj["Key"])["Body"].read().decode())
    return "\n".join(out)


def test_purge_user_leaves_no_trace_and_keeps_every_job_total(world, db, clock):
    rt, cloud, local = world["rt"], *world["jobs"]
    before = {j: counts(j) for j in (cloud, local)}
    assert ADDRESS in ledger_text(db) and ADDRESS in bucket_text(world["s3"], world["bucket"])

    report = privacy.purge(world["config"], rt, TARGET, include_suppression=False)

    assert report.problems == []
    assert report.recipients == 2 and report.jobs == 2
    assert report.certificates == {"s3": 1, "local": 1} and report.certificate_records == 2
    assert report.suppressed_hashed == 1 and report.audit_lines == 1
    assert {j: counts(j) for j in (cloud, local)} == before  # totals and statuses kept
    assert ADDRESS not in ledger_text(db).lower()
    assert "purge.me" not in bucket_text(world["s3"], world["bucket"])
    assert "learner2@example.com" in bucket_text(world["s3"], world["bucket"])  # others stay
    files = sorted(p.name for p in world["certs"].rglob("*.pdf"))
    assert files == ["2.pdf", "4.pdf"]
    assert not Certificate.select().where(Certificate.userid == TARGET).exists()
    assert not Recipient.select().where(Recipient.userid == TARGET).exists()
    # still suppressed, by hash, and still unsubscribed
    assert suppression.suppressed_among([ADDRESS.upper()]) == {
        ADDRESS.upper(): f"bounce: {privacy.ERASED} unknown"
    }
    assert unsubscribe.opted_out([TARGET], "reminders") == {TARGET}
    # the other learners are untouched
    other = Recipient.get(Recipient.job == cloud, Recipient.userid == 4)
    assert (other.email, other.firstname) == ("learner4@example.com", "First4")

    again = privacy.purge(world["config"], rt, TARGET, include_suppression=False)
    assert again.is_empty and again.lines() == [f"user {TARGET}: nothing left to delete"]

    full = privacy.purge(world["config"], rt, TARGET, include_suppression=True)
    assert (full.suppressed_deleted, full.opt_outs) == (1, 1)
    assert suppression.suppressed_among([ADDRESS]) == {}
    assert unsubscribe.opted_out([TARGET], "reminders") == set()
    assert suppression.suppressed_among(["learner4@example.com"])  # others stay
    assert privacy.purge(world["config"], rt, TARGET, include_suppression=True).is_empty


def test_purged_sqlite_file_holds_no_byte_of_the_address(world, db, db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("the database file is SQLite's")
    path = Path(db_url.removeprefix("sqlite:///"))
    privacy.purge(world["config"], world["rt"], TARGET, include_suppression=False)
    # no VACUUM: purge zeroes freed space (secure_delete) and empties the WAL itself
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert b"purge.me" not in raw
    assert b"learner4@example.com" in raw  # the search does see addresses that are kept


def test_purge_user_cli_asks_refuses_without_a_terminal_and_prints_what_it_did(
    world, tmp_path, db_url, moto
):
    c = world["config"]
    toml = tmp_path / "config.toml"
    toml.write_text(
        f'[database]\nurl = "{db_url}"\n[server]\npublic_url = "https://sidecar.example.org"\n'
        f'[security]\ncallback_secrets = ["privacy-test"]\n'
        f'[providers.aws]\nregion = "{REGION}"\nsqs_queue_url = "{moto}/123456789012/none"\n'
        f's3_bucket = "{world["bucket"]}"\nses_from = "noreply@example.org"\n'
        f'endpoint_url = "{moto}"\n'
        f'[providers.local]\ncertificate_dir = "{c.providers.local.certificate_dir}"\n'
    )
    runner = CliRunner()
    refused = runner.invoke(main, ["-c", str(toml), "purge-user", str(TARGET)])
    assert refused.exit_code == 1 and "pass --yes" in refused.output
    assert Recipient.select().where(Recipient.userid == TARGET).count() == 2  # nothing done

    done = runner.invoke(main, ["-c", str(toml), "purge-user", str(TARGET), "--yes"])
    assert done.exit_code == 0, done.output
    assert "2 recipient rows in 2 jobs erased" in done.output
    assert "1 PDFs deleted from S3" in done.output and "1 PDFs deleted locally" in done.output
    assert "kept only as a SHA-256 hash" in done.output
    second = runner.invoke(main, ["-c", str(toml), "purge-user", str(TARGET), "--yes"])
    assert second.output.strip() == f"user {TARGET}: nothing left to delete"
    show = runner.invoke(main, ["-c", str(toml), "jobs", "show", world["jobs"][0]])
    assert "(purged) permanently_failed" in show.output and ADDRESS not in show.output


def test_purge_user_api_for_site_wide_writers_only(world, db, clock, serve_app):
    from tests.sidecar.test_dashboard_signin import make_config

    dash = make_config()
    config = world["config"].model_copy(update={"dashboard": dash.dashboard,
                                                "security": dash.security})  # fmt: skip
    api = serve_api(serve_app, clock, config=config, runtime=world["rt"])
    company = api.token("company", company=7).post(f"/users/{TARGET}/purge")
    reader = api.token("reader", read_only=True).post(f"/users/{TARGET}/purge")
    assert (company.status_code, reader.status_code) == (403, 403)
    assert Recipient.select().where(Recipient.userid == TARGET).count() == 2

    resp = api.token("moodle-privacy").post(f"/users/{TARGET}/purge")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["recipients"] == 2 and body["certificate_files"] == {"local": 1, "s3": 1}
    assert body["nothing_left"] is False
    assert ADDRESS not in ledger_text(db).lower()
    again = api.token("moodle-privacy-2").post(f"/users/{TARGET}/purge")
    assert again.json()["nothing_left"] is True
    from sidecar.db.models import AuditLog

    line = AuditLog.select().where(AuditLog.event == "user_purged").first()
    assert '"name": "moodle-privacy"' in line.detail and '"via": "api"' in line.detail


# --- retention -----------------------------------------------------------------------------


def big_job(clock, n: int) -> str:
    people = [jobs.RecipientIn(u, f"old{u}@example.com", f"Old{u}", f"Learner{u}")
              for u in range(1, n + 1)]  # fmt: skip
    spec = jobs.JobSpec(type="send_reminder", template_id="reminder", source="test",
                        route="local", route_reason="test", actions=jobs.Actions(email=True),
                        courseid=101, template_data={})  # fmt: skip
    job_id = jobs.create_job(spec, people, batch_size=5000, now=clock()).job_id
    failed = list(range(10, n + 1, 10))  # every tenth bounced
    with store.atomic():
        Recipient.update(status=R.SENT, timesent=clock()).where(Recipient.job == job_id).execute()
        for start in range(0, len(failed), 900):
            Recipient.update(status=R.PERMANENTLY_FAILED, last_error="550 mailbox unknown").where(
                Recipient.job == job_id, Recipient.userid.in_(failed[start : start + 900])
            ).execute()
        Job.update(status=JobStatus.PARTIAL_FAILURE, finished_at=clock()).where(
            Job.id == job_id).execute()  # fmt: skip
    return job_id


def test_retention_erases_a_50000_recipient_job_in_bounded_batches(db, clock, tmp_path):
    old = big_job(clock, 50_000)
    with store.atomic():  # one error carries the address, as a bounce report does
        Recipient.update(last_error="550 <old10@example.com>: no such user").where(
            Recipient.job == old, Recipient.userid == 10).execute()  # fmt: skip
    clock.advance(170 * 86400)
    recent = make_job(clock, users=[1, 2])
    finish(recent, clock, fail=())
    before = counts(old)
    clock.advance(20 * 86400)  # old finished 190 days ago, recent 20

    report = privacy.run_retention(recipient_days=180, certificate_days=None,
                                   certificate_dir=tmp_path, stores={}, now=clock(),
                                   perf=time.perf_counter)  # fmt: skip

    assert (report.jobs, report.recipients) == (1, 50_000)
    assert report.transactions >= 100  # 500 rows a transaction at most
    assert counts(old) == before
    assert not Recipient.select().where(Recipient.job == old, Recipient.email != "").exists()
    assert not Recipient.select().where(Recipient.job == old, Recipient.firstname != "").exists()
    error = Recipient.get(Recipient.job == old, Recipient.userid == 10).last_error
    assert error == f"550 <{privacy.ERASED}>: no such user"
    assert (
        Recipient.get(Recipient.job == recent, Recipient.userid == 1).email
        == "learner1@example.com"
    )
    job = Job.get_by_id(old)
    erased = erasures.read(job.erased_at, job.erased)
    assert erased["at"] == clock() and {"addresses", "names"} <= set(erased["what"])
    again = privacy.run_retention(recipient_days=180, certificate_days=None,
                                  certificate_dir=tmp_path, stores={}, now=clock(),
                                  perf=time.perf_counter)  # fmt: skip
    assert (again.jobs, again.recipients) == (0, 0)


def test_jobs_show_says_what_retention_erased(db, db_url, clock, tmp_path):
    old = big_job(clock, 20)
    clock.advance(200 * 86400)
    privacy.run_retention(recipient_days=180, certificate_days=None, certificate_dir=tmp_path,
                          stores={}, now=clock(), perf=lambda: 0.0)  # fmt: skip
    toml = tmp_path / "config.toml"
    toml.write_text(f'[database]\nurl = "{db_url}"\n')
    out = CliRunner().invoke(main, ["-c", str(toml), "jobs", "show", old])
    assert out.exit_code == 0, out.output
    assert "personal data erased" in out.output
    assert "addresses, names, variables and addresses in errors of its recipients" in out.output
    assert "(retention: finished more than 180 days ago); counts kept" in out.output
    assert "permanently_failed 2  sent 18" in out.output, out.output  # the counts stay
    detail = ledgerview.job_detail(ledgerview.EVERYTHING, old)  # the API's job
    assert detail["erased"]["at"].startswith("2026-06-06") and "names" in detail["erased"]["what"]
    assert detail["counts"] == {"permanently_failed": 2, "sent": 18}


def test_certificate_retention_deletes_old_pdfs_locally_and_in_s3(world, db, clock):
    s3, name = world["s3"], world["bucket"]
    clock.advance(40 * 86400)
    cloud, local = world["jobs"]
    fresh = certificates.reserve(local, 9, 101, "local", clock())
    certificates.write_file(world["certs"], fresh.key, b"%PDF new")
    report = privacy.run_retention(
        recipient_days=365, certificate_days=30, certificate_dir=world["certs"],
        stores={"s3": lambda: world["rt"].aws.certificates}, now=clock(), perf=lambda: 0.0,
    )  # fmt: skip
    assert report.certificates == 6 and report.problems == []
    assert s3.list_objects_v2(Bucket=name).get("KeyCount", 0) == 0
    assert sorted(p.name for p in world["certs"].rglob("*.pdf")) == ["9.pdf"]
    kept = Certificate.get(Certificate.code == fresh.code)
    assert kept.storage == "local"
    erased = Certificate.select().where(Certificate.storage == privacy.ERASED_STORAGE).count()
    assert erased == 6  # the records stay: /verify still answers for them
    assert report.jobs == 0  # recipients are kept 365 days


def test_purge_cancels_what_was_not_sent_and_retry_skips_the_purged(world, db, clock):
    suppression.unsuppress(ADDRESS, clock())  # else the new job records them suppressed
    waiting = make_job(clock, users=[3, 6])  # not sent yet: both pending
    cloud, _ = world["jobs"]
    report = privacy.purge(world["config"], world["rt"], TARGET, include_suppression=False)
    assert report.cancelled == 1
    assert store.recipient_counts([waiting])[waiting] == {"cancelled": 1, "pending": 1}
    assert Job.get_by_id(waiting).total == 2
    # user 3 failed in `cloud`: a retry leaves the purged row alone (no address to send to)
    with pytest.raises(Conflict, match="no failed recipient"):
        jobs.retry_job(cloud, clock())


def test_retry_of_a_job_retention_erased_is_refused(db, clock, tmp_path):
    old = big_job(clock, 20)
    clock.advance(200 * 86400)
    privacy.run_retention(recipient_days=180, certificate_days=None, certificate_dir=tmp_path,
                          stores={}, now=clock(), perf=lambda: 0.0)  # fmt: skip
    with pytest.raises(Conflict, match="erased"):
        jobs.retry_job(old, clock())
    assert store.recipient_counts([old])[old] == {"permanently_failed": 2, "sent": 18}


def test_purge_deletes_a_pdf_stored_in_r2(db, clock, tmp_path, moto, bucket):
    from providers.cloudflare.r2 import R2Store

    s3, name = bucket  # moto speaks S3, as R2's API does
    job_id = make_job(clock, users=[TARGET, 4], route="cloudflare")
    issued = certificates.reserve_many(job_id, [TARGET, 4], 101, "r2", f"r2/{job_id}/", clock())
    for uid, cert in issued.items():
        s3.put_object(Bucket=name, Key=cert.key, Body=b"%PDF " + address(uid).encode())
    r2 = R2Store(name, moto, "test", "test")
    report = privacy.purge_user(TARGET, certificate_dir=tmp_path, stores={"r2": lambda: r2},
                                include_suppression=False, now=clock())  # fmt: skip
    r2.close()
    assert report.certificates == {"r2": 1} and report.problems == []
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=name)["Contents"]] == [issued[4].key]


def test_purge_keeps_the_record_of_a_pdf_it_cannot_delete_and_says_so(world, db, clock):
    stores = {}  # S3 not configured: the PDF in the bucket cannot be reached
    report = privacy.purge_user(TARGET, certificate_dir=world["certs"], stores=stores,
                                include_suppression=False, now=clock())  # fmt: skip
    assert len(report.problems) == 1 and "not configured" in report.problems[0]
    assert any(line.startswith("NOT DONE: certificate") for line in report.lines())
    assert Certificate.select().where(Certificate.userid == TARGET).count() == 1
    again = privacy.purge(world["config"], world["rt"], TARGET, include_suppression=False)
    assert again.certificates == {"s3": 1} and again.problems == []
    assert not Certificate.select().where(Certificate.userid == TARGET).exists()


def test_the_daemon_runs_retention_by_itself(db, db_url, clock, tmp_path):
    from sidecar.config import load
    from sidecar.daemon import Daemon
    from sidecar.runtime import utcnow

    old = big_job(clock, 30)
    with store.atomic():
        Job.update(finished_at=utcnow() - timedelta(days=40)).where(Job.id == old).execute()
    path = tmp_path / "offload.toml"
    path.write_text(f'[database]\nurl = "{db_url}"\n[server]\nlisten = "127.0.0.1:0"\n'
                    f'[providers.local]\nmaildir = "{tmp_path}/mail"\n'
                    "[retention]\nrecipient_days = 30\n")  # fmt: skip
    daemon = Daemon(load(path), path, retention_delay=0.1)
    daemon.start(schedules=False)
    try:
        deadline = time.monotonic() + 30
        while Job.get_by_id(old).erased_at is None and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the ledger for the daemon's work, not timing it
    finally:
        daemon.shutdown()
    assert Job.get_by_id(old).erased_at is not None
    assert not Recipient.select().where(Recipient.job == old, Recipient.email != "").exists()
    assert store.recipient_counts([old])[old] == {"permanently_failed": 3, "sent": 27}
