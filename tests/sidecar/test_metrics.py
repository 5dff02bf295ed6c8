"""`GET /metrics` of a running daemon, scraped over HTTP after real work: a job delivered
to an SMTP sink (aiosmtpd on 127.0.0.1) with one address refused, a cloud callback
accepted and one rejected, schedules synced from the Moodle sandbox and a schedule run
whose job the daemon delivers, a job stuck for two hours. The ledger's figures are read
on SQLite, PostgreSQL and MariaDB; the counters are this process's, so each test compares
a scrape after the work with one before it."""

import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import yaml
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

from moodle_ws import functions
from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
from providers.base import ProviderUnavailable
from providers.signing import sign
from sidecar import jobs, runs, sync
from sidecar.cloudpoll import poll_dead_letters, poll_ses_events
from sidecar.config import load
from sidecar.daemon import Daemon
from sidecar.db.models import Batch, Job, Recipient, ScheduleRecord
from sidecar.metrics import MetricsEndpoint
from sidecar.moodle import open_client
from sidecar.status import JOB_FINAL
from sidecar.status import RecipientStatus as R
from sidecar.web.app import make_app
from sidecar.web.server import HttpServer
from tests.conftest import schedule_row
from tests.e2e.conftest import free_port

from .test_cloud import SqsGoesAway, aws, receive_all, rt, ses_event  # noqa: F401 - aws, rt: fixtures
from .test_cloud import make_job as aws_job
from .test_delivery import ScriptedHandler, person, queue_job

SECRET = "metrics-test-callback-secret"
TOKEN = "scrape-token-5d1e7b2c9a"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


Sample = tuple[str, frozenset]


