"""The health of each moving part against real components: an aiosmtpd server on
127.0.0.1 (answering, closed, silent), moto in server mode (SQS queue and DLQ with
messages, the SES quota), the Moodle sandbox over HTTP (up, stopped, silent), a job that
stopped moving in the ledger, and the cache that keeps a dashboard poll off the servers."""

import json
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta

import boto3
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
from sidecar import jobs
from sidecar.config import Config, load
from sidecar.db import migrations
from sidecar.db.connect import open_database
from sidecar.db.models import Job, Recipient, SyncState
from sidecar.errors import ConfigError
from sidecar.health import FAIL, OFF, OK, WARN, Health, Part, overall
from sidecar.status import JobStatus
from tests.motoserver import free_port, moto_process

REGION = "eu-west-1"


# --- real servers --------------------------------------------------------------------------


class CountingController(Controller):
    """An aiosmtpd server that counts the connections it is given (its own start-up
    probe included: tests compare counts before and after)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.connections = 0
        self.lock = threading.Lock()
        self.seen = threading.Condition(self.lock)

    def factory(self):
        controller = self

        class Counting(SMTP):
            def connection_made(self, transport):
                with controller.lock:
                    controller.connections += 1
                    controller.seen.notify_all()
                super().connection_made(transport)

        return Counting(self.handler, **self.SMTP_kwargs)

    def wait_for(self, n: int, timeout: float = 30) -> int:
        with self.lock:
            self.seen.wait_for(lambda: self.connections >= n, timeout)
            return self.connections


class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


@pytest.fixture
def smtp():
    controller = CountingController(Sink(), hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller
    controller.stop()


@contextmanager
def silent_server():
    """A port that accepts TCP connections (the kernel's backlog) and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture(scope="module")
def moodle():
    site = generate_site(SiteSpec(seed=5, learners=5, courses=1, companies=0))
    with SandboxServer(site) as server:
        server.site = site
        yield server


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path}/health.db"
    db = open_database(url)
    migrations.upgrade(db)
    db.close()
    return url


def make_config(db_url: str, **sections) -> Config:
    raw = {
        "database": {"url": db_url},
        "providers": {"local": {"smtp_host": "127.0.0.1", "smtp_port": free_port(),
                                "smtp_security": "none"}},
    }  # fmt: skip
    for key, value in sections.items():
        if key in ("local", "aws", "cloudflare"):
            raw["providers"].setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return Config.model_validate(raw)


