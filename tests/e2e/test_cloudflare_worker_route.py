"""The cloudflare route end to end, offline: the daemon hands a job's batches to the real
Worker (providers/cloudflare/worker in `wrangler dev`, workerd) through its signed
/enqueue, the Worker sends each email through the `send_email` binding (wrangler writes
each to a file) and reports to the daemon's own /callback, and the ledger shows every
recipient sent. A batch handed over again after a lost commit (a crash between the
queue taking it and the ledger saying so) mails nobody twice: the Worker's record
absorbs the copy. Skipped without Node.js unless MOODLE_OFFLOAD_REQUIRE_NODE=1."""

import time

import pytest

from sidecar import jobs
from sidecar.config import load
from sidecar.daemon import Daemon
from sidecar.db.models import Batch, Job, Recipient
from sidecar.status import BatchStatus, JobStatus
from sidecar.status import RecipientStatus as R
from tests.motoserver import free_port
from tests.providers.test_cloudflare_worker import SECRET, Wrangler, _wrangler_bin


@pytest.fixture
def worker(tmp_path_factory):
    w = Wrangler(_wrangler_bin(), tmp_path_factory.mktemp("cf-route"), {"CALLBACK_SECRET": SECRET})
    w.start()
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


@pytest.fixture
def make_daemon(tmp_path, worker):
    started = []

    def start(extra: str = "") -> Daemon:
        path = write_config(tmp_path, worker, extra)
        d = Daemon(load(path), path, poll_interval=0.2)
        d.start(schedules=False)
        started.append(d)
        return d

    yield start
    for d in started:
        d.shutdown()


@pytest.fixture
def daemon(make_daemon):
    return make_daemon()


def write_config(tmp_path, worker, extra: str = ""):
    port = free_port()
    path = tmp_path / "offload.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/ledger.db"\n'
        f'[server]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n'
        f'[security]\ncallback_secrets = ["{SECRET}"]\n'
        '[offload]\nenabled = true\nprovider = "cloudflare"\nthreshold = 1\n'
        "job_batch_size = 25\n"
        f'[providers.cloudflare]\nworker_url = "{worker.url}"\n'
        'from = "Academy <noreply@academy.example>"\n'
        + extra
        + f'[providers.local]\nmaildir = "{tmp_path}/mail"\ncertificate_dir = "{tmp_path}/certs"\n'
    )
    return path


def make_job(clock_now, n: int, *, certificate: bool = False, batch_size: int = 25) -> str:
    people = [jobs.RecipientIn(u, f"learner{u}@school.example.org", f"Zed{u}X", "Learner")
              for u in range(1, n + 1)]  # fmt: skip
    spec = jobs.JobSpec(
        type="certificate" if certificate else "send_reminder",
        template_id="completion" if certificate else "reminder", source="test",
        route="cloudflare", route_reason="test: the cloudflare route", courseid=101,
        actions=jobs.Actions(email=True, certificate=certificate),
        template_data={"course": {"fullname": "Sécurité 101", "shortname": "SEC101",
                                  "url": "https://moodle.example.org/course/view.php?id=101"}},
    )  # fmt: skip
    return jobs.create_job(spec, people, batch_size=batch_size, now=clock_now).job_id


def emails_by_learner(worker: Wrangler, n: int) -> dict[int, int]:
    texts = worker.emails()
    return {u: sum(f"Zed{u}X" in t for t in texts) for u in range(1, n + 1)}


