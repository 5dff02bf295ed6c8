"""The AWS Lambda worker against moto in server mode: SES, S3, DynamoDB, SQS, Secrets Manager.

Every test makes its own table, bucket and results queue, and sends to addresses in a
domain of its own, so it counts exactly the emails it caused in moto's shared SES.
"""

import email
import hashlib
import json
import logging
import threading
import time
import uuid
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from types import SimpleNamespace

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from pypdf import PdfReader

import providers.aws.worker.handler as handler_module
from providers.aws.worker import UNKNOWN_OUTCOME, Worker, WorkerConfigError, WorkerSettings
from providers.aws.worker.delivery import tag_value
from providers.message import build_batch_messages, decode_body, parse_callback
from providers.signing import verify
from tests.motoserver import free_port, ses_sent

REGION = "eu-west-1"
SECRET = "cb-secret-5c1d0e7a"
SENDER = "noreply@offload.example.org"
NAMES = [("Łukasz", "Żółć"), ("Дмитрий", "Иванов"), ("Ελένη", "Παπαδοπούλου"), ("Ana", "Muñoz")]


# --- resources -------------------------------------------------------------------------


class Aws(SimpleNamespace):
    """One test's AWS resources in moto and helpers to look at them."""

    def emails(self) -> list[dict]:
        """moto's sent messages to this test's domain, one entry per message."""
        out = []
        for m in ses_sent(self.url):
            dest = m["destinations"]
            addresses = set(dest.get("ToAddresses", []) if isinstance(dest, dict) else dest)
            out += [{**m, "to": a} for a in sorted(addresses) if a.endswith("@" + self.domain)]
        return out

    def sent_count(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in self.emails():
            counts[m["to"]] = counts.get(m["to"], 0) + 1
        return counts

    def callbacks(self) -> list:
        """The callbacks waiting in the results queue (removed), each signature verified."""
        out = []
        while True:
            resp = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            )
            if not resp.get("Messages"):
                return out
            for m in resp["Messages"]:
                body = m["Body"].encode()
                assert verify([SECRET], body, m["MessageAttributes"]["signature"]["StringValue"])
                out.append(parse_callback(body))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def record(self, batch_id: str, userid: int) -> dict | None:
        item = self.dynamodb.get_item(
            TableName=self.table, Key={"pk": {"S": f"{batch_id}#{userid}"}}, ConsistentRead=True
        ).get("Item")
        return None if item is None else {k: next(iter(v.values())) for k, v in item.items()}

    def address(self, userid: int) -> str:
        return f"learner{userid}@{self.domain}"


@pytest.fixture
def aws(moto, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    tag = uuid.uuid4().hex[:10]
    clients = {s: boto3.client(s, region_name=REGION) for s in ("dynamodb", "s3", "sqs", "ses")}
    table = f"offload-records-{tag}"
    clients["dynamodb"].create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    clients["dynamodb"].update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
    )
    bucket = f"offload-certs-{tag}"
    clients["s3"].create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    queue_url = clients["sqs"].create_queue(QueueName=f"offload-results-{tag}")["QueueUrl"]
    clients["ses"].verify_email_identity(EmailAddress=SENDER)
    yield Aws(url=moto, table=table, bucket=bucket, queue_url=queue_url,
              domain=f"{tag}.example.com", **clients)  # fmt: skip
    for client in clients.values():
        client.close()


@pytest.fixture
def make_worker(aws):
    """A Worker on this test's table with the secret inline, recording its sleeps."""

    def make(*, sesv2=None, clock=time.time, **over):
        settings = WorkerSettings(idempotency_table=aws.table, callback_secret=SECRET, **over)
        sleeps: list[float] = []
        worker = Worker(settings, sesv2=sesv2, sleep=sleeps.append, clock=clock)
        worker.sleeps = sleeps
        return worker

    return make


