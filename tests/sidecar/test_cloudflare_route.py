"""The cloudflare route, sidecar side, on every backend: batches handed to the queue
through the Queues REST API (tests/cloudflare_api.py, a stand-in on 127.0.0.1),
certificates rendered here and stored in "R2" (moto's S3 API in server mode) before their
batch is queued, reports pulled from the results queue, dead letters failed with the
reason and sent again by `jobs retry`, and check/health naming what to fix.

The Worker's side is played by the test here; the real Worker, run by workerd, is in
tests/e2e/test_cloudflare_worker_route.py."""

import json
import time
import uuid
from datetime import UTC
from io import BytesIO

import boto3
import pytest
import requests
from pypdf import PdfReader

from providers import signing
from providers.message import decode_body, make_callback
from sidecar import jobs
from sidecar.checks import run_checks
from sidecar.cloudpoll import poll_dead_letters, poll_results
from sidecar.config import Config
from sidecar.db.models import Batch, Certificate, Job, Recipient
from sidecar.health import Health
from sidecar.runtime import Runtime
from sidecar.status import BatchStatus, JobStatus
from sidecar.status import RecipientStatus as R
from tests.cloudflare_api import ACCOUNT, TOKEN, CloudflareApi
from tests.motoserver import free_port
from tests.sidecar.test_cloud import aws  # noqa: F401 - the moto stack fixture

SECRET = "cf-route-secret"
SENDER = "Academy <noreply@academy.example>"


@pytest.fixture
def cf(moto):
    """The stand-in Queues API with a jobs queue, a results queue and a DLQ, and a bucket
    in moto playing R2's S3 API."""
    bucket = f"certs-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    with CloudflareApi() as api:
        yield {
            "api": api, "jobs": api.queue("offload-jobs"), "results": api.queue("results"),
            "dlq": api.queue("offload-dlq"), "bucket": bucket, "endpoint": moto, "s3": s3,
        }  # fmt: skip
    s3.close()


def make_config(db_url, cf, tmp_path, **over) -> Config:
    provider = {
        "account_id": ACCOUNT, "auth_token": TOKEN, "api_base": cf["api"].url,
        "queue_id": cf["jobs"], "results_queue_id": cf["results"], "dlq_id": cf["dlq"],
        "r2_bucket": cf["bucket"], "r2_endpoint": cf["endpoint"],
        "r2_access_key_id": "testing", "r2_secret_access_key": "testing", "from": SENDER,
    }  # fmt: skip
    provider.update(over)
    return Config.model_validate({
        "database": {"url": db_url},
        "server": {"public_url": "https://sidecar.example.org"},
        "security": {"callback_secrets": [SECRET]},
        "offload": {"enabled": True, "provider": "cloudflare", "job_batch_size": 50},
        "providers": {"cloudflare": {k: v for k, v in provider.items() if v is not None},
                      "local": {"certificate_dir": str(tmp_path / "certs"),
                                "maildir": str(tmp_path / "mail")}},
    })  # fmt: skip


@pytest.fixture
def rt(db, db_url, cf, tmp_path, clock):
    runtime = Runtime(make_config(db_url, cf, tmp_path), clock=clock)
    yield runtime
    runtime.close()


def make_job(clock, n, *, certificate=False):
    people = [jobs.RecipientIn(u, f"learner{u}@example.com", "Ελένη", f"Learner{u}")
              for u in range(1, n + 1)]  # fmt: skip
    spec = jobs.JobSpec(
        type="certificate" if certificate else "send_reminder",
        template_id="completion" if certificate else "reminder", source="test",
        route="cloudflare", route_reason="test: forced cloud", courseid=101,
        actions=jobs.Actions(email=True, certificate=certificate),
        template_data={"course": {"fullname": "Sécurité 101", "shortname": "SEC101",
                                  "url": "https://moodle.example.org/course/view.php?id=101"}},
    )  # fmt: skip
    return jobs.create_job(spec, people, batch_size=50, now=clock()).job_id


