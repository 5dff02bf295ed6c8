"""The cloud's queue depths and SES quota in a real daemon's `/metrics` (sidecar.cloudgauges):
AWS through moto in server mode, Cloudflare through the stand-in Queues API
(tests/cloudflare_api.py), and a provider that cannot be reached or does not answer."""

import logging
import socket
import threading
import time

import boto3
import pytest

from sidecar.metrics import REGISTRY
from tests.cloudflare_api import ACCOUNT, TOKEN, CloudflareApi
from tests.e2e.conftest import free_port

from .test_cloud import REGION, SENDER, aws  # noqa: F401 - aws: the moto stack fixture
from .test_metrics import daemon, scrape, sink, value  # noqa: F401 - daemon, sink: fixtures

DEPTH = "moodle_offload_queue_depth"
ERRORS = "moodle_offload_cloud_gauge_errors_total"
SES = ("moodle_offload_ses_quota_max_24h", "moodle_offload_ses_quota_sent_24h",
       "moodle_offload_ses_max_send_rate")  # fmt: skip


def aws_toml(aws_stack, **over) -> str:  # noqa: F811
    keys = {"region": REGION, "sqs_queue_url": aws_stack["jobs"], "dlq_url": aws_stack["dlq"],
            "s3_bucket": aws_stack["bucket"], "ses_from": SENDER,
            "endpoint_url": aws_stack["endpoint"], **over}  # fmt: skip
    return "[providers.aws]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items())


def cf_toml(api_base: str, **queues) -> str:
    keys = {"account_id": ACCOUNT, "auth_token": TOKEN, "api_base": api_base, **queues}
    return "[providers.cloudflare]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items())


def scrape_until(url: str, ready, seconds: float = 60.0) -> dict:
    """Scrape until `ready(samples)`; the last scrape's samples."""
    deadline = time.monotonic() + seconds
    while True:
        samples = scrape(url)
        if ready(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"/metrics never showed what was awaited: {sorted(samples)}")
        time.sleep(0.1)


def has(name: str, **labels):
    return lambda samples: (name, frozenset(labels.items())) in samples


def test_sqs_depths_in_flight_included_and_the_ses_quota(db_url, daemon, sink, aws, moto):  # noqa: F811
    sqs = aws["sqs"]
    for i in range(5):
        sqs.send_message(QueueUrl=aws["jobs"], MessageBody=f"batch {i}")
    sqs.receive_message(QueueUrl=aws["jobs"], MaxNumberOfMessages=2, VisibilityTimeout=600)
    for i in range(3):  # held by "someone else", so the daemon's DLQ poll cannot take them
        sqs.send_message(QueueUrl=aws["dlq"], MessageBody=f"dead {i}")
    held = sqs.receive_message(QueueUrl=aws["dlq"], MaxNumberOfMessages=3, VisibilityTimeout=600)
    assert len(held["Messages"]) == 3
    ses = boto3.client("ses", region_name=REGION, endpoint_url=moto)
    hello = {"Subject": {"Data": "hi"}, "Body": {"Text": {"Data": "hi"}}}
    ses.send_email(Source=SENDER, Destination={"ToAddresses": ["learner@example.org"]},
                   Message=hello)  # fmt: skip
    quota = ses.get_send_quota()
    ses.close()

    failed_before = REGISTRY.get_sample_value(ERRORS, {"provider": "aws"}) or 0
    d = daemon(db_url, sink.port, aws_toml(aws))
    samples = scrape_until(d.http.url, lambda s: has(DEPTH, provider="aws", queue="jobs")(s)
                           and has(DEPTH, provider="aws", queue="dead_letter")(s)
                           and has("moodle_offload_ses_quota_max_24h")(s))  # fmt: skip
    assert value(samples, DEPTH, provider="aws", queue="jobs") == 5  # 3 waiting, 2 in flight
    assert value(samples, DEPTH, provider="aws", queue="dead_letter") == 3
    assert value(samples, "moodle_offload_ses_quota_max_24h") == quota["Max24HourSend"]
    assert value(samples, "moodle_offload_ses_quota_max_24h") == 1_000_000  # tests.motoserver
    assert value(samples, "moodle_offload_ses_max_send_rate") == 10_000
    sent = value(samples, "moodle_offload_ses_quota_sent_24h")
    assert sent == quota["SentLast24Hours"] and sent >= 1
    assert not any(labels and dict(labels).get("provider") == "cloudflare"
                   for name, labels in samples if name == DEPTH)  # fmt: skip
    assert value(samples, ERRORS, provider="aws") == failed_before  # (the process's counter)