class Sidecar:
    """A callback endpoint on 127.0.0.1 that checks X-Signature like the sidecar."""

    def __init__(self, port: int = 0, status: int = 200):
        self.callbacks: list = []
        self.posts = 0
        self.status = status  # what to answer a correctly signed callback
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}/callback"

    def _handler(self):
        sidecar = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sidecar.posts += 1
                status = sidecar.status
                if not verify([SECRET], body, self.headers.get("X-Signature")):
                    status = 401
                elif self.headers.get("Content-Type") != "application/json":
                    status = 400
                elif status == 200:
                    sidecar.callbacks.append(parse_callback(body))
                reply = json.dumps({"accepted": 1, "ignored": 0}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture
def start_sidecar():
    """Start a callback endpoint (on `port`, or any free one); stopped after the test."""
    started = []

    def start(port: int = 0, status: int = 200) -> Sidecar:
        s = Sidecar(port, status)
        threading.Thread(target=s.server.serve_forever, daemon=True).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.server.shutdown()
        s.server.server_close()


@pytest.fixture
def sidecar(start_sidecar):
    return start_sidecar()


# --- messages and events -----------------------------------------------------------------


def certificate_html(first: str, last: str) -> str:
    return (
        "<html><head><style>body { font-family: 'DejaVu Sans'; }</style></head>"
        f"<body><h1>Certificate of completion</h1><p>{first} {last}</p></body></html>"
    )


def recipients(aws, userids, *, certificate=True):
    out = []
    for uid in userids:
        first, last = NAMES[uid % len(NAMES)]
        out.append({
            "userid": uid, "email": aws.address(uid), "firstname": first, "lastname": last,
            "subject": f"Your certificate, {first}", "html": f"<p>Well done, {first} {last}</p>",
            "text": f"Well done, {first} {last}",
            "certificate_html": certificate_html(first, last) if certificate else None,
            "vars": {},
        })  # fmt: skip
    return out


def bodies(
    aws,
    userids=(1, 2, 3),
    *,
    batch_id=None,
    job_id=None,
    mode="sqs",
    callback_url=None,
    actions=None,
    sender=SENDER,
    attempt=None,
    email_extra=None,
    certificate=True,
    people=None,
    max_bytes=262_144,
    compress=False,
):
    """The SQS bodies of one batch, built by the sidecar's own message builder."""
    header = {
        "job_id": job_id or str(uuid.uuid4()), "batch_id": batch_id or str(uuid.uuid4()),
        "batch_index": 0, "batch_count": 1, "tenant_id": 1, "type": "send_certificate",
        "courseid": 101, "created_by": 2,
        "actions": actions or {"email": True, "certificate": True},
        "email": {"from": sender, "reply_to": None, "subject": "Your certificate",
                  "template_id": "certificate_v1", **(email_extra or {})},
        "certificate": {"template_id": "default", "bucket": aws.bucket,
                        "key_prefix": "certs/2025/job-1/", "url_ttl": 3600},
        "template_data": {"course_name": "Safety 101"},
        "callback": {"url": callback_url or aws.queue_url, "mode": mode},
        "timestamp": "2025-11-18T12:00:00Z",
    }  # fmt: skip
    if attempt is not None:
        header["attempt"] = attempt
    people = people or recipients(aws, userids, certificate=certificate)
    return build_batch_messages(header, people, max_bytes=max_bytes, compress=compress)


def batch_of(body: bytes) -> dict:
    return decode_body(body)


def sqs_event(*all_bodies: bytes) -> dict:
    """A Lambda SQS event as AWS delivers it, one record per body."""
    records = []
    for body in all_bodies:
        text = body.decode()
        records.append({
            "messageId": str(uuid.uuid4()),
            "receiptHandle": "AQEB" + uuid.uuid4().hex * 4,
            "body": text,
            "attributes": {
                "ApproximateReceiveCount": "1", "SentTimestamp": "1763467200000",
                "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                "ApproximateFirstReceiveTimestamp": "1763467200010",
            },
            "messageAttributes": {},
            "md5OfBody": hashlib.md5(body).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:offload-jobs",
            "awsRegion": REGION,
        })  # fmt: skip
    return {"Records": records}


def redelivered(event: dict, message_ids=None) -> dict:
    """The same records as SQS hands them out again (same messageId, higher receive count)."""
    records = []
    for r in event["Records"]:
        if message_ids is None or r["messageId"] in message_ids:
            count = str(int(r["attributes"]["ApproximateReceiveCount"]) + 1)
            attributes = {**r["attributes"], "ApproximateReceiveCount": count}
            receipt = "AQEB" + uuid.uuid4().hex * 4
            records.append({**r, "receiptHandle": receipt, "attributes": attributes})
    return {"Records": records}


def ids(event: dict) -> list[str]:
    return [r["messageId"] for r in event["Records"]]


def failures(response: dict) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


class LambdaContext:
    def __init__(self, remaining_ms: int = 600_000):
        self.remaining_ms = remaining_ms
        self.function_name = "moodle-offload-worker"
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def updates_by_user(callbacks) -> dict[int, object]:
    return {u.userid: u for cb in callbacks for u in cb.updates}


def pdf_text(pdf: bytes) -> str:
    return "".join(page.extract_text() for page in PdfReader(BytesIO(pdf)).pages)


class FlakySes:
    """The real SES v2 client with errors injected as SES would raise them."""

    def __init__(
        self, real, *, throttle=0, throttle_to=(), reject_to=(), after_send=None, lose_answer=()
    ):
        self.real = real
        self.throttle = throttle  # the next N calls are throttled
        self.throttle_to = set(throttle_to)  # always throttled for these addresses
        self.reject_to = set(reject_to)
        self.after_send = after_send
        self.lose_answer = set(lose_answer)  # SES sends, its answer never arrives
        self.calls = 0

    def send_email(self, **params):
        self.calls += 1
        to = params["Destination"]["ToAddresses"][0]
        if self.throttle > 0 or to in self.throttle_to:
            self.throttle = max(0, self.throttle - 1)
            raise _error("TooManyRequestsException", "Maximum sending rate exceeded.", 429)
        if to in self.reject_to:
            raise _error("MessageRejected", "Address blacklisted.", 400)
        resp = self.real.send_email(**params)
        if to in self.lose_answer:
            raise ReadTimeoutError(endpoint_url="https://email.eu-west-1.amazonaws.com")
        if self.after_send:
            self.after_send()
        return resp


def _error(code, message, status):
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "SendEmail",
    )