def on_queue(cf, queue="jobs") -> list[dict]:
    """The batch messages on a queue, decoded (a large one travels gzip-enveloped)."""
    return [decode_body(json.dumps(b).encode()) for b in cf["api"].bodies(cf[queue])]


def statuses(job_id):
    return {r.userid: r.status for r in Recipient.select().where(Recipient.job == job_id)}


def report(cf, clock, body, userids, status="sent", secret=SECRET):
    """What the Worker does with REPORT_MODE = "queue": the signed report on the results
    queue as {"signature", "body"}."""
    updates = [{"userid": u, "status": status} for u in userids]
    stamp = int(clock().replace(tzinfo=UTC).timestamp())
    raw = make_callback(body["job_id"], body["batch_id"], updates, timestamp=stamp)
    cf["api"].put(cf["results"], {"signature": signing.sign(secret, raw), "body": raw.decode()})


def test_batches_go_to_the_queue_once_rendered_and_reports_come_back_by_pull(rt, cf, clock):
    job_id = make_job(clock, 120)
    assert rt.cloudflare.submitter.run_once() == 3
    assert rt.cloudflare.submitter.run_once() == 0  # nothing is handed over twice
    bodies = on_queue(cf)
    assert sorted(b["batch_index"] for b in bodies) == [0, 1, 2]
    people = {p["userid"]: p for b in bodies for p in b["recipients"]}
    assert sorted(people) == list(range(1, 121))
    assert "Ελένη" in people[1]["html"] and "Sécurité 101" in people[1]["subject"]
    assert bodies[0]["email"]["from"] == SENDER
    assert bodies[0]["callback"] == {"url": "https://sidecar.example.org/callback",
                                     "mode": "queue"}  # fmt: skip
    assert set(statuses(job_id).values()) == {R.QUEUED}
    assert Job.get_by_id(job_id).status == JobStatus.QUEUED

    report(cf, clock, bodies[0], [p["userid"] for p in bodies[0]["recipients"]])
    report(cf, clock, bodies[1], [1], secret="not-ours")  # rejected: stays on the queue
    reader = rt.cloudflare.reader(cf["results"])
    assert poll_results(reader, rt.callbacks, "queue") == 1
    done = statuses(job_id)
    assert sum(s == R.SENT for s in done.values()) == 50
    assert len(cf["api"].queues[cf["results"]].leased) == 1  # the forged one, not acked


def test_certificates_are_rendered_here_stored_in_r2_and_linked_through_the_sidecar(rt, cf, clock):
    job_id = make_job(clock, 3, certificate=True)
    assert rt.cloudflare.submitter.run_once() == 1
    (body,) = on_queue(cf)
    assert body["certificate"]["bucket"] == cf["bucket"]
    certs = {c.userid: c for c in Certificate.select().where(Certificate.job_id == job_id)}
    for p in body["recipients"]:
        assert p["certificate_html"] is None  # the Worker gets the stored PDF's key
        assert p["certificate_key"] == certs[p["userid"]].key
        assert f"https://sidecar.example.org/certificates/{certs[p['userid']].code}" in p["html"]
        pdf = cf["s3"].get_object(Bucket=cf["bucket"], Key=p["certificate_key"])["Body"].read()
        text = PdfReader(BytesIO(pdf)).pages[0].extract_text()
        assert "Ελένη" in text and certs[p["userid"]].code in text
    assert {c.storage for c in certs.values()} == {"r2"}
    from sidecar.daemon import Daemon

    daemon = Daemon(rt.config)
    daemon.runtime = rt
    link = daemon._certificate(certs[1].code)
    assert link.status_code == 302
    assert requests.get(link.headers["Location"], timeout=10).content.startswith(b"%PDF")


