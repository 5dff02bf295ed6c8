"""The sidecar's Cloudflare Queues client: the REST API (against tests/cloudflare_api.py, a
stand-in on 127.0.0.1 for the account API nothing offline serves), the Worker's /enqueue
as a signed request (a stand-in here; the real Worker in test_cloudflare_offload.py), the
pull consumer's decoding, and R2 through its S3 API (moto in server mode)."""

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
import requests

from providers.base import MessageOverLimit, ProviderError, SubmitInterrupted
from providers.cloudflare.queues import (
    MAX_MESSAGE_BYTES,
    CloudflareSettings,
    PullReader,
    QueueMetricsReader,
    QueueSubmitter,
)
from providers.cloudflare.r2 import R2Store
from providers.message import build_batch_messages, decode_body
from providers.signing import verify
from tests.cloudflare_api import ACCOUNT, TOKEN, CloudflareApi
from tests.motoserver import free_port
from tests.providers.test_aws_submit import header, people


@pytest.fixture
def api():
    with CloudflareApi() as server:
        yield server


def settings(api: CloudflareApi, queue_id: str, **over) -> CloudflareSettings:
    return CloudflareSettings(account_id=ACCOUNT, queue_id=queue_id, api_token=TOKEN,
                              api_base=api.url, attempts=4, backoff_max=0.05, **over)  # fmt: skip


def batches(count, *, recipients=1, text="hello") -> dict[str, list[bytes]]:
    out = {}
    for _ in range(count):
        batch_id = str(uuid.uuid4())
        out[f"{batch_id}-r0"] = build_batch_messages(
            header(batch_id), people(recipients, text), max_bytes=MAX_MESSAGE_BYTES,
            compress=False,
        )  # fmt: skip
    return out


def test_the_rest_api_takes_every_part_in_requests_of_100_messages_and_256_kb(api):
    qid = api.queue("offload-jobs")
    submitter = QueueSubmitter(settings(api, qid), sleep=lambda s: None)
    sent = batches(150) | batches(6, recipients=40, text="x" * 1500)  # 6 bodies of ~90 KB
    outcomes = submitter.submit(sent)
    assert all(o.queued for o in outcomes.values())
    on_queue = api.bodies(qid)
    assert len(on_queue) == sum(len(b) for b in sent.values())
    assert sorted(m["batch_id"] for m in on_queue) == sorted(
        decode_body(b)["batch_id"] for bodies in sent.values() for b in bodies)  # fmt: skip
    calls = [p for m, p in api.requests if p.endswith("/messages/batch")]
    assert len(calls) >= 5  # 150 small ones in 2, the 90 KB ones two by two
    submitter.close()


def test_throttling_and_5xx_are_retried_and_a_refusal_fails_only_its_messages(api):
    qid = api.queue("offload-jobs")
    waits = []
    submitter = QueueSubmitter(settings(api, qid), sleep=waits.append)
    api.failures = [(429, {"Retry-After": "0"}), (503, {})]
    outcomes = submitter.submit(batches(3))
    assert all(o.queued for o in outcomes.values()) and len(api.bodies(qid)) == 3
    assert waits[0] == 0 and len(waits) == 2  # Retry-After honoured, then backoff

    wrong = QueueSubmitter(settings(api, uuid.uuid4().hex), sleep=lambda s: None)
    refused = wrong.submit(batches(2))  # no such queue: 404, not retried
    assert not any(o.queued for o in refused.values())
    assert all("Queue not found" in o.error for o in refused.values())
    with pytest.raises(MessageOverLimit):
        submitter.submit({"k": [b"{" + b" " * MAX_MESSAGE_BYTES + b"}"]})


def test_an_unreachable_api_interrupts_with_what_went_in_and_a_bad_token_says_so(api):
    qid = api.queue("offload-jobs")
    submitter = QueueSubmitter(settings(api, qid), sleep=lambda s: None)
    first, rest = batches(100), batches(100)
    # a first submission goes in; then the API answers 503 past the retries
    outcomes = submitter.submit(first)
    assert all(o.queued for o in outcomes.values())
    api.failures = [(503, {})] * 10
    with pytest.raises(SubmitInterrupted) as caught:
        submitter.submit(rest)
    assert not any(o.queued for o in caught.value.outcomes.values())
    assert len(api.bodies(qid)) == 100
    api.failures = []
    wrong = CloudflareSettings(account_id=ACCOUNT, queue_id=qid, api_token="wrong",
                               api_base=api.url)  # fmt: skip
    with pytest.raises(ProviderError, match="API token"):
        QueueSubmitter(wrong).queue_info()