# --- delivery ----------------------------------------------------------------------------


def test_batch_of_emails_and_certificates_is_sent_and_reported_through_the_results_queue(
    aws, make_worker, caplog
):
    caplog.set_level(logging.DEBUG)
    (body,) = bodies(aws, [1, 2, 3])
    batch = batch_of(body)
    event = sqs_event(body)

    response = make_worker().handle(event, LambdaContext())

    assert response == {"batchItemFailures": []}
    assert aws.sent_count() == {aws.address(u): 1 for u in (1, 2, 3)}
    (callback,) = aws.callbacks()
    assert (callback.job_id, callback.batch_id) == (batch["job_id"], batch["batch_id"])
    by_user = updates_by_user([callback])
    message_ids = {m["to"]: m["id"] for m in aws.emails()}
    for uid in (1, 2, 3):
        update = by_user[uid]
        assert update.status == "sent"
        assert update.external_id == message_ids[aws.address(uid)]
        assert update.certificate_key == f"certs/2025/job-1/{uid}.pdf"
        assert abs(update.timesent - time.time()) < 60
        head = aws.s3.head_object(Bucket=aws.bucket, Key=update.certificate_key)
        assert head["ServerSideEncryption"] == "AES256"
        assert head["ContentType"] == "application/pdf"
        pdf = aws.s3.get_object(Bucket=aws.bucket, Key=update.certificate_key)["Body"].read()
        assert " ".join(NAMES[uid % len(NAMES)]) in pdf_text(pdf)
        assert aws.record(batch["batch_id"], uid)["state"] == "sent"
    email_1 = next(m for m in aws.emails() if m["to"] == aws.address(1))
    assert email_1["subject"] == "Your certificate, Дмитрий" and "Дмитрий" in email_1["body"]
    # no secret ever, and no address above DEBUG
    assert SECRET not in caplog.text
    loud = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    assert loud and not [m for m in loud if aws.domain in m]


def test_http_callback_is_signed_and_attached_certificates_travel_as_raw_mime(
    aws, make_worker, sidecar
):
    ses = boto3.client("sesv2", region_name=REGION)
    requests = []
    ses.meta.events.register(
        "provide-client-params.sesv2.SendEmail", lambda params, **_: requests.append(params)
    )
    (body,) = bodies(
        aws, [1, 2], mode="http", callback_url=sidecar.url,
        email_extra={"attach_certificate": True, "configuration_set": "offload-events",
                     "reply_to": "help@offload.example.org"},
    )  # fmt: skip
    batch = batch_of(body)
    worker = make_worker(sesv2=ses, ses_configuration_set="env-default")

    response = worker.handle(sqs_event(body), LambdaContext())

    assert failures(response) == []
    assert sidecar.posts == 1 and len(sidecar.callbacks) == 1
    by_user = updates_by_user(sidecar.callbacks)
    assert {u: (x.status, x.certificate_key) for u, x in by_user.items()} == {
        1: ("sent", "certs/2025/job-1/1.pdf"),
        2: ("sent", "certs/2025/job-1/2.pdf"),
    }
    assert aws.sent_count() == {aws.address(1): 1, aws.address(2): 1}
    for m in aws.emails():
        msg = email.message_from_string(m["raw_data"], policy=policy.default)
        assert msg["Reply-To"] == "help@offload.example.org"
        assert msg["Subject"].startswith("Your certificate, ")
        (attachment,) = list(msg.iter_attachments())
        assert attachment.get_filename() == "certificate.pdf"
        userid = int(m["to"].split("@")[0].removeprefix("learner"))
        assert " ".join(NAMES[userid % len(NAMES)]) in pdf_text(attachment.get_content())
        assert by_user[userid].external_id == m["id"]
    assert [r["ConfigurationSetName"] for r in requests] == ["offload-events"] * 2
    assert requests[0]["EmailTags"] == [
        {"Name": "job_id", "Value": batch["job_id"]},
        {"Name": "batch_id", "Value": batch["batch_id"]},
        {"Name": "userid", "Value": "1"},
    ]
    ses.close()


def test_certificate_only_job_stores_pdfs_and_sends_no_email(aws, make_worker):
    (body,) = bodies(aws, [1, 2], actions={"email": False, "certificate": True})

    assert failures(make_worker().handle(sqs_event(body), LambdaContext())) == []

    assert aws.sent_count() == {}
    updates = updates_by_user(aws.callbacks())
    assert {u: (x.status, x.external_id, x.certificate_key) for u, x in updates.items()} == {
        1: ("sent", None, "certs/2025/job-1/1.pdf"),
        2: ("sent", None, "certs/2025/job-1/2.pdf"),
    }