def wait_until(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {what}")


def test_a_job_goes_through_the_worker_and_back_and_a_resent_batch_mails_nobody_twice(
    daemon, worker
):
    rt = daemon.runtime
    with rt.db.connection_context():
        job_id = make_job(rt.clock(), 60)
    daemon._wake.set()

    def all_sent() -> bool:
        with rt.db.connection_context():
            got = {r.status for r in Recipient.select().where(Recipient.job == job_id)}
        return got == {R.SENT}

    wait_until(all_sent, 90, "every recipient reported sent through /callback")
    assert emails_by_learner(worker, 60) == {u: 1 for u in range(1, 61)}
    with rt.db.connection_context():
        assert Job.get_by_id(job_id).status == JobStatus.COMPLETED
        batches = list(Batch.select().where(Batch.job == job_id))
        assert len(batches) == 3 and {b.route for b in batches} == {"cloudflare"}

        # a crash after the queue took a batch and before the ledger said so: the batch
        # is pending again and goes again, under the same round
        first = batches[0]
        Batch.update(status=BatchStatus.PENDING).where(Batch.id == first.id).execute()
        Recipient.update(status=R.PENDING).where(Recipient.batch == first.id).execute()
        assert rt.cloudflare.submitter.run_once() == 1
    wait_until(all_sent, 60, "the resent batch reported again")
    time.sleep(1.0)  # give a second email, if any, the time to be written
    assert emails_by_learner(worker, 60) == {u: 1 for u in range(1, 61)}


@pytest.fixture
def bridge(worker):
    from tests.r2_bridge import R2Bridge

    b = R2Bridge(worker.url)
    yield b
    b.close()


def test_1000_learners_get_one_email_each_and_a_certificate_link_that_downloads_their_pdf(
    make_daemon, worker, bridge
):
    from io import BytesIO

    import requests
    from pypdf import PdfReader

    from sidecar.db.models import Certificate

    n = 1000
    daemon = make_daemon(
        'r2_bucket = "offload-certificates"\n'
        f'r2_endpoint = "{bridge.url}"\nr2_access_key_id = "local"\n'
        'r2_secret_access_key = "local"\n'
    )
    rt = daemon.runtime
    with rt.db.connection_context():
        job_id = make_job(rt.clock(), n, certificate=True, batch_size=200)
    daemon._wake.set()

    def all_sent() -> bool:
        with rt.db.connection_context():
            got = {r.status for r in Recipient.select().where(Recipient.job == job_id)}
        return got == {R.SENT}

    wait_until(all_sent, 600, "every recipient reported sent")
    assert emails_by_learner(worker, n) == {u: 1 for u in range(1, n + 1)}
    assert len(bridge.puts) == n  # each PDF rendered here, stored once, before queueing
    with rt.db.connection_context():
        certs = {c.userid: c for c in Certificate.select().where(Certificate.job_id == job_id)}
        assert Job.get_by_id(job_id).status == JobStatus.COMPLETED
    assert len(certs) == n and {c.storage for c in certs.values()} == {"r2"}
    base = daemon.config.server.public_url
    http = requests.Session()
    for u, cert in sorted(certs.items()):
        link = http.get(f"{base}/certificates/{cert.code}", timeout=30, allow_redirects=False)
        assert link.status_code == 302, (u, link.status_code)
        pdf = http.get(link.headers["Location"], timeout=30)
        assert f"Zed{u}X" in PdfReader(BytesIO(pdf.content)).pages[0].extract_text(), u


def test_the_daemon_killed_after_the_queue_took_its_batches_mails_nobody_twice(
    tmp_path, worker, start_daemon
):
    """SIGKILL between the Worker accepting the batches and the ledger recording it: the
    Worker delivers (its reports cannot reach a dead daemon and are retried); the daemon
    restarted hands the same batches over again; the Worker's record absorbs the copies."""
    import subprocess
    import sys

    from sidecar.runtime import Runtime

    from .conftest import cli_env

    path = write_config(tmp_path, worker)
    config = load(path)
    rt = Runtime(config)
    rt.ready_db()
    with rt.db.connection_context():
        job_id = make_job(rt.clock(), 60)
    rt.close()
    crashed = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "run"], stdin=subprocess.DEVNULL,
        env=cli_env(path, {"MOODLE_OFFLOAD_CRASH_AT": "cloud.accepted"}),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert crashed.wait(timeout=120) == -9  # killed at the crash point
    wait_until(lambda: sum(emails_by_learner(worker, 60).values()) == 60, 60,
               "the Worker delivered the batches the dead daemon handed over")  # fmt: skip
    rt = Runtime(config)
    with rt.db.connection_context():  # the ledger never recorded the hand-over
        assert {b.status for b in Batch.select().where(Batch.job == job_id)} == {
            BatchStatus.PENDING}  # fmt: skip
    start_daemon(path)

    def all_sent() -> bool:
        with rt.db.connection_context():
            got = {r.status for r in Recipient.select().where(Recipient.job == job_id)}
        return got == {R.SENT}

    wait_until(all_sent, 120, "every recipient reported sent after the restart")
    time.sleep(1.0)
    assert emails_by_learner(worker, 60) == {u: 1 for u in range(1, 61)}
    rt.close()