def test_without_an_r2_bucket_a_certificate_batch_waits_and_says_why(
    db, db_url, cf, tmp_path, clock
):
    config = make_config(db_url, cf, tmp_path, r2_bucket=None, r2_endpoint=None,
                         r2_access_key_id=None, r2_secret_access_key=None)  # fmt: skip
    runtime = Runtime(config, clock=clock)
    try:
        job_id = make_job(clock, 2, certificate=True)
        from providers.base import ProviderError

        with pytest.raises(ProviderError, match="no R2 bucket"):
            runtime.cloudflare.submitter.run_once()
        assert on_queue(cf) == []
        assert {b.status for b in Batch.select().where(Batch.job == job_id)} == {
            BatchStatus.PENDING}  # fmt: skip
        results = {r.name: r for r in run_checks(config)}
        assert not results["cloudflare certificates bucket"].ok
        assert "certificate_mode" in results["cloudflare certificates bucket"].detail
    finally:
        runtime.close()


def test_a_dead_lettered_batch_fails_its_recipients_and_retry_queues_it_again(rt, cf, clock):
    job_id = make_job(clock, 50)
    rt.cloudflare.submitter.run_once()
    (body,) = on_queue(cf)
    cf["api"].put(cf["dlq"], cf["api"].bodies(cf["jobs"])[0])  # as the queue moves it
    assert poll_dead_letters(rt.cloudflare.reader(cf["dlq"]), clock) == 1
    after = {r.userid: r for r in Recipient.select().where(Recipient.job == job_id)}
    assert {r.status for r in after.values()} == {R.FAILED}
    assert f"jobs retry {job_id}" in after[7].last_error
    assert jobs.retry_job(job_id, clock()) == 50
    assert rt.cloudflare.submitter.run_once() == 1
    resent = on_queue(cf)[-1]
    assert resent["batch_id"] == body["batch_id"] and resent["attempt"] == 1


def test_check_and_health_name_what_to_fix(db, db_url, cf, tmp_path, clock):
    good = make_config(db_url, cf, tmp_path)
    results = {r.name: r for r in run_checks(good)}
    assert results["cloudflare queue_id"].ok
    assert "offload-jobs" in results["cloudflare queue_id"].detail
    assert results["cloudflare dlq_id"].ok and results["cloudflare certificates bucket"].ok
    part = {p.name: p for p in Health(good).parts()}["cloudflare"]
    assert part.state == "ok" and "offload-jobs" in part.summary

    bad = make_config(db_url, cf, tmp_path, queue_id=uuid.uuid4().hex, auth_token="wrong")
    results = {r.name: r for r in run_checks(bad)}
    assert not results["cloudflare queue_id"].ok
    assert "auth_token" in results["cloudflare queue_id"].detail
    part = {p.name: p for p in Health(bad).parts()}["cloudflare"]
    assert part.state == "fail" and "API token" in part.summary


def test_a_config_without_a_way_in_names_the_keys(tmp_path):
    with pytest.raises(Exception) as caught:
        Config.model_validate({"providers": {"cloudflare": {"r2_bucket": "certs"}}})
    text = str(caught.value)
    assert "providers.cloudflare" in text and "worker_url" in text and "queue_id" in text


# --- routing: each company to its own cloud, in one run -----------------------------------