def test_a_recipient_with_an_unsubscribe_link_gets_both_one_click_headers(aws, make_worker):
    people = recipients(aws, [1, 2], certificate=False)
    link = "https://offload.example.org/unsubscribe/1.reminders.vtBj8csN1ln7S-DS1wxIxg"
    people[0]["unsubscribe_url"] = link
    (body,) = bodies(aws, actions={"email": True, "certificate": False}, people=people)

    assert failures(make_worker().handle(sqs_event(body), LambdaContext())) == []

    assert aws.sent_count() == {aws.address(1): 1, aws.address(2): 1}
    by_to = {m["to"]: m for m in aws.emails()}
    msg = email.message_from_string(by_to[aws.address(1)]["raw_data"], policy=policy.default)
    assert msg["List-Unsubscribe"].strip() == f"<{link}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Subject"] == people[0]["subject"]
    assert msg.get_body(("html",)).get_content().strip() == people[0]["html"]
    assert not list(msg.iter_attachments())
    assert "raw_data" not in by_to[aws.address(2)]  # no link: SES simple content as before
    assert {u.status for u in updates_by_user(aws.callbacks()).values()} == {"sent"}


def test_a_long_unsubscribe_link_reaches_ses_as_one_plain_header_line(aws, make_worker):
    (person,) = recipients(aws, [12345], certificate=False)
    link = "https://learning-offload.academy-example.org/unsubscribe/12345.reminders.vtBj8csN1l"
    subject = "Rappel : Sécurité au travail, les fondamentaux pour tous les employés du site"
    person.update(unsubscribe_url=link, subject=subject)
    (body,) = bodies(aws, actions={"email": True, "certificate": False}, people=[person])

    assert failures(make_worker().handle(sqs_event(body), LambdaContext())) == []

    (sent,) = aws.emails()
    msg = email.message_from_string(sent["raw_data"], policy=policy.default)
    raw = {name.lower(): value for name, value in msg.raw_items()}
    assert raw["list-unsubscribe"] == f"<{link}>"  # not =?utf-8?q?=3Chttps...
    assert raw["list-unsubscribe-post"] == "List-Unsubscribe=One-Click"
    assert "=?utf-8?" in raw["subject"] and "\n " in raw["subject"]  # still encoded, folded
    assert msg["Subject"] == subject


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "https://x.example/u\r\nBcc: a@b.example", "https://x/<y>", 7]
)
def test_a_bad_unsubscribe_url_refuses_the_message_before_anything_is_sent(aws, make_worker, url):
    people = recipients(aws, [1], certificate=False)
    people[0]["unsubscribe_url"] = url
    (body,) = bodies(aws, actions={"email": True, "certificate": False}, people=people)

    response = make_worker().handle(event := sqs_event(body), LambdaContext())

    assert failures(response) == ids(event) and aws.sent_count() == {}


def test_handler_reads_its_environment_and_the_secret_from_secrets_manager(
    aws, monkeypatch, sidecar
):
    secret_arn = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name=f"offload-callback-{aws.domain}", SecretString=SECRET
    )["ARN"]
    key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
    monkeypatch.setenv("OFFLOAD_IDEMPOTENCY_TABLE", aws.table)
    monkeypatch.setenv("OFFLOAD_CALLBACK_SECRET_ARN", secret_arn)
    monkeypatch.setenv("OFFLOAD_CALLBACK_SECRET", "not-this-one")
    monkeypatch.setenv("OFFLOAD_CERT_SSE", "aws:kms")
    monkeypatch.setenv("OFFLOAD_CERT_KMS_KEY_ID", key_id)
    monkeypatch.setattr(handler_module, "_worker", None)  # a fresh container
    (body,) = bodies(aws, [1], mode="http", callback_url=sidecar.url)

    response = handler_module.handler(sqs_event(body), LambdaContext())

    assert failures(response) == []
    assert [u.status for u in updates_by_user(sidecar.callbacks).values()] == ["sent"]
    head = aws.s3.head_object(Bucket=aws.bucket, Key="certs/2025/job-1/1.pdf")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key_id)
    assert aws.sent_count() == {aws.address(1): 1}


# --- idempotency -------------------------------------------------------------------------


def test_same_record_delivered_twice_sends_once_and_reports_the_same_ids(aws, make_worker):
    (body,) = bodies(aws, [1, 2, 3])
    event = sqs_event(body)
    worker = make_worker()

    worker.handle(event, LambdaContext())
    first = updates_by_user(aws.callbacks())
    response = worker.handle(redelivered(event), LambdaContext())
    second = updates_by_user(aws.callbacks())

    assert failures(response) == []
    assert aws.sent_count() == {aws.address(u): 1 for u in (1, 2, 3)}
    assert second == first  # sent, same external ids, keys and times


