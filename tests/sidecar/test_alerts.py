"""Mail to the admins: a stuck job's alert reaches a real SMTP server (aiosmtpd) once,
naming the job and the likely cause; the daily report's figures; bad `[alerts]` values."""

import threading
import time
from datetime import datetime, timedelta
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller

from sidecar import alerts, jobs
from sidecar.config import Config, load
from sidecar.daemon import Daemon
from sidecar.db.connect import open_database
from sidecar.db.models import Certificate, Job, OptOut, Recipient, SuppressedAddress
from sidecar.errors import ConfigError
from sidecar.status import RecipientStatus
from tests.motoserver import free_port

ADMINS = ["ops@example.org", "boss@example.org"]


class Sink:
    def __init__(self):
        self.messages = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append(
                (envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default))
            )
        return "250 OK"


@pytest.fixture
def sink():
    handler = Sink()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


def make_config(db_url: str, smtp_port: int, **alerts) -> Config:
    return Config.model_validate(
        {
            "database": {"url": db_url},
            "server": {"listen": f"127.0.0.1:{free_port()}",
                       "public_url": "https://offload.example.org"},
            "providers": {"local": {"smtp_host": "127.0.0.1", "smtp_port": smtp_port,
                                    "smtp_security": "none", "from": "noreply@example.org"}},
            "dashboard": {"stuck_after": "1h"},
            "alerts": {"admin_emails": ADMINS, **alerts},
        }
    )  # fmt: skip


def people(n):
    return [jobs.RecipientIn(i, f"user{i}@example.org", f"F{i}", f"L{i}") for i in range(1, n + 1)]


def stuck_job(route: str, now: datetime) -> str:
    """A job untouched for two hours on `route` (a cloud route this daemon does not run)."""
    spec = jobs.JobSpec(type="send_csv", template_id="custom", source="test", route=route)
    return jobs.create_job(spec, people(3), batch_size=10, now=now - timedelta(hours=2)).job_id


def wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_a_stuck_job_is_alerted_once_by_email_naming_it_and_its_cause(tmp_path, sink):
    config = make_config(f"sqlite:///{tmp_path}/offload.db", sink.port)
    daemon = Daemon(config, poll_interval=0.1, alerts_every=0.2)
    daemon.runtime.upgrade()
    with daemon.runtime.db.connection_context():
        job_id = stuck_job("aws", datetime.utcnow())
    daemon.start(schedules=False)
    try:
        assert wait_for(lambda: len(sink.messages) >= len(ADMINS))
        time.sleep(1.5)  # several more checks (every 0.2 s): still stuck, no second email
    finally:
        daemon.runtime.stop.set()
        daemon.http.stop()
    assert len(sink.messages) == len(ADMINS)
    assert sorted(r for rcpts, _ in sink.messages for r in rcpts) == sorted(ADMINS)
    msg = sink.messages[0][1]
    assert msg["Subject"] == f"Stuck job {job_id}: no progress for 2h"
    text = msg.get_body(("plain",)).get_content()
    assert "no batch was handed to aws: the daemon's cloud submission is paused" in text
    assert f"moodle-offload jobs show {job_id}" in text
    assert f"moodle-offload jobs retry {job_id}" in text
    assert f"https://offload.example.org/jobs/{job_id}" in text


def test_the_cause_follows_the_route_and_the_batches_state(db_url, db):
    now = datetime(2025, 11, 18, 12, 0)
    config = make_config(db_url, free_port())
    local = stuck_job("local", now)
    Recipient.update(last_error="smtp: 554 refused for user1@example.org").where(
        Recipient.job == local
    ).execute()
    queued = stuck_job("cloudflare", now)
    jobs.Batch.update(status="queued").where(jobs.Batch.job == queued).execute()
    pending = stuck_job("aws", now)

    alerted = alerts.alert_stuck(config, now)
    assert sorted(alerted) == sorted([local, queued, pending])
    assert alerts.alert_stuck(config, now + timedelta(minutes=5)) == []  # once per job

    def data(job_id):
        return Job.get(Job.idempotency_key == f"stuck_alert:{job_id}").template_data

    assert "SMTP server is refusing mail or cannot be reached" in data(local)["cause"]
    assert data(local)["last_error"] == "smtp: 554 refused for <address>"
    assert "handed to cloudflare but no report came back" in data(queued)["cause"]
    assert "worker is not reporting" in data(queued)["cause"]
    assert "cloud submission is paused" in data(pending)["cause"]
    # the alert jobs themselves are never alerted, however long they wait
    assert alerts.alert_stuck(config, now + timedelta(days=1)) == []
    alert_recipients = Recipient.select().join(Job).where(Job.type == "stuck_alert")
    assert {(r.userid, r.email) for r in alert_recipients} == {
        (-1, "boss@example.org"),
        (-2, "ops@example.org"),
    }