@pytest.fixture
def cf_api():
    with CloudflareApi() as api:
        yield api


def test_cloudflare_backlogs_of_the_jobs_queue_and_the_dlq(db_url, daemon, sink, cf_api):  # noqa: F811
    jobs, dlq = cf_api.queue("offload-jobs"), cf_api.queue("offload-dlq")
    for n in range(4):
        cf_api.put(jobs, {"batch": n})
    for n in range(2):
        cf_api.put(dlq, {"dead": n})
    # leased by "someone else" (not acknowledged: still backlog), so the daemon's DLQ
    # pull finds nothing to take
    cf_api.queues[dlq].leased = {f"lease{n}": m for n, m in enumerate(cf_api.queues[dlq].messages)}
    cf_api.queues[dlq].messages = []

    d = daemon(db_url, sink.port, cf_toml(cf_api.url, queue_id=jobs, dlq_id=dlq))
    both = (has(DEPTH, provider="cloudflare", queue="jobs"),
            has(DEPTH, provider="cloudflare", queue="dead_letter"))  # fmt: skip
    samples = scrape_until(d.http.url, lambda s: all(h(s) for h in both))
    assert value(samples, DEPTH, provider="cloudflare", queue="jobs") == 4
    assert value(samples, DEPTH, provider="cloudflare", queue="dead_letter") == 2
    assert not any(name in SES for name, _ in samples)
    assert ("GET", f"/client/v4/accounts/{ACCOUNT}/queues/{jobs}/metrics") in cf_api.requests


def test_unreachable_clouds_counted_logged_once(db_url, daemon, sink, caplog, aws, moto):  # noqa: F811
    nowhere = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.INFO, logger="sidecar.cloudgauges")
    extra = aws_toml(aws, endpoint_url=nowhere) + cf_toml(nowhere, queue_id="a" * 32,
                                                          dlq_id="b" * 32)  # fmt: skip
    # the counter is the process's own: earlier tests' failures are in it
    before = {p: REGISTRY.get_sample_value(ERRORS, {"provider": p}) or 0
              for p in ("aws", "cloudflare")}  # fmt: skip
    d = daemon(db_url, sink.port, extra, gauges_every=0.05)
    # three readings for each cloud failing, each at least twice
    samples = scrape_until(d.http.url,
                           lambda s: value(s, ERRORS, provider="aws") >= before["aws"] + 6
                           and value(s, ERRORS, provider="cloudflare")
                           >= before["cloudflare"] + 4)  # fmt: skip
    assert value(samples, "moodle_offload_ledger_up") == 1
    assert not any(name == DEPTH or name in SES
                   for name, _ in samples)  # fmt: skip
    warned = [r.getMessage() for r in caplog.records
              if r.name == "sidecar.cloudgauges" and r.levelno == logging.WARNING]  # fmt: skip
    assert sorted(w.split(" could not")[0] for w in warned) == [
        "metrics: the aws SES quota", "metrics: the aws dead_letter queue",
        "metrics: the aws jobs queue", "metrics: the cloudflare dead_letter queue",
        "metrics: the cloudflare jobs queue",
    ]  # fmt: skip
    assert all(TOKEN not in w and "testing" not in w for w in warned)


class Hanging:
    """A server that takes one connection, reads the request and never answers."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conn: socket.socket | None = None
        self.asked = threading.Event()
        threading.Thread(target=self._take, daemon=True).start()

    def _take(self):
        self.conn, _ = self.sock.accept()
        got = b""
        while b"\r\n\r\n" not in got:
            got += self.conn.recv(4096)
        self.asked.set()

    def still_waiting(self) -> bool:
        """Whether the client still holds its request open (not given up, not closed)."""
        self.conn.setblocking(False)
        try:
            return self.conn.recv(1) != b""
        except BlockingIOError:
            return True

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.sock.close()


def test_a_scrape_does_not_wait_for_a_provider_that_does_not_answer(db_url, daemon, sink):  # noqa: F811
    hanging = Hanging()
    try:
        d = daemon(db_url, sink.port, cf_toml(hanging.url, queue_id="c" * 32))
        assert hanging.asked.wait(60)
        samples = scrape(d.http.url)
        assert hanging.still_waiting()  # the reading is in flight, the scrape answered
        assert value(samples, "moodle_offload_ledger_up") == 1
        assert not any(name == DEPTH for name, _ in samples)
    finally:
        hanging.close()