def test_a_cloudflare_company_and_an_aws_company_go_each_to_their_own_cloud_in_one_run(
    db,
    db_url,
    cf,
    aws,  # noqa: F811
    tmp_path,
):
    from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
    from sidecar import runs, sync
    from sidecar.moodle import open_client
    from tests.conftest import Clock, schedule_row
    from tests.sidecar.test_cloud import SECRET as AWS_SECRET
    from tests.sidecar.test_cloud import make_config as aws_config
    from tests.sidecar.test_runs import START

    site = generate_site(SiteSpec(seed=11, learners=40, courses=2, companies=2))
    aws_co, cf_co = sorted(site.companies)
    # IOMAD's cloud settings as Moodle serves them: one company on AWS, one on Cloudflare
    site.cloud_settings[:] = [
        {"companyid": aws_co, "enabled": 1, "email_provider": "AWS", "threshold": 1},
        {"companyid": cf_co, "enabled": 1, "email_provider": "CLOUDFLARE", "threshold": 1},
    ]
    site.schedules[:] = [
        schedule_row(site.main_course_id, id=1, name="AWS co", companyid=aws_co),
        schedule_row(site.main_course_id, id=2, name="CF co", companyid=cf_co),
    ]
    with SandboxServer(site) as server:
        both = aws_config(db_url, aws, tmp_path).model_dump(by_alias=True, mode="json")
        both["providers"]["cloudflare"] = make_config(db_url, cf, tmp_path).model_dump(
            by_alias=True, mode="json")["providers"]["cloudflare"]  # fmt: skip
        both["providers"]["cloudflare"]["auth_token"] = TOKEN
        both["providers"]["cloudflare"]["r2_secret_access_key"] = "testing"
        both["security"]["callback_secrets"] = [AWS_SECRET]
        both["moodle"] = {"url": server.url, "token": site.token, "retry_attempts": 1}
        both["offload"]["threshold"] = 1000  # the site's own threshold: local
        both["schedules"] = {"timezone": "Europe/London"}
        config = Config.model_validate(both)
        clock = Clock(START)
        rt = Runtime(config, clock=clock)
        try:
            results = sync.sync_all(config, lambda: open_client(config), clock())
            assert not any(r.error for r in results), results
            clock.now = START.replace(hour=9, minute=0, second=5)
            fired = runs.Runner(rt).tick()
            assert sorted(r.status for r in fired) == ["done", "done"]
            by_company = {j.tenant_id: j for j in Job.select()}
            assert by_company[aws_co].route == "aws" and by_company[cf_co].route == "cloudflare"
            assert f"company {cf_co}" in by_company[cf_co].route_reason
            assert rt.aws.submitter.run_once() >= 1
            assert rt.cloudflare.submitter.run_once() >= 1
            on_cf = {b["job_id"] for b in on_queue(cf)}
            assert on_cf == {by_company[cf_co].id}
            from tests.sidecar.test_cloud import receive_all

            on_sqs = {decode_body(m["Body"].encode())["job_id"]
                      for m in receive_all(aws["sqs"], aws["jobs"])}  # fmt: skip
            assert on_sqs == {by_company[aws_co].id}
        finally:
            rt.close()


def test_aws_unreachable_does_not_hold_back_the_cloudflare_batches(db, db_url, cf, tmp_path):
    from sidecar.daemon import Daemon

    raw = make_config(db_url, cf, tmp_path).model_dump(by_alias=True, mode="json")
    raw["providers"]["cloudflare"].update(auth_token=TOKEN, r2_secret_access_key="testing")
    raw["providers"]["aws"] = {  # a queue nothing answers for: every submission fails
        "region": "eu-west-1", "s3_bucket": "none", "ses_from": SENDER,
        "sqs_queue_url": f"http://127.0.0.1:{free_port()}/123456789012/gone",
        "endpoint_url": f"http://127.0.0.1:{free_port()}",
    }  # fmt: skip
    raw["server"]["listen"] = f"127.0.0.1:{free_port()}"
    config = Config.model_validate(raw)
    daemon = Daemon(config, poll_interval=0.1)
    rt = daemon.runtime
    with rt.db.connection_context():
        jobs.create_job(jobs.JobSpec(type="send_reminder", template_id="reminder",
                                     source="test", route="aws", route_reason="test"),
                        [jobs.RecipientIn(9, "x@example.com", "X", "Y")], batch_size=50,
                        now=rt.clock())  # fmt: skip
        job_id = make_job(rt.clock, 30)
    daemon.start(schedules=False)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(on_queue(cf)) < 1:
            time.sleep(0.1)
        assert [b["job_id"] for b in on_queue(cf)] == [job_id]
    finally:
        daemon.shutdown()