@pytest.mark.parametrize("outage", ["http-500", "connection-refused", "results-queue-missing"])
def test_worker_stopping_before_the_report_is_redelivered_and_never_sends_twice(
    aws, make_worker, start_sidecar, outage
):
    port, queue_name = free_port(), f"offload-results-late-{uuid.uuid4().hex[:8]}"
    sidecar = start_sidecar(port, status=500) if outage == "http-500" else None
    if outage == "results-queue-missing":
        url = aws.queue_url.rsplit("/", 1)[0] + "/" + queue_name
        (body,) = bodies(aws, [1, 2], callback_url=url)
    else:
        (body,) = bodies(aws, [1, 2], mode="http", callback_url=f"http://127.0.0.1:{port}/cb")
    event = sqs_event(body)

    response = make_worker().handle(event, LambdaContext())

    assert failures(response) == ids(event)
    assert aws.sent_count() == {aws.address(1): 1, aws.address(2): 1}
    # the sidecar (or its results queue) is back; SQS redelivers the same body
    if outage == "results-queue-missing":
        aws.queue_url = aws.sqs.create_queue(QueueName=queue_name)["QueueUrl"]
        assert aws.queue_url == url
    elif sidecar:
        sidecar.status = 200
    else:
        sidecar = start_sidecar(port)

    response = make_worker().handle(redelivered(event), LambdaContext())

    assert failures(response) == []
    assert aws.sent_count() == {aws.address(1): 1, aws.address(2): 1}
    message_ids = {m["to"]: m["id"] for m in aws.emails()}
    reported = updates_by_user(sidecar.callbacks if sidecar else aws.callbacks())
    assert {u: (x.status, x.external_id) for u, x in reported.items()} == {
        u: ("sent", message_ids[aws.address(u)]) for u in (1, 2)
    }


def test_callback_the_sidecar_already_applied_counts_as_delivered(aws, make_worker, sidecar):
    sidecar.status = 409
    (body,) = bodies(aws, [1], mode="http", callback_url=sidecar.url)

    assert failures(make_worker().handle(sqs_event(body), LambdaContext())) == []
    assert sidecar.posts == 1


def test_claim_left_sending_is_not_resent_and_reported_unknown_until_a_later_attempt(
    aws, make_worker
):
    batch_id = str(uuid.uuid4())
    aws.dynamodb.put_item(
        TableName=aws.table,
        Item={"pk": {"S": f"{batch_id}#2"}, "state": {"S": "sending"}, "round": {"N": "0"},
              "lease_until": {"N": str(int(time.time() * 1000) - 1)}},
    )  # fmt: skip
    (body,) = bodies(aws, [1, 2], batch_id=batch_id)

    response = make_worker().handle(sqs_event(body), LambdaContext())

    assert failures(response) == []
    assert aws.sent_count() == {aws.address(1): 1}
    updates = updates_by_user(aws.callbacks())
    assert updates[1].status == "sent"
    assert (updates[2].status, updates[2].error_message, updates[2].attempts) == (
        "failed", UNKNOWN_OUTCOME, 1
    )  # fmt: skip

    (retry,) = bodies(aws, [1, 2], batch_id=batch_id, attempt=1)  # `jobs retry`
    make_worker().handle(sqs_event(retry), LambdaContext())

    assert aws.sent_count() == {aws.address(1): 1, aws.address(2): 1}
    updates = updates_by_user(aws.callbacks())
    assert [updates[1].status, updates[2].status] == ["sent", "sent"]


def test_recipients_a_stopped_worker_had_started_are_reported_unknown_not_sent_again(
    aws, make_worker
):
    batch_id = str(uuid.uuid4())
    # a worker killed mid-chunk: it had started 1 and 2, recorded 1's send, not 2's
    aws.dynamodb.put_item(
        TableName=aws.table,
        Item={"pk": {"S": f"batch#{batch_id}"}, "owner": {"S": "dead-invocation"},
              "lease_until": {"N": str(int(time.time() * 1000) - 1)},
              "inflight": {"NS": ["1", "2"]}, "inflight_round": {"N": "0"}},
    )  # fmt: skip
    aws.dynamodb.put_item(
        TableName=aws.table,
        Item={"pk": {"S": f"{batch_id}#1"}, "state": {"S": "sent"}, "round": {"N": "0"},
              "external_id": {"S": "ses-earlier"}, "timesent": {"N": "1763467200"}},
    )  # fmt: skip
    (body,) = bodies(aws, [1, 2, 3], batch_id=batch_id, certificate=False)

    response = make_worker().handle(sqs_event(body), LambdaContext())

    assert failures(response) == []
    assert aws.sent_count() == {aws.address(3): 1}  # 2 may have gone out: not sent again
    updates = updates_by_user(aws.callbacks())
    assert (updates[1].status, updates[1].external_id) == ("sent", "ses-earlier")
    assert (updates[2].status, updates[2].error_message) == ("failed", UNKNOWN_OUTCOME)
    assert updates[3].status == "sent"
    assert aws.record(batch_id, 2)["state"] == "sending"

    (retry,) = bodies(aws, [1, 2, 3], batch_id=batch_id, attempt=1, certificate=False)
    make_worker().handle(sqs_event(retry), LambdaContext())  # `jobs retry`: a new round

    assert aws.sent_count() == {aws.address(2): 1, aws.address(3): 1}