def test_the_backlog_counts_messages_not_yet_acknowledged_leased_ones_too(api):
    qid, dlq = api.queue("offload-jobs"), api.queue("offload-dlq")
    reader = QueueMetricsReader(settings(api, qid), sleep=lambda s: None)
    empty = reader.metrics(dlq)
    assert (empty.backlog_count, empty.backlog_bytes, empty.oldest_message_timestamp_ms) == (
        0, 0, None)  # fmt: skip
    for n in range(4):
        api.put(qid, {"batch": n})
    pulling = PullReader(settings(api, qid), qid, batch_size=3, sleep=lambda s: None)
    pulled = pulling.receive()
    assert len(pulled) == 3
    held = reader.metrics(qid)  # 1 waiting + 3 leased, none acknowledged
    assert held.backlog_count == 4
    assert held.backlog_bytes == 4 * len(b'{"batch":0}')
    assert held.oldest_message_timestamp_ms is not None
    pulling.delete([p.receipt for p in pulled[:2]])
    assert reader.metrics(qid).backlog_count == 2
    assert reader.metrics(dlq).backlog_count == 0

    api.failures = [(503, {})]  # retried like every call
    assert reader.metrics(qid).backlog_count == 2
    with pytest.raises(ProviderError, match="Queue not found"):
        reader.metrics(uuid.uuid4().hex)
    wrong = CloudflareSettings(account_id=ACCOUNT, api_token="wrong", api_base=api.url)
    with pytest.raises(ProviderError, match="API token") as caught:
        QueueMetricsReader(wrong).metrics(qid)
    assert "wrong" not in str(caught.value)
    with pytest.raises(ProviderError, match="account_id and auth_token"):
        QueueMetricsReader(CloudflareSettings(worker_url="http://127.0.0.1:9"))
    pulling.close()
    reader.close()


class FakeWorker:
    """POST /enqueue as the Worker answers it: the signature checked, then the first
    `take` messages enqueued and a 503 saying so, then everything."""

    def __init__(self, secret: str, take: int | None = None):
        self.secret, self.take, self.enqueued, self.requests = secret, take, [], 0
        worker = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                worker.requests += 1
                if not verify([worker.secret], raw, self.headers.get("X-Signature")):
                    return self._send(401, {"error": "missing or wrong X-Signature"})
                body = json.loads(raw)
                messages = body["messages"]
                if worker.take is not None:
                    n, worker.take = worker.take, None
                    worker.enqueued += messages[:n]
                    return self._send(503, {"error": "queue: overloaded", "enqueued": n})
                worker.enqueued += messages
                return self._send(200, {"enqueued": len(messages), "sends": 1})

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_the_worker_route_signs_and_resends_only_what_the_queue_did_not_take():
    worker = FakeWorker("s3cret", take=2)
    try:
        route = CloudflareSettings(worker_url=worker.url, secret="s3cret", backoff_max=0.01)
        submitter = QueueSubmitter(route, sleep=lambda s: None)
        sent = batches(5)
        outcomes = submitter.submit(sent)
        assert all(o.queued for o in outcomes.values())
        ids = [m["batch_id"] for m in worker.enqueued]
        assert len(ids) == len(set(ids)) == 5  # the two taken first were not sent again
        assert worker.requests == 2
        wrong = QueueSubmitter(CloudflareSettings(worker_url=worker.url, secret="other"))
        refused = wrong.submit(batches(1))
        assert "X-Signature" in next(iter(refused.values())).error
    finally:
        worker.close()


def test_pulled_reports_come_back_as_the_signed_body_and_its_signature(api):
    qid = api.queue("offload-results")
    report = json.dumps({"schema": "offload.callback.v1", "callback_id": "c1"})
    api.put(qid, json.dumps({"signature": "ab" * 32, "body": report}), "text")
    api.put(qid, {"signature": "cd" * 32, "body": report})  # json: base64 on the wire
    reader = PullReader(settings(api, qid), qid, batch_size=10)
    got = reader.receive()
    assert [(m.body, m.attributes["signature"]) for m in got] == [
        (report.encode(), "ab" * 32), (report.encode(), "cd" * 32)]  # fmt: skip
    reader.delete([m.receipt for m in got])
    assert len(api.queues[qid].acked) == 2 and reader.receive() == []
    api.put(qid, {"job_id": "j", "batch_id": "b", "recipients": []})  # a dead letter
    (dead,) = reader.receive()
    assert json.loads(dead.body)["batch_id"] == "b" and dead.attributes == {}


def test_r2_stores_pdfs_and_signs_links_through_the_s3_api(moto):
    bucket = f"certs-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto, region_name="us-east-1").create_bucket(Bucket=bucket)
    store = R2Store(bucket, moto, "testing", "testing")
    store.put("certificates/job/7.pdf", b"%PDF-1.4 seven")
    assert "reachable" in store.check()
    url = store.presign("certificates/job/7.pdf", 600, "certificate-ABC.pdf")
    assert "X-Amz-Signature=" in url and "/auto/s3/aws4_request" in requests.utils.unquote(url)
    assert requests.get(url, timeout=10).content == b"%PDF-1.4 seven"
    body = store.open("certificates/job/7.pdf")
    assert body.read() == b"%PDF-1.4 seven"
    assert store.open("certificates/job/8.pdf") is None
    store.close()
