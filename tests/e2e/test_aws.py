"""AWS end to end: a real `moodle-offload run` process, moto in server mode, the Lambda worker.

sidecar (daemon) → SQS → worker (invoked with Lambda's SQS event shape, batch by batch)
→ SES (moto's record of sent mail) and S3 → results queue → the daemon's ledger; and the
certificate links served by the daemon, followed to S3.
"""

import io
import json
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import boto3
import pytest
import requests
from pypdf import PdfReader

from providers.aws.worker.handler import Worker
from providers.aws.worker.settings import WorkerSettings
from providers.message import decode_body
from sidecar import jobs
from sidecar.db.connect import open_database
from sidecar.db.models import Batch, Certificate, Recipient
from sidecar.status import BatchStatus
from sidecar.status import RecipientStatus as R
from tests.e2e.conftest import cli, free_port
from tests.lambda_harness import drain_once
from tests.motoserver import ses_sent

REGION = "eu-west-1"
SECRET = "e2e-callback-secret"
SENDER = "noreply@academy.example"
NAMES = [("Łukasz", "Żółć"), ("Дмитрий", "Иванов"), ("Ελένη", "Παπαδοπούλου"),
         ("Siobhán", "O'Brien"), ("José", "Núñez")]  # fmt: skip


@pytest.fixture
def stack(moto, monkeypatch):
    """Job queue (+ DLQ after 2 receives), results queue, idempotency table, bucket, sender.

    AWS_ENDPOINT_URL points every boto3 client without an endpoint (the worker's) at moto.
    """
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    kw = dict(region_name=REGION, endpoint_url=moto)
    sqs = boto3.client("sqs", **kw)
    tag = uuid.uuid4().hex[:10]

    def queue(name, **attrs):
        return sqs.create_queue(QueueName=f"{name}-{tag}", Attributes=attrs)["QueueUrl"]

    dlq = queue("dlq")
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]
    redrive = json.dumps({"deadLetterTargetArn": arn["QueueArn"], "maxReceiveCount": 2})
    s = {
        "endpoint": moto, "tag": tag, "sqs": sqs, "dlq": dlq,
        "jobs": queue("jobs", RedrivePolicy=redrive),
        "results": queue("results"), "bucket": f"certs-{tag}", "table": f"records-{tag}",
    }  # fmt: skip
    boto3.client("s3", **kw).create_bucket(
        Bucket=s["bucket"], CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    boto3.client("dynamodb", **kw).create_table(
        TableName=s["table"], BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )  # fmt: skip
    boto3.client("ses", **kw).verify_email_identity(EmailAddress=SENDER)
    yield s
    sqs.close()


def write_aws_config(tmp_path: Path, stack: dict, *, queue: str | None = None) -> tuple[Path, str]:
    """The daemon's config pointing at moto; returns it and the daemon's public URL."""
    port = free_port()
    path = tmp_path / "config.toml"
    path.write_text(f"""
[database]
url = "sqlite:///{tmp_path}/offload.db"
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
[security]
callback_secrets = ["{SECRET}"]
[offload]
enabled = true
provider = "aws"
[providers.aws]
region = "{REGION}"
sqs_queue_url = "{queue or stack["jobs"]}"
dlq_url = "{stack["dlq"]}"
results_queue_url = "{stack["results"]}"
results_wait_seconds = 1
dlq_poll_interval = 1
s3_bucket = "{stack["bucket"]}"
ses_from = "{SENDER}"
endpoint_url = "{stack["endpoint"]}"
[providers.local]
certificate_dir = "{tmp_path}/certificates"
maildir = "{tmp_path}/mail"
""")
    return path, f"http://127.0.0.1:{port}"


def worker(stack) -> Worker:
    return Worker(WorkerSettings(idempotency_table=stack["table"], callback_secret=SECRET))


def make_job(tmp_path, stack, n, *, certificate=False, batch_size=50) -> str:
    """A cloud job committed straight into the daemon's ledger (as a schedule run would)."""
    db = open_database(f"sqlite:///{tmp_path}/offload.db")
    people = [
        jobs.RecipientIn(u, f"learner{u}@{stack['tag']}.example", *NAMES[u % len(NAMES)])
        for u in range(1, n + 1)
    ]
    spec = jobs.JobSpec(
        type="certificate" if certificate else "send_reminder",
        template_id="completion" if certificate else "reminder", source="e2e",
        route="aws", route_reason="e2e: the cloud",
        actions=jobs.Actions(email=True, certificate=certificate), courseid=101,
        template_data={"course": {"fullname": "Sécurité 101", "shortname": "SEC101",
                                  "url": "https://moodle.example.org/course/view.php?id=101"}},
    )  # fmt: skip
    with db.connection_context():
        return jobs.create_job(spec, people, batch_size=batch_size, now=_now()).job_id


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(tzinfo=None)


def ledger(tmp_path, job_id) -> Counter:
    db = open_database(f"sqlite:///{tmp_path}/offload.db")
    with db.connection_context():
        return Counter(r.status for r in Recipient.select().where(Recipient.job == job_id))


def wait_for(what, predicate, timeout=240, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def run_worker_until(stack, done, *, timeout=300):
    """Invoke the worker batch by batch (5 messages an event) until `done()` holds."""
    w = worker(stack)
    deadline = time.monotonic() + timeout
    while not done():
        got, _ = drain_once(stack["sqs"], stack["jobs"], w.handle, batch_size=5)
        if not got:
            time.sleep(0.2)
        assert time.monotonic() < deadline, "the pipeline did not finish"


def sent_to(stack) -> Counter:
    """How many emails moto's SES accepted for each address of this test."""
    counts = Counter()
    for m in ses_sent(stack["endpoint"]):
        dest = m.get("destinations")
        addresses = dest.get("ToAddresses", []) if isinstance(dest, dict) else dest or []
        # (moto lists a raw message's recipient twice: the API's and the To header's)
        counts.update({a for a in addresses if a.endswith(f"@{stack['tag']}.example")})
    return counts


@pytest.mark.slow
def test_a_1000_recipient_email_and_certificate_job_goes_through_sqs_lambda_ses_and_s3(
    tmp_path, stack, start_daemon
):
    config, public_url = write_aws_config(tmp_path, stack)
    daemon = start_daemon(config)
    job_id = make_job(tmp_path, stack, 1000, certificate=True)

    run_worker_until(stack, lambda: ledger(tmp_path, job_id)[R.SENT] == 1000)

    assert ledger(tmp_path, job_id) == {R.SENT: 1000}
    mailed = sent_to(stack)
    assert len(mailed) == 1000 and set(mailed.values()) == {1}  # everyone once
    db = open_database(f"sqlite:///{tmp_path}/offload.db")
    with db.connection_context():
        certs = {c.userid: c for c in Certificate.select().where(Certificate.job_id == job_id)}
        keys = {r.userid: r.certificate_key for r in Recipient.select().where(
            Recipient.job == job_id)}  # fmt: skip
    assert len(certs) == 1000
    assert all(keys[u] == certs[u].key for u in keys)  # the worker reported each PDF's key
    session = requests.Session()
    for userid, cert in sorted(certs.items()):
        link = f"{public_url}/certificates/{cert.code}"
        first = session.get(link, allow_redirects=False, timeout=10)
        assert first.status_code == 302 and "X-Amz-Signature=" in first.headers["Location"]
        assert "X-Amz-Expires=3600" in first.headers["Location"]  # offload.presigned_url_ttl
        pdf = session.get(first.headers["Location"], timeout=10)
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
        first_name, last_name = NAMES[userid % len(NAMES)]
        assert first_name in text and last_name in text, userid
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0


@pytest.mark.slow
def test_a_poison_batch_lands_in_the_dlq_shows_in_the_ledger_and_retry_mails_nobody_twice(
    tmp_path, stack, start_daemon
):
    config, _ = write_aws_config(tmp_path, stack)
    # the worker cannot report (its results queue is gone): it sends, then fails the message
    stack["sqs"].delete_queue(QueueUrl=stack["results"])
    daemon = start_daemon(config)
    job_id = make_job(tmp_path, stack, 40, batch_size=20)

    run_worker_until(stack, lambda: ledger(tmp_path, job_id)[R.FAILED] == 40)

    shown = cli(config, "jobs", "show", job_id).stdout
    assert "failed 40" in shown and "dead-lettered" in shown
    assert len(sent_to(stack)) == 40  # the worker did send before it failed to report

    stack["sqs"].create_queue(QueueName=stack["results"].rsplit("/", 1)[1])
    assert "40 recipients re-queued" in cli(config, "jobs", "retry", job_id).stdout
    run_worker_until(stack, lambda: ledger(tmp_path, job_id)[R.SENT] == 40)

    assert ledger(tmp_path, job_id) == {R.SENT: 40}
    assert set(sent_to(stack).values()) == {1}  # the retry round mailed nobody again
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0


@pytest.mark.slow
def test_a_sidecar_killed_mid_submission_loses_no_batch_and_queues_none_twice(
    tmp_path, stack, start_daemon
):
    fifo = stack["sqs"].create_queue(
        QueueName=f"jobs-{stack['tag']}.fifo", Attributes={"FifoQueue": "true"}
    )["QueueUrl"]
    config, _ = write_aws_config(tmp_path, stack, queue=fifo)
    cli(config, "db", "upgrade")
    job_id = make_job(tmp_path, stack, 3000, batch_size=10)  # 300 batches
    db = open_database(f"sqlite:///{tmp_path}/offload.db")

    def queued():
        with db.connection_context():
            return (
                Batch.select()
                .where(Batch.job == job_id, Batch.status == BatchStatus.QUEUED)
                .count()
            )

    daemon = start_daemon(config)
    wait_for("the first batches", lambda: queued() >= 20, step=0.01)
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)
    before = queued()
    assert 0 < before < 300, "the kill came too late to test anything"

    daemon = start_daemon(config)
    wait_for("every batch queued", lambda: queued() == 300)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0

    seen = Counter()
    while True:
        msgs = (
            stack["sqs"]
            .receive_message(QueueUrl=fifo, MaxNumberOfMessages=10, VisibilityTimeout=300)
            .get("Messages", [])
        )
        if not msgs:
            break
        seen.update(decode_body(m["Body"].encode())["batch_id"] for m in msgs)
    with db.connection_context():
        ids = {b.id for b in Batch.select().where(Batch.job == job_id, Batch.route == "aws")}
        assert all(
            b.message_ids for b in Batch.select().where(Batch.job == job_id, Batch.route == "aws")
        )
    assert set(seen) == ids  # no batch lost
    assert set(seen.values()) == {1}  # none in the queue twice