def test_claim_held_by_a_live_invocation_goes_back_to_the_queue_until_its_lease_ends(
    aws, make_worker
):
    batch_id = str(uuid.uuid4())
    now = time.time()
    aws.dynamodb.put_item(
        TableName=aws.table,
        Item={"pk": {"S": f"{batch_id}#1"}, "state": {"S": "sending"}, "round": {"N": "0"},
              "lease_until": {"N": str(int(now * 1000) + 300_000)}},
    )  # fmt: skip
    (body,) = bodies(aws, [1], batch_id=batch_id)
    event = sqs_event(body)

    assert failures(make_worker(clock=lambda: now).handle(event, LambdaContext())) == ids(event)
    assert aws.callbacks() == [] and aws.sent_count() == {}

    later = make_worker(clock=lambda: now + 301)
    assert failures(later.handle(redelivered(event), LambdaContext())) == []
    assert aws.sent_count() == {}
    (update,) = updates_by_user(aws.callbacks()).values()
    assert (update.status, update.error_message) == ("failed", UNKNOWN_OUTCOME)


def test_later_attempt_resends_the_failed_recipient_but_not_the_sent_one(aws, make_worker):
    batch_id = str(uuid.uuid4())
    real = boto3.client("sesv2", region_name=REGION)
    (round0,) = bodies(aws, [1, 2], batch_id=batch_id)
    event = sqs_event(round0)
    worker = make_worker(sesv2=FlakySes(real, reject_to={aws.address(2)}))

    worker.handle(event, LambdaContext())
    first = updates_by_user(aws.callbacks())
    worker.handle(redelivered(event), LambdaContext())  # same round: nothing resent
    again = updates_by_user(aws.callbacks())

    assert (first[1].status, first[2].status) == ("sent", "failed")
    assert "MessageRejected" in first[2].error_message and first[2].attempts == 1
    assert again == first
    assert aws.sent_count() == {aws.address(1): 1}

    (round1,) = bodies(aws, [1, 2], batch_id=batch_id, attempt=1)
    response = make_worker(sesv2=real).handle(sqs_event(round1), LambdaContext())

    assert failures(response) == []
    assert aws.sent_count() == {aws.address(1): 1, aws.address(2): 1}
    second = updates_by_user(aws.callbacks())
    assert second[1] == first[1]  # the round-0 send, reported again
    assert second[2].status == "sent"
    assert second[2].external_id == {m["to"]: m["id"] for m in aws.emails()}[aws.address(2)]
    assert aws.record(batch_id, 2)["round"] == "1"
    real.close()


def test_a_60_recipient_batch_costs_eight_dynamodb_requests_not_two_per_recipient(aws, make_worker):
    worker = make_worker()
    calls = []
    dynamodb = worker.client("dynamodb")
    dynamodb.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: calls.append(model.name)
    )
    (body,) = bodies(aws, range(1, 61), certificate=False)

    response = worker.handle(sqs_event(body), LambdaContext())

    assert failures(response) == []
    assert len(aws.sent_count()) == 60
    # the batch taken and given back once; each chunk of 50 read and noted as started
    # once; the sends recorded 25 a request
    assert sorted(calls) == sorted(
        ["UpdateItem", "DeleteItem"] + ["BatchGetItem", "UpdateItem"] * 2 + ["BatchWriteItem"] * 3
    )
    batch_id = batch_of(body)["batch_id"]
    assert {aws.record(batch_id, u)["state"] for u in (1, 25, 26, 60)} == {"sent"}


# --- throttling and refusals ---------------------------------------------------------------


def test_throttled_send_is_retried_with_growing_backoff_and_sent_once(aws, make_worker):
    real = boto3.client("sesv2", region_name=REGION)
    ses = FlakySes(real, throttle=3)
    worker = make_worker(sesv2=ses)
    (body,) = bodies(aws, [1, 2], certificate=False)

    response = worker.handle(sqs_event(body), LambdaContext())

    assert failures(response) == []
    assert aws.sent_count() == {aws.address(1): 1, aws.address(2): 1}
    assert len(worker.sleeps) == 3
    assert worker.sleeps[0] < worker.sleeps[2] <= worker.settings.backoff_max
    assert {u.status for u in updates_by_user(aws.callbacks()).values()} == {"sent"}
    real.close()


def test_persistent_throttling_returns_the_record_releases_the_claim_and_loses_nothing(
    aws, make_worker
):
    real = boto3.client("sesv2", region_name=REGION)
    ses = FlakySes(real, throttle_to={aws.address(2)})
    worker = make_worker(sesv2=ses)
    (first,) = bodies(aws, [1, 2, 3])
    (other,) = bodies(aws, [4])  # a second batch in the same invocation
    batch_id = batch_of(first)["batch_id"]
    event = sqs_event(first, other)

    response = worker.handle(event, LambdaContext())

    assert failures(response) == ids(event)  # the second is not started while SES throttles
    assert len(worker.sleeps) == 4  # OFFLOAD_SES_RETRIES
    assert aws.sent_count() == {aws.address(1): 1}
    reported = updates_by_user(aws.callbacks())
    assert list(reported) == [1] and reported[1].status == "sent"
    assert aws.record(batch_id, 2) is None  # claim released
    assert aws.record(batch_id, 3) is None  # never started

    ses.throttle_to.clear()
    response = worker.handle(redelivered(event), LambdaContext())

    assert failures(response) == []
    assert aws.sent_count() == {aws.address(u): 1 for u in (1, 2, 3, 4)}
    reported_again = updates_by_user(aws.callbacks())
    assert {u.status for u in reported_again.values()} == {"sent"}
    assert reported_again[1] == reported[1]
    real.close()