def test_the_daily_report_is_due_at_its_hour_in_the_sites_zone_and_counts(db_url, db):
    config = make_config(db_url, free_port(), daily_report_at="07:30")
    config = config.model_copy(
        update={"schedules": config.schedules.model_copy(update={"timezone": "Europe/Berlin"})}
    )
    day = datetime(2025, 11, 18, 6, 0)  # 07:00 in Berlin: not yet
    failed = stuck_job("local", day)
    Recipient.update(status=RecipientStatus.PERMANENTLY_FAILED,
                     last_error="smtp: 550 no such user x@example.org").where(
        Recipient.job == failed).execute()  # fmt: skip
    at = day + timedelta(minutes=30)
    for i, when in enumerate((at - timedelta(hours=1), at - timedelta(hours=25))):  # in, out
        SuppressedAddress.insert(email=f"b{i}@example.org", reason="bounce", source="ses_bounce",
                                 created_at=when).execute()  # fmt: skip
        OptOut.insert(userid=i + 1, kind="reminders", source="page", created_at=when).execute()
        Certificate.insert(code=f"C{i}", job_id=failed, userid=i + 1, storage="local", key="k",
                           issued_at=when).execute()  # fmt: skip
    assert alerts.daily_report(config, day) is None
    job_id = alerts.daily_report(config, day + timedelta(minutes=30))  # 07:30 in Berlin
    assert job_id
    job = Job.get_by_id(job_id)
    assert job.idempotency_key == "daily_report:2025-11-18" and job.route == "local"
    data = job.template_data
    assert data["jobs_total"] == 1 and data["failures"] == 3
    assert data["top_reasons"] == [["smtp: 550 no such user <address>", 3]]
    assert data["stuck"][0]["id"] == failed
    assert (data["bounces"], data["suppressed"], data["unsubscribes"]) == (1, 1, 1)
    assert data["certificates"] == 1
    assert data["dashboard_url"] == "https://offload.example.org/"
    assert alerts.daily_report(config, day + timedelta(hours=10)) is None  # same day
    assert alerts.daily_report(config, day + timedelta(hours=24)) is None  # 07:00 next day
    assert alerts.daily_report(config, day + timedelta(hours=25))  # the next day's, due


def test_two_daemons_racing_make_one_daily_report_and_one_stuck_alert(db_url):
    """Two threads, each with its own connection, check at the same moment."""
    config = make_config(db_url, free_port(), daily_report_at="00:00")
    db = open_database(db_url)
    now = datetime(2025, 11, 18, 9, 0)
    with db.connection_context():
        stuck = stuck_job("aws", now)
    barrier = threading.Barrier(2)
    made, errors = [], []

    def daemon():
        try:
            with db.connection_context():
                barrier.wait()
                for _ in range(5):
                    made.append(alerts.daily_report(config, now))
                    made.extend(alerts.alert_stuck(config, now))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=daemon) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len([m for m in made if m]) == 2  # the report's job id, the stuck job's id
    assert made.count(stuck) == 1
    with db.connection_context():
        for kind in ("daily_report", "stuck_alert"):
            assert Job.select().where(Job.type == kind).count() == 1
            assert Recipient.select().join(Job).where(Job.type == kind).count() == 2


@pytest.mark.parametrize(
    ("toml", "key", "words"),
    [
        ('admin_emails = ["ops@example.org", "not an address"]', "alerts.admin_emails",
         "'not an address' is not an email address"),
        ('admin_emails = "ops@example.org"', "alerts.admin_emails", ""),
        ('daily_report_at = "25:00"', "alerts.daily_report_at", "HH:MM"),
    ],
)  # fmt: skip
def test_a_bad_alerts_value_names_its_key(tmp_path, toml, key, words):
    path = tmp_path / "offload.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/x.db"\n\n[alerts]\n{toml}\n')
    with pytest.raises(ConfigError) as err:
        load(path)
    assert key in str(err.value) and words in str(err.value)