def scrape(url: str, token: str | None = None) -> dict[Sample, float]:
    """Every sample of one scrape: {(name, {(label, value)...}): value}."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = requests.get(f"{url}/metrics", headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: dict[Sample, float], name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before, after, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def sink():
    handler = ScriptedHandler({"learner2@example.org": ["550 5.1.1 mailbox unavailable"]})
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


@pytest.fixture
def site():
    s = generate_site(SiteSpec(seed=5, learners=12, courses=1, companies=0, schedules=0))
    s.schedules[:] = [schedule_row(s.main_course_id, audience="enrolled")]
    with SandboxServer(s) as server:
        s.server_url = server.url
        yield s


@pytest.fixture
def daemon(tmp_path):
    """`daemon(db_url, smtp_port, extra, **options)`: `run`'s daemon (HTTP server and delivery loop,
    no scheduler thread) on `db_url`, delivering by SMTP to 127.0.0.1:smtp_port."""
    started = []

    def start(db_url: str, smtp_port: int, extra: str = "", **options) -> Daemon:
        path = tmp_path / "offload.toml"
        path.write_text(
            f'[database]\nurl = "{db_url}"\n'
            f'[server]\nlisten = "127.0.0.1:{free_port()}"\npublic_url = "http://127.0.0.1"\n'
            f'[security]\ncallback_secrets = ["{SECRET}"]\n'
            f'[providers.local]\nfrom = "noreply@academy.example"\nsmtp_host = "127.0.0.1"\n'
            f'smtp_port = {smtp_port}\nsmtp_security = "none"\n'
            f'certificate_dir = "{tmp_path}/certs"\n' + extra
        )
        d = Daemon(load(path), path, poll_interval=0.1, **options)
        d.start(schedules=False)
        started.append(d)
        d.runtime.db.connect(reuse_if_open=True)  # this thread's connection, for the test
        return d

    yield start
    for d in started:
        d.shutdown()


def wait_finished(job_ids, seconds=60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done = Job.select().where(Job.id.in_(job_ids), Job.status.in_(list(JOB_FINAL))).count()
        if done == len(job_ids):
            return
        time.sleep(0.1)
    raise AssertionError(f"jobs not finished in {seconds}s")


def cloud_job(people, *, now) -> tuple[str, str]:
    """A job handed to AWS (batch queued, recipients queued): the local loop leaves it."""
    created = jobs.create_job(
        jobs.JobSpec(type="send_reminder", template_id="reminder", source="test", route="aws"),
        people, batch_size=200, now=now,
    )  # fmt: skip
    batch = Batch.get(Batch.job == created.job_id)
    Batch.update(status="queued", updated_at=now).where(Batch.id == batch.id).execute()
    Recipient.update(status=R.QUEUED, updated_at=now).where(
        Recipient.job == created.job_id
    ).execute()
    return created.job_id, batch.id


def post_callback(url, job_id, batch_id, updates, *, secret=SECRET):
    raw = json.dumps({
        "schema": "offload.callback.v1", "callback_id": str(uuid.uuid4()), "job_id": job_id,
        "batch_id": batch_id, "recipient_updates": updates,
        "timestamp": int(datetime.now(UTC).timestamp()),
    }).encode()  # fmt: skip
    return requests.post(
        f"{url}/callback", data=raw, timeout=10,
        headers={"Content-Type": "application/json", "X-Signature": sign(secret, raw)},
    )  # fmt: skip


def test_metrics_after_a_delivery_a_callback_a_sync_and_a_schedule_run(db_url, daemon, sink, site):
    d = daemon(
        db_url, sink.port,
        f'[moodle]\nurl = "{site.server_url}"\ntoken = "{site.token}"\nretry_attempts = 1\n'
        '[schedules]\ntimezone = "UTC"\n',
    )  # fmt: skip
    url = d.http.url
    before = scrape(url)
    assert value(before, "moodle_offload_ledger_up") == 1
    assert value(before, "moodle_offload_recipients", status="sent") == 0

    # a local job of 3: learner2's address is refused for good
    local = queue_job(utcnow, [person(i) for i in (1, 2, 3)])
    # a cloud job of 2: the worker reports learner 11 sent; a forged callback is refused
    cloud, batch = cloud_job([person(11), person(12)], now=utcnow())
    sent = {"userid": 11, "status": "sent", "external_id": "ses-11",
            "timesent": int(datetime.now(UTC).timestamp())}  # fmt: skip
    assert post_callback(url, cloud, batch, [sent]).status_code == 200
    assert post_callback(url, cloud, batch, [sent], secret="forged").status_code == 401
    # a cloud job nobody has touched for two hours: stuck
    stuck, _ = cloud_job([person(21)], now=utcnow() - timedelta(hours=2))
    # schedules synced from Moodle, then one run whose job the daemon delivers
    [synced] = sync.sync_all(d.config, lambda: open_client(d.config), utcnow())
    assert synced.error is None
    record = ScheduleRecord.get()
    outcome = runs.Runner(d.runtime).fire_now(record)
    assert outcome.status == "done" and outcome.recipients > 0
    wait_finished([local, *outcome.jobs])

    after = scrape(url)
    learners = outcome.recipients
    # what the ledger holds, by type and status
    assert value(after, "moodle_offload_jobs", type="send_reminder", status="partial_failure") == 1
    # the cloud job a callback started is processing; the stuck one was never started
    assert value(after, "moodle_offload_jobs", type="send_reminder", status="processing") == 1
    assert value(after, "moodle_offload_jobs", type="send_reminder", status="pending") == 1
    assert value(after, "moodle_offload_jobs_open") == 2
    assert value(after, "moodle_offload_recipients", status="sent") == 2 + 1 + learners
    assert value(after, "moodle_offload_recipients", status="failed") == 1
    assert value(after, "moodle_offload_recipients", status="queued") == 2
    assert value(after, "moodle_offload_recipients", status="cancelled") == 0  # always there
    assert value(after, "moodle_offload_stuck_jobs") == 1
    # the two cloud jobs' batches wait with AWS; the local ones are done (not listed)
    assert value(after, "moodle_offload_batches", route="aws", status="queued") == 2
    assert value(after, "moodle_offload_batch_recipients", route="aws", status="queued") == 3
    assert value(after, "moodle_offload_batches", route="local", status="queued") == 0
    synced_at = value(after, "moodle_offload_schedule_sync_last_success_timestamp_seconds",
                      source="moodle")  # fmt: skip
    assert abs(synced_at - time.time()) < 120
    assert value(after, "moodle_offload_schedule_sync_last_error_timestamp_seconds",
                 source="moodle") == 0  # fmt: skip
    # what this daemon did meanwhile
    assert delta(before, after, "moodle_offload_callbacks_total",
                 source="http", outcome="accepted", status="200") == 1  # fmt: skip
    assert delta(before, after, "moodle_offload_callbacks_total",
                 source="http", outcome="rejected", status="401") == 1  # fmt: skip
    assert delta(before, after, "moodle_offload_schedule_runs_total", outcome="done") == 1
    assert delta(before, after, "moodle_offload_schedule_syncs_total",
                 source="moodle", outcome="ok") == 1  # fmt: skip
    local_sent = 2 + learners
    assert delta(before, after, "moodle_offload_provider_calls_total",
                 provider="local", outcome="sent") == local_sent  # fmt: skip
    assert delta(before, after, "moodle_offload_provider_calls_total",
                 provider="local", outcome="failed") == 1  # fmt: skip
    assert len(sink.accepted) == local_sent
    assert delta(before, after, "moodle_offload_delivery_latency_seconds_count",
                 route="local") == local_sent  # fmt: skip
    assert delta(before, after, "moodle_offload_delivery_latency_seconds_bucket",
                 route="local", le="60.0") == local_sent  # fmt: skip
    # the sync and the run asked Moodle: each request counted once, with its time
    asked = {labels: n for (name, labels), n in after.items()
             if name == "moodle_offload_moodle_requests_total"}  # fmt: skip
    ok = {dict(k)["function"]: n - value(before, "moodle_offload_moodle_requests_total", **dict(k))
          for k, n in asked.items() if dict(k)["outcome"] == "ok"}  # fmt: skip
    assert ok.get("core_enrol_get_enrolled_users", 0) >= 1
    # no request of this test failed (the counters are the process's: earlier tests' may)
    failed = {k: n - value(before, "moodle_offload_moodle_requests_total", **dict(k))
              for k, n in asked.items() if dict(k)["outcome"] != "ok"}  # fmt: skip
    assert all(n == 0 for n in failed.values()), failed
    timed = sum(delta(before, after, "moodle_offload_moodle_request_seconds_count", function=f)
                for f in ok)  # fmt: skip
    assert timed == sum(ok.values())


def test_moodle_unreachable_is_counted(tmp_path, daemon, sink):
    d = daemon(
        f"sqlite:///{tmp_path}/ledger.db", sink.port,
        f'[moodle]\nurl = "http://127.0.0.1:{free_port()}"\ntoken = "t0ken-never-used"\n'
        "retry_attempts = 1\n",
    )  # fmt: skip
    before = scrape(d.http.url)
    client = open_client(d.config)
    with pytest.raises(Exception, match="cannot connect"):
        functions.site_info(client)
    after = scrape(d.http.url)
    assert delta(before, after, "moodle_offload_moodle_requests_total",
                 function="core_webservice_get_site_info", outcome="unreachable") == 1  # fmt: skip


def test_a_configured_token_is_required(tmp_path, daemon, sink, caplog):
    (tmp_path / "metrics-token").write_text(TOKEN + "\n")
    d = daemon(f"sqlite:///{tmp_path}/ledger.db", sink.port,
               '[metrics]\ntoken_file = "metrics-token"\n')  # fmt: skip
    url = f"{d.http.url}/metrics"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):  # fmt: skip
        resp = requests.get(url, headers=headers, timeout=10)
        assert resp.status_code == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "moodle_offload" not in resp.text and TOKEN not in resp.text
    samples = scrape(d.http.url, TOKEN)
    assert value(samples, "moodle_offload_ledger_up") == 1
    assert TOKEN not in caplog.text


def test_without_a_token_anyone_on_the_listener_scrapes(tmp_path, daemon, sink):
    d = daemon(f"sqlite:///{tmp_path}/ledger.db", sink.port)
    samples = scrape(d.http.url)
    assert value(samples, "moodle_offload_jobs_open") == 0
    assert value(samples, "moodle_offload_stuck_jobs") == 0


def test_the_alert_rules_and_the_dashboard_use_only_metrics_the_daemon_serves(
    tmp_path, daemon, sink
):
    d = daemon(f"sqlite:///{tmp_path}/ledger.db", sink.port)
    served = {name for name, _ in scrape(d.http.url)}
    # families that have no sample before the first event of their kind
    for name in ("callbacks", "schedule_runs", "schedule_syncs", "moodle_requests",
                 "provider_calls", "cloud_requests", "cloud_batches_queued", "dead_letters",
                 "ses_events", "cloud_gauge_errors"):  # fmt: skip
        served.add(f"moodle_offload_{name}_total")
    for name in ("moodle_request_seconds", "delivery_latency_seconds", "cloud_request_seconds"):
        served |= {f"moodle_offload_{name}_{s}" for s in ("bucket", "count", "sum")}
    served |= {"moodle_offload_schedule_sync_last_success_timestamp_seconds",
               "moodle_offload_schedule_sync_last_error_timestamp_seconds",
               "moodle_offload_jobs", "moodle_offload_batches",
               "moodle_offload_batch_recipients",
               # read from the clouds: only with a provider configured (test_cloudgauges.py)
               "moodle_offload_queue_depth", "moodle_offload_ses_quota_max_24h",
               "moodle_offload_ses_quota_sent_24h", "moodle_offload_ses_max_send_rate"}  # fmt: skip
    docs = Path(__file__).resolve().parents[2] / "docs"
    rules = yaml.safe_load((docs / "monitoring" / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((docs / "monitoring" / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"moodle_offload_[a-z0-9_]+", e)}
    assert used and used <= served, used - served
    page = (docs / "monitoring.md").read_text()
    families = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in used | served
                if n.startswith("moodle_offload_")}  # fmt: skip
    assert [f for f in families if f"`{f}`" not in page and f"`{f}_total`" not in page] == []


def test_batches_handed_to_aws_and_a_queue_lost_midway(rt, aws, clock, monkeypatch):  # noqa: F811
    endpoint = MetricsEndpoint(rt.db, stuck_after=timedelta(hours=1), clock=clock)
    srv = HttpServer(make_app(handle_callback=rt.callbacks.handle, health=lambda: (True, {}),
                              metrics=endpoint), "127.0.0.1", 0)  # fmt: skip
    srv.start()
    try:
        before = scrape(srv.url)
        aws_job(clock, 600)  # 12 batches: a request of 10 messages, then one of 2
        sqs = SqsGoesAway(rt.aws.sqs, aws["endpoint"], monkeypatch)
        with pytest.raises(ProviderUnavailable):
            rt.aws.submitter.run_once()
        middle = scrape(srv.url)
        sqs.back()
        assert rt.aws.submitter.run_once() == 2
        after = scrape(srv.url)
    finally:
        srv.stop()
    assert value(middle, "moodle_offload_batches", route="aws", status="queued") == 10
    assert value(middle, "moodle_offload_batches", route="aws", status="pending") == 2
    assert value(middle, "moodle_offload_batch_recipients", route="aws", status="pending") == 100
    assert delta(before, middle, "moodle_offload_cloud_requests_total",
                 provider="aws", outcome="ok") == 1  # fmt: skip
    assert delta(before, middle, "moodle_offload_cloud_requests_total",
                 provider="aws", outcome="unavailable") == 1  # fmt: skip
    assert delta(before, after, "moodle_offload_cloud_requests_total",
                 provider="aws", outcome="ok") == 2  # fmt: skip
    assert delta(before, after, "moodle_offload_cloud_batches_queued_total", provider="aws") == 12
    assert delta(before, after, "moodle_offload_cloud_request_seconds_count", provider="aws") == 3
    assert value(after, "moodle_offload_batch_recipients", route="aws", status="queued") == 600
    assert value(after, "moodle_offload_recipients", status="queued") == 600


def test_a_dead_lettered_batch_and_an_ses_bounce_are_counted(rt, aws, clock):  # noqa: F811
    endpoint = MetricsEndpoint(rt.db, stuck_after=timedelta(hours=1), clock=clock)
    before = _samples(endpoint)
    job_id = aws_job(clock, 3)
    rt.aws.submitter.run_once()
    (msg,) = receive_all(aws["sqs"], aws["jobs"])
    aws["sqs"].send_message(QueueUrl=aws["dlq"], MessageBody=msg["Body"])
    assert poll_dead_letters(rt.aws.reader(aws["dlq"]), clock) == 1
    event = ses_event("Bounce", "learner2@example.com", job_id, 2)
    aws["sqs"].send_message(QueueUrl=aws["events"], MessageBody=json.dumps(event))
    poll_ses_events(rt.aws.reader(aws["events"]), clock)
    after = _samples(endpoint)
    assert delta(before, after, "moodle_offload_dead_letters_total", provider="aws") == 1
    assert delta(before, after, "moodle_offload_ses_events_total", kind="bounce") == 1
    assert delta(before, after, "moodle_offload_ses_events_total", kind="complaint") == 0
    assert value(after, "moodle_offload_recipients", status="failed") == 2
    assert value(after, "moodle_offload_recipients", status="permanently_failed") == 1


def _samples(endpoint: MetricsEndpoint) -> dict[Sample, float]:
    """One scrape without HTTP (the text the endpoint serves, parsed)."""
    out = {}
    for family in text_string_to_metric_families(endpoint.render().decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_a_database_that_does_not_answer_gives_ledger_up_0_and_the_counters(tmp_path):
    from peewee import SqliteDatabase

    broken = SqliteDatabase(str(tmp_path))  # a folder: it cannot be opened
    endpoint = MetricsEndpoint(broken, stuck_after=timedelta(hours=1), clock=utcnow)
    samples = _samples(endpoint)
    assert value(samples, "moodle_offload_ledger_up") == 0
    assert not any(name == "moodle_offload_recipients" for name, _ in samples)
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)