def test_a_lost_ses_answer_is_reported_unknown_and_never_sent_again_in_that_round(aws, make_worker):
    real = boto3.client("sesv2", region_name=REGION)
    ses = FlakySes(real, lose_answer={aws.address(2)})
    worker = make_worker(sesv2=ses)
    (body,) = bodies(aws, [1, 2, 3], certificate=False)
    event = sqs_event(body)

    assert failures(worker.handle(event, LambdaContext())) == []
    assert aws.sent_count() == {aws.address(u): 1 for u in (1, 2, 3)}  # SES took all three
    assert worker.sleeps == []  # the lost answer was not retried
    updates = updates_by_user(aws.callbacks())
    assert [updates[1].status, updates[3].status] == ["sent", "sent"]
    assert updates[2].status == "failed"
    assert updates[2].error_message.startswith("delivery outcome unknown: SES may have taken")
    assert "ReadTimeoutError" in updates[2].error_message

    ses.lose_answer.clear()
    worker.handle(redelivered(event), LambdaContext())  # SQS delivers the record again
    assert aws.sent_count() == {aws.address(u): 1 for u in (1, 2, 3)}
    assert updates_by_user(aws.callbacks())[2].status == "failed"

    (retry,) = bodies(aws, [1, 2, 3], batch_id=batch_of(body)["batch_id"], attempt=1,
                      certificate=False)  # `jobs retry`: the admin's choice  # fmt: skip
    worker.handle(sqs_event(retry), LambdaContext())
    assert aws.sent_count() == {aws.address(1): 1, aws.address(2): 2, aws.address(3): 1}
    real.close()


def test_the_ses_client_makes_one_attempt_and_others_keep_botocore_retries(aws, make_worker):
    worker = make_worker()
    assert worker.client("sesv2").meta.config.retries["total_max_attempts"] == 1
    assert worker.client("s3").meta.config.retries.get("total_max_attempts") != 1


def test_unverified_sender_is_reported_failed_and_not_retried(aws, make_worker):
    sender = f"news@unverified-{aws.domain}"
    (body,) = bodies(aws, [1, 2], sender=sender, certificate=False)
    batch_id = batch_of(body)["batch_id"]
    event = sqs_event(body)
    worker = make_worker()

    response = worker.handle(event, LambdaContext())
    again = worker.handle(redelivered(event), LambdaContext())

    assert failures(response) == [] and failures(again) == []
    assert aws.sent_count() == {} and worker.sleeps == []
    first, second = aws.callbacks()
    for callback in (first, second):
        for update in callback.updates:
            assert update.status == "failed" and update.attempts == 1
            assert update.error_message.startswith("SES SendEmail: MessageRejected")
    assert aws.record(batch_id, 1)["state"] == "failed"


@pytest.mark.parametrize("problem", ["unrenderable-html", "missing-bucket"])
def test_certificate_that_cannot_be_made_fails_that_recipient_without_an_email(
    aws, make_worker, problem
):
    people = recipients(aws, [1, 2])
    if problem == "unrenderable-html":
        people[1]["certificate_html"] = "<div>" * 300  # past the renderer's nesting limit
        (body,) = bodies(aws, people=people)
    else:
        batch = batch_of(bodies(aws, people=people)[0])
        batch["certificate"]["bucket"] = f"{aws.bucket}-missing"
        body = json.dumps(batch).encode()

    response = make_worker().handle(sqs_event(body), LambdaContext())

    assert failures(response) == []
    updates = updates_by_user(aws.callbacks())
    if problem == "unrenderable-html":
        assert aws.sent_count() == {aws.address(1): 1}
        assert updates[1].status == "sent"
        assert updates[2].error_message.startswith("certificate PDF could not be rendered")
    else:
        assert aws.sent_count() == {}
        assert "NoSuchBucket" in updates[2].error_message
    assert updates[2].status == "failed"


# --- message forms -------------------------------------------------------------------------


def test_gzip_envelopes_of_a_split_batch_are_each_delivered_and_reported(aws, make_worker):
    userids = list(range(1, 9))
    parts = bodies(aws, userids, compress=True, max_bytes=1000)
    assert len(parts) >= 3 and all(p.startswith(b'{"schema":"offload.envelope.v1"') for p in parts)
    batch_id = batch_of(parts[0])["batch_id"]

    response = make_worker().handle(sqs_event(*parts), LambdaContext())

    assert failures(response) == []
    assert aws.sent_count() == {aws.address(u): 1 for u in userids}
    callbacks = aws.callbacks()
    assert len(callbacks) == len(parts) and {c.batch_id for c in callbacks} == {batch_id}
    assert sorted(u.userid for c in callbacks for u in c.updates) == userids