class Monotonic:
    """A monotonic clock the test moves: the cache's age, not any real wait."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def by_name(parts: list[Part]) -> dict[str, Part]:
    return {p.name: p for p in parts}


# --- the SMTP server -----------------------------------------------------------------------


def test_an_answering_smtp_server_is_ok_with_its_banner_and_no_mail_sent(sqlite_url, smtp):
    config = make_config(sqlite_url, local={"smtp_port": smtp.port})
    part = by_name(Health(config).parts())["smtp"]
    assert part.state == OK, part
    assert part.summary.startswith(f"127.0.0.1:{smtp.port} answers: 250")
    assert part.detail["server"] == f"127.0.0.1:{smtp.port}"
    assert part.checked_at is not None


def test_a_closed_smtp_port_fails_saying_it_cannot_connect(sqlite_url):
    config = make_config(sqlite_url)  # a free port: nobody listens
    part = by_name(Health(config).parts())["smtp"]
    assert part.state == FAIL
    assert "cannot connect" in part.summary and "refused" in part.summary.lower()


def test_a_silent_smtp_server_times_out_and_the_other_parts_still_answer(sqlite_url):
    with silent_server() as port:
        config = make_config(sqlite_url, local={"smtp_port": port})
        parts = by_name(Health(config, timeout=1).parts())
    assert parts["smtp"].state == FAIL
    assert parts["smtp"].summary == "timed out after 1s"
    assert parts["database"].state == OK


def test_within_the_interval_a_second_call_does_not_contact_the_smtp_server(sqlite_url, smtp):
    config = make_config(sqlite_url, local={"smtp_port": smtp.port})
    mono = Monotonic()
    health = Health(config, monotonic=mono, interval=30)
    before = smtp.connections
    first = by_name(health.parts())["smtp"]
    assert smtp.connections == before + 1
    mono.now += 29
    second = by_name(health.parts())["smtp"]
    assert smtp.connections == before + 1, "the cached result was not used"
    assert second == first
    # past the interval: the last result is shown while a new check runs in the background
    mono.now += 2
    assert by_name(health.parts())["smtp"].state == OK
    assert smtp.wait_for(before + 2) == before + 2
    for _ in range(3000):  # the background check's result comes with a later call
        fourth = by_name(health.parts())["smtp"]
        if fourth.checked_at != first.checked_at:
            break
        time.sleep(0.01)
    assert fourth.state == OK and fourth.checked_at > first.checked_at
    assert smtp.connections == before + 2
    # and `fresh` checks now, within the interval
    by_name(health.parts(fresh=True))
    assert smtp.connections == before + 3


# --- Moodle --------------------------------------------------------------------------------


def moodle_config(db_url, url, token):
    return make_config(db_url, moodle={"url": url, "token": token},
                       local={"maildir": "/tmp/unused-maildir"})  # fmt: skip


def test_a_reachable_moodle_is_ok_with_its_site_and_latency_and_no_token(sqlite_url, moodle):
    config = moodle_config(sqlite_url, moodle.url, moodle.site.token)
    health = Health(config)
    part = by_name(health.parts())["moodle"]
    assert part.state == OK, part
    assert part.detail["site"] == moodle.site.sitename
    assert part.detail["latency_ms"] >= 0
    assert moodle.site.token not in json.dumps(health.as_json())


def test_a_wrong_token_fails_and_the_token_is_not_shown(sqlite_url, moodle):
    token = "f" * 32
    config = moodle_config(sqlite_url, moodle.url, token)
    health = Health(config)
    part = by_name(health.parts())["moodle"]
    assert part.state == FAIL
    assert token not in json.dumps(health.as_json())


def test_a_stopped_moodle_fails(sqlite_url):
    site = generate_site(SiteSpec(seed=6, learners=2, courses=1, companies=0))
    server = SandboxServer(site).start()
    url = server.url
    server.stop()
    part = by_name(Health(moodle_config(sqlite_url, url, site.token)).parts())["moodle"]
    assert part.state == FAIL
    assert url in part.summary
    assert site.token not in part.summary


def test_a_silent_moodle_times_out(sqlite_url):
    with silent_server() as port:
        config = moodle_config(sqlite_url, f"http://127.0.0.1:{port}", "a" * 32)
        part = by_name(Health(config, timeout=1).parts())["moodle"]
    assert (part.state, part.summary) == (FAIL, "timed out after 1s")


def test_a_failed_last_sync_makes_a_reachable_moodle_warn(sqlite_url, moodle, clock):
    db = open_database(sqlite_url)
    with db.connection_context():
        SyncState.create(source="moodle", ok_at=clock() - timedelta(hours=2),
                         error="Moodle answered 503", error_at=clock(), schedules=3)  # fmt: skip
    config = moodle_config(sqlite_url, moodle.url, moodle.site.token)
    part = by_name(Health(config, db, clock=clock).parts())["moodle"]
    assert part.state == WARN
    assert "the last schedule sync failed" in part.summary and "503" in part.summary
    assert part.detail["last_sync"]["moodle"]["schedules"] == 3


def test_without_moodle_the_part_is_off(sqlite_url):
    part = by_name(Health(make_config(sqlite_url)).parts())["moodle"]
    assert part.state == OFF


# --- AWS: SQS and its DLQ, the SES quota ------------------------------------------------------


def aws_config(db_url, endpoint, **aws):
    section = {"region": REGION, "endpoint_url": endpoint, "s3_bucket": "unused",
               "ses_from": "noreply@academy.example", **aws}  # fmt: skip
    return make_config(db_url, aws=section, local={"maildir": "/tmp/unused-maildir"})


def queues(endpoint):
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=endpoint)
    tag = uuid.uuid4().hex[:10]
    dlq = sqs.create_queue(QueueName=f"dlq-{tag}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]
    redrive = json.dumps({"deadLetterTargetArn": arn["QueueArn"], "maxReceiveCount": 2})
    job = sqs.create_queue(QueueName=f"jobs-{tag}", Attributes={"RedrivePolicy": redrive})
    return sqs, job["QueueUrl"], dlq


def test_queue_depths_in_flight_and_a_non_empty_dlq_are_reported(sqlite_url, moto):
    sqs, job_queue, dlq = queues(moto)
    for i in range(5):
        sqs.send_message(QueueUrl=job_queue, MessageBody=f"batch {i}")
    sqs.receive_message(QueueUrl=job_queue, MaxNumberOfMessages=2, VisibilityTimeout=300)
    for i in range(3):
        sqs.send_message(QueueUrl=dlq, MessageBody=f"dead {i}")
    config = aws_config(sqlite_url, moto, sqs_queue_url=job_queue, dlq_url=dlq)
    parts = by_name(Health(config).parts())
    queue = parts["aws queue"]
    assert queue.state == OK
    assert (queue.detail["waiting"], queue.detail["in_flight"]) == (3, 2)
    assert queue.summary == "3 batch messages waiting, 2 in flight"
    dead = parts["aws dlq"]
    assert dead.state == WARN and dead.detail["waiting"] == 3
    assert dead.summary.startswith("3 dead-letter messages")
    assert parts["ses quota"].state == OK


def test_an_empty_dlq_is_ok_and_a_missing_queue_fails_naming_it(sqlite_url, moto):
    _, job_queue, dlq = queues(moto)
    gone = job_queue + "-gone"
    config = aws_config(sqlite_url, moto, sqs_queue_url=gone, dlq_url=dlq)
    parts = by_name(Health(config).parts())
    assert parts["aws dlq"].state == OK and parts["aws dlq"].summary == "empty"
    assert parts["aws queue"].state == FAIL and gone in parts["aws queue"].summary


def test_without_a_dlq_url_the_dlq_part_warns(sqlite_url, moto):
    _, job_queue, _ = queues(moto)
    part = by_name(Health(aws_config(sqlite_url, moto, sqs_queue_url=job_queue)).parts())["aws dlq"]
    assert part.state == WARN and "dlq_url" in part.summary


@pytest.fixture(scope="module")
def small_quota_moto():
    """A moto of its own whose SES allows 10 emails a day."""
    with moto_process(max_24h=10, max_rate=1) as url:
        yield url


def test_ses_quota_use_above_80_percent_warns_and_used_up_fails(sqlite_url, small_quota_moto, moto):
    endpoint = small_quota_moto
    ses = boto3.client("ses", region_name=REGION, endpoint_url=endpoint)
    ses.verify_email_identity(EmailAddress="noreply@academy.example")
    _, job_queue, dlq = queues(endpoint)
    config = aws_config(sqlite_url, endpoint, sqs_queue_url=job_queue, dlq_url=dlq)

    def send(n):
        for _ in range(n):
            ses.send_email(
                Source="noreply@academy.example",
                Destination={"ToAddresses": ["learner@example.org"]},
                Message={"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}},
            )

    send(8)
    part = by_name(Health(config).parts())["ses quota"]
    assert part.state == OK and part.detail["used"] == 0.8
    send(1)
    part = by_name(Health(config).parts())["ses quota"]
    assert part.state == WARN
    assert part.summary.startswith("9 of 10 sent in the last 24 h (90%)")
    send(1)
    part = by_name(Health(config).parts())["ses quota"]
    assert part.state == FAIL and "used up" in part.summary


def test_cloudflare_names_an_unreachable_or_misconfigured_worker(sqlite_url):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tests.motoserver import free_port

    nobody = f"http://127.0.0.1:{free_port()}"
    config = make_config(sqlite_url, cloudflare={"worker_url": nobody})
    part = by_name(Health(config).parts())["cloudflare"]
    assert part.state == FAIL and nobody in part.summary

    class Misconfigured(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "misconfigured", "version": "1.0.0",
                               "email_sender": "resend",
                               "problems": ["EMAIL_API_KEY is not set"]}).encode()  # fmt: skip
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Misconfigured)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        config = make_config(sqlite_url, cloudflare={"worker_url": url})
        part = by_name(Health(config).parts())["cloudflare"]
        assert part.state == FAIL and "EMAIL_API_KEY is not set" in part.summary
    finally:
        server.shutdown()


# --- the ledger: database and stuck jobs ---------------------------------------------------


def people(n):
    return [jobs.RecipientIn(i, f"user{i}@example.org", f"F{i}", f"L{i}") for i in range(1, n + 1)]


def spec():
    return jobs.JobSpec(type="send_csv", template_id="custom", source="test")


def test_the_database_answers_with_its_schema_version(db_url, db):
    part = by_name(Health(make_config(db_url), db).parts())["database"]
    assert part.state == OK
    assert part.detail["schema"] == migrations.LATEST
    assert f"schema at version {migrations.LATEST}" in part.summary


def test_a_database_that_does_not_answer_fails_without_its_password(tmp_path):
    password = "hunter2-very-secret"
    url = f"postgresql://offload:{password}@127.0.0.1:{free_port()}/offload"
    health = Health(make_config(url, local={"maildir": str(tmp_path / "mail")}))
    parts = by_name(health.parts())
    assert parts["database"].state == FAIL
    assert "does not answer" in parts["database"].summary
    assert parts["stuck jobs"].state == FAIL
    assert password not in json.dumps(health.as_json())


def test_a_job_without_progress_past_the_threshold_is_stuck(db_url, db, clock):
    stuck = jobs.create_job(spec(), people(3), batch_size=2, now=clock()).job_id
    clock.advance(1800)
    moving = jobs.create_job(spec(), people(2), batch_size=2, now=clock()).job_id
    done = jobs.create_job(spec(), people(1), batch_size=2, now=clock() - timedelta(hours=5))
    Job.update(status=JobStatus.COMPLETED).where(Job.id == done.job_id).execute()
    config = make_config(db_url, dashboard={"stuck_after": "45m"})
    health = Health(config, db, clock=clock)

    part = by_name(health.parts())["stuck jobs"]
    assert part.state == OK and part.detail["count"] == 0  # 30 minutes: not yet

    clock.advance(1200)  # the first job: 50 min without a change; the second: 20 min
    part = by_name(health.parts(fresh=True))["stuck jobs"]
    assert part.state == WARN
    assert part.detail["count"] == 1
    assert part.detail["oldest"]["id"] == stuck
    assert part.detail["oldest"]["status"] == JobStatus.PENDING
    assert part.summary.startswith("1 job without progress for more than 45m")
    assert stuck in part.summary and "50m" in part.summary

    # a recipient of it moves: it is not stuck any more
    Recipient.update(updated_at=clock()).where(Recipient.job == stuck).execute()
    part = by_name(health.parts(fresh=True))["stuck jobs"]
    assert part.state == OK, part
    assert moving  # still running, never counted


# --- the whole -------------------------------------------------------------------------------


def test_the_overall_state_is_the_worst_part():
    def p(state):
        return Part("x", state, "")

    assert overall([p(OK), p(OFF)]) == OK
    assert overall([p(OK), p(WARN), p(OFF)]) == WARN
    assert overall([p(WARN), p(FAIL)]) == FAIL
    assert overall([p(OFF)]) == OK


def test_the_json_has_every_part_with_its_fields(sqlite_url, tmp_path):
    config = make_config(sqlite_url, local={"maildir": str(tmp_path / "mail")})
    out = Health(config).as_json()
    assert out["state"] == OK
    assert [p["name"] for p in out["parts"]] == ["database", "moodle", "mail folder", "stuck jobs"]
    for p in out["parts"]:
        assert set(p) == {"name", "state", "summary", "detail", "checked_at"}
        assert p["checked_at"].endswith("Z")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("health_interval = 0", "dashboard.health_interval: must be at least 1 seconds"),
        ("health_timeout = 120", "dashboard.health_timeout: must be at most 60 seconds"),
        ('stuck_after = "10s"', "dashboard.stuck_after: must be at least 60 seconds"),
    ],
)
def test_a_bad_health_setting_is_refused_naming_the_key(tmp_path, line, message):
    path = tmp_path / "config.toml"
    path.write_text(f"[dashboard]\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        load(path, env={})


def test_healthz_says_degraded_not_down_for_a_stuck_job(db, db_url, clock):
    from sidecar.runtime import Runtime
    from sidecar.web.app import make_app
    from tests.sidecar.api_helpers import make_job

    rt = Runtime(make_config(db_url, dashboard={"stuck_after": "1h"}), clock=clock)
    try:
        job_id = make_job(clock, 3)
        ok, state = rt.health()
        assert ok and state["status"] == "ok" and state["stuck_jobs"]["count"] == 0
        clock.advance(2 * 3600)  # nothing moved for two hours
        ok, state = rt.health()
        assert ok and state["status"] == "degraded"
        assert state["stuck_jobs"]["count"] == 1 and state["stuck_jobs"]["oldest"]["id"] == job_id
        app = make_app(handle_callback=lambda raw, sig: {}, health=rt.health)
        from werkzeug.test import Client

        resp = Client(app).get("/healthz")
        assert resp.status_code == 200 and resp.get_json()["status"] == "degraded"
    finally:
        rt.close()