POISON = {
    "not-json": b"<html>hello learner@poison.example</html>",
    "wrong-schema": json.dumps({"schema": "offload.callback.v1", "email": "x@poison.example"}),
    "no-batch-id": None,
    "bad-envelope": json.dumps(
        {"schema": "offload.envelope.v1", "encoding": "gzip+base64", "data": "!!not base64!!"}
    ),  # fmt: skip
    "bad-recipient": None,
}


@pytest.mark.parametrize("kind", list(POISON))
def test_poison_message_goes_back_for_the_dlq_and_the_rest_of_the_event_is_delivered(
    aws, make_worker, caplog, kind
):
    (good,) = bodies(aws, [1])
    raw = POISON[kind]
    if kind == "no-batch-id":
        batch = batch_of(bodies(aws, [2])[0])
        del batch["batch_id"]
        raw = json.dumps(batch)
    elif kind == "bad-recipient":
        batch = batch_of(bodies(aws, [2])[0])
        batch["recipients"][0]["userid"] = "two"
        raw = json.dumps(batch)
    poison = raw if isinstance(raw, bytes) else raw.encode()
    event = sqs_event(poison, good)
    poison_id = ids(event)[0]

    with caplog.at_level(logging.INFO):
        response = make_worker().handle(event, LambdaContext())

    assert failures(response) == [poison_id]
    assert aws.sent_count() == {aws.address(1): 1}
    assert [list(updates_by_user([c])) for c in aws.callbacks()] == [[1]]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and poison_id in errors[0]
    assert "poison.example" not in caplog.text and aws.address(2) not in caplog.text


# --- time ----------------------------------------------------------------------------------


def test_too_little_time_left_returns_every_record_unsent(aws, make_worker):
    event = sqs_event(*bodies(aws, [1, 2]), *bodies(aws, [3]))

    response = make_worker().handle(event, LambdaContext(remaining_ms=29_000))

    assert failures(response) == ids(event)
    assert aws.sent_count() == {} and aws.callbacks() == []


def test_time_running_out_mid_batch_reports_what_was_sent_and_returns_the_rest(aws, make_worker):
    context = LambdaContext()

    def run_low():
        context.remaining_ms = 20_000

    real = boto3.client("sesv2", region_name=REGION)
    (body,) = bodies(aws, [1, 2, 3], certificate=False)
    event = sqs_event(body, *bodies(aws, [4], certificate=False))

    response = make_worker(sesv2=FlakySes(real, after_send=run_low)).handle(event, context)

    assert failures(response) == ids(event)
    assert aws.sent_count() == {aws.address(1): 1}
    assert list(updates_by_user(aws.callbacks())) == [1]

    response = make_worker(sesv2=real).handle(redelivered(event), LambdaContext())

    assert failures(response) == []
    assert aws.sent_count() == {aws.address(u): 1 for u in (1, 2, 3, 4)}
    real.close()


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OFFLOAD_CALLBACK_SECRET": SECRET}, "OFFLOAD_IDEMPOTENCY_TABLE"),
        ({"OFFLOAD_IDEMPOTENCY_TABLE": "t"}, "OFFLOAD_CALLBACK_SECRET_ARN"),
        (
            {
                "OFFLOAD_IDEMPOTENCY_TABLE": "t",
                "OFFLOAD_CALLBACK_SECRET": SECRET,
                "OFFLOAD_CERT_SSE": "aws:kmz",
            },
            "OFFLOAD_CERT_SSE",
        ),  # fmt: skip
        (
            {
                "OFFLOAD_IDEMPOTENCY_TABLE": "t",
                "OFFLOAD_CALLBACK_SECRET": SECRET,
                "OFFLOAD_SES_RETRIES": "four",
            },
            "OFFLOAD_SES_RETRIES",
        ),  # fmt: skip
    ],
    ids=["no-table", "no-secret", "bad-sse", "bad-retries"],
)
def test_wrong_environment_is_refused_naming_the_variable(env, named):
    with pytest.raises(WorkerConfigError, match=named) as err:
        WorkerSettings.from_env(env)
    assert SECRET not in str(err.value)


def test_settings_from_environment_keep_the_secret_out_of_their_repr():
    settings = WorkerSettings.from_env({
        "OFFLOAD_IDEMPOTENCY_TABLE": "records", "OFFLOAD_CALLBACK_SECRET": SECRET,
        "OFFLOAD_SES_RETRIES": "2", "OFFLOAD_MIN_REMAINING_MS": "5000",
    })  # fmt: skip
    assert (settings.ses_retries, settings.min_remaining_ms, settings.cert_sse) == (
        2, 5000, "AES256"
    )  # fmt: skip
    assert SECRET not in repr(settings)


def test_tag_values_keep_only_what_ses_accepts():
    assert tag_value("job 42/übung+x@y.z") == "job_42__bung_x@y.z"
    assert len(tag_value("x" * 300)) == 256
