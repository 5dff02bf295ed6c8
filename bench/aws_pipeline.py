"""5,000 emails end to end through the AWS route, against bare SES v2 SendEmail calls.

moto runs in server mode as a separate process on 127.0.0.1 (SQS, SES, DynamoDB, S3).
Measured, one phase after the other, wall time: the sidecar submits the job's batches
to the job queue (render, build, gzip, SendMessageBatch, ledger commits); then a loop
plays the Lambda event source mapping: it receives ten messages at a time, builds the
SQS event Lambda hands the function, calls `providers.aws.worker.handler.handler` in
this process (per recipient: DynamoDB claim, SES v2 SendEmail, DynamoDB mark sent; one
signed callback per message onto the results queue) and deletes the messages not listed
in `batchItemFailures`; then the sidecar polls the results queue (`poll_results`) until
every recipient is `sent` in the ledger (SQLite). Verified: moto's SES holds exactly one
message per recipient for this run and every recipient is `sent`.
Floor: the same number of bare boto3 `sesv2.send_email` calls to the same moto, same
sender, the same rendered subject, HTML and text (taken from the submitted messages).
Target: end to end <= 1.3x the floor. Also printed, to explain the ratio: the mean cost
at moto of one bare call of each kind the worker makes per recipient (DynamoDB PutItem
claim, SES SendEmail, DynamoDB UpdateItem), 500 of each, after the floor.
`--profile` runs the pipeline under cProfile and prints the top functions.
Run: python bench/aws_pipeline.py [--emails N] [--batch-size N] [--profile]
"""

import argparse
import cProfile
import os
import pstats
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import providers.aws.worker.handler as lambda_handler  # noqa: E402
from bench.aws_submit import create, people  # noqa: E402
from providers.message import decode_body  # noqa: E402
from sidecar.cloudpoll import poll_results  # noqa: E402
from sidecar.config import Config  # noqa: E402
from sidecar.db.models import Recipient  # noqa: E402
from sidecar.runtime import Runtime  # noqa: E402
from sidecar.status import RecipientStatus  # noqa: E402
from tests.motoserver import AWS_ENV, AWS_UNSET, moto_process, ses_sent  # noqa: E402

REGION = "eu-west-1"
SENDER = "noreply@academy.example.org"
SECRET = "bench-callback-secret"
#: what the function's timeout would be; the queue's visibility timeout is above it
LAMBDA_TIMEOUT_MS = 900_000


class LambdaContext:
    """The part of Lambda's context object the worker reads: the time left."""

    def __init__(self):
        self.function_name = "moodle-offload-worker"
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + LAMBDA_TIMEOUT_MS / 1000

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def setup(endpoint: str) -> dict:
    """Job queue, results queue, idempotency table, verified sender, bucket."""
    kw = dict(region_name=REGION, endpoint_url=endpoint)
    sqs, ses = boto3.client("sqs", **kw), boto3.client("ses", **kw)
    ddb, s3 = boto3.client("dynamodb", **kw), boto3.client("s3", **kw)
    tag = uuid.uuid4().hex[:8]
    jobs_url = sqs.create_queue(
        QueueName=f"offload-jobs-{tag}",
        Attributes={"MaximumMessageSize": "262144", "VisibilityTimeout": "5400"},
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=jobs_url, AttributeNames=["QueueArn"])
    results_url = sqs.create_queue(QueueName=f"offload-results-{tag}")["QueueUrl"]
    table = f"offload-records-{tag}"
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )
    bucket = f"offload-certs-{tag}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    ses.verify_email_identity(EmailAddress=SENDER)
    for c in (ses, ddb, s3):
        c.close()
    return {"sqs": sqs, "jobs": jobs_url, "jobs_arn": arn["Attributes"]["QueueArn"],
            "results": results_url, "table": table, "bucket": bucket}  # fmt: skip


def make_config(db_url: str, endpoint: str, aws: dict, tmp: Path, batch_size: int) -> Config:
    return Config.model_validate({
        "database": {"url": db_url},
        "server": {"public_url": "https://sidecar.example.org"},
        "security": {"callback_secrets": [SECRET]},
        "offload": {"enabled": True, "provider": "aws", "job_batch_size": batch_size},
        "providers": {"aws": {"region": REGION, "sqs_queue_url": aws["jobs"],
                              "results_queue_url": aws["results"], "s3_bucket": aws["bucket"],
                              "ses_from": SENDER, "endpoint_url": endpoint,
                              "results_wait_seconds": 0},
                      "local": {"certificate_dir": str(tmp / "certs"),
                                "maildir": str(tmp / "mail")}},
    })  # fmt: skip


def lambda_event(messages: list[dict], arn: str) -> dict:
    """The event Lambda's SQS event source mapping passes the function."""
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m.get("Attributes", {}),
        "messageAttributes": {
            name: {"stringValue": v.get("StringValue"), "dataType": v["DataType"]}
            for name, v in (m.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs", "eventSourceARN": arn,
        "awsRegion": REGION,
    } for m in messages]}  # fmt: skip


def run_worker(aws: dict, bodies: list[str]) -> tuple[float, int, int]:
    """Drain the job queue through the handler; (seconds in the handler, invocations,
    records returned to the queue). Every body received is appended to `bodies`."""
    sqs, in_handler, invocations, returned = aws["sqs"], 0.0, 0, 0
    while True:
        msgs = sqs.receive_message(
            QueueUrl=aws["jobs"], MaxNumberOfMessages=10, WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"],
        ).get("Messages", [])  # fmt: skip
        if not msgs:
            return in_handler, invocations, returned
        bodies += [m["Body"] for m in msgs]
        t = time.perf_counter()
        response = lambda_handler.handler(lambda_event(msgs, aws["jobs_arn"]), LambdaContext())
        in_handler += time.perf_counter() - t
        invocations += 1
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        returned += len(failed)
        done = [m for m in msgs if m["MessageId"] not in failed]
        if done:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                       for i, m in enumerate(done)]  # fmt: skip
            sqs.delete_message_batch(QueueUrl=aws["jobs"], Entries=entries)


def send_bare(ses, p: dict) -> None:
    ses.send_email(
        FromEmailAddress=SENDER,
        Destination={"ToAddresses": [p["email"]]},
        Content={"Simple": {
            "Subject": {"Data": p["subject"], "Charset": "UTF-8"},
            "Body": {"Html": {"Data": p["html"], "Charset": "UTF-8"},
                     "Text": {"Data": p["text"], "Charset": "UTF-8"}},
        }},
    )  # fmt: skip


def call_costs(endpoint: str, table: str, emails: list[dict]) -> dict[str, float]:
    """Mean ms of one bare call of each kind the worker makes per recipient (same shapes
    as its claim and mark-sent), to explain the ratio; not part of the floor."""
    kw = dict(region_name=REGION, endpoint_url=endpoint)
    ses, ddb = boto3.client("sesv2", **kw), boto3.client("dynamodb", **kw)
    names = {"#s": "state", "#r": "round"}

    def claim(i: int, _p: dict) -> None:
        ddb.put_item(
            TableName=table,
            Item={"pk": {"S": f"probe#{i}"}, "state": {"S": "sending"}, "round": {"N": "0"},
                  "job_id": {"S": "probe"}, "claimed_at": {"N": "1"},
                  "lease_until": {"N": "2"}, "expires_at": {"N": "3"}},
            ConditionExpression="attribute_not_exists(pk) OR (#s <> :sent AND #r < :round)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={":sent": {"S": "sent"}, ":round": {"N": "0"}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )  # fmt: skip

    def mark_sent(i: int, _p: dict) -> None:
        ddb.update_item(
            TableName=table, Key={"pk": {"S": f"probe#{i}"}},
            UpdateExpression="SET #s = :state, timesent = :t, expires_at = :e, external_id = :x",
            ConditionExpression="#r = :round", ExpressionAttributeNames=names,
            ExpressionAttributeValues={":state": {"S": "sent"}, ":t": {"N": "1"},
                                       ":e": {"N": "2"}, ":x": {"S": "0" * 60},
                                       ":round": {"N": "0"}},
        )  # fmt: skip

    costs = {}
    for name, call in (("SendEmail", lambda i, p: send_bare(ses, p)), ("PutItem", claim),
                       ("UpdateItem", mark_sent)):  # fmt: skip
        t = time.perf_counter()
        for i, p in enumerate(emails):
            call(i, p)
        costs[name] = (time.perf_counter() - t) / len(emails) * 1000
    ses.close()
    ddb.close()
    return costs


def sent_to(url: str, domains: set[str]) -> int:
    """Messages moto's SES accepted for addresses in `domains`."""
    n = 0
    for m in ses_sent(url):
        dest = m["destinations"]
        to = dest.get("ToAddresses", []) if isinstance(dest, dict) else dest
        n += sum(a.rpartition("@")[2] in domains for a in to)
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--emails", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--profile", action="store_true",
                    help="run the pipeline under cProfile; print where the time goes")  # fmt: skip
    args = ap.parse_args()
    os.environ.update(AWS_ENV)
    for name in AWS_UNSET:
        os.environ.pop(name, None)
    with (
        tempfile.TemporaryDirectory(prefix="bench-aws-pipeline-") as tmpdir,
        moto_process() as endpoint,
    ):
        tmp = Path(tmpdir)
        aws = setup(endpoint)
        # the Lambda function's environment; the worker's boto3 clients take the endpoint
        # from AWS_ENDPOINT_URL (the sidecar's clients are given theirs explicitly)
        os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION,
                           "OFFLOAD_IDEMPOTENCY_TABLE": aws["table"],
                           "OFFLOAD_CALLBACK_SECRET": SECRET})  # fmt: skip
        rt = Runtime(make_config(f"sqlite:///{tmp}/ledger.db", endpoint, aws, tmp,
                                 args.batch_size))  # fmt: skip
        rt.ready_db()
        created = create(args.emails, args.batch_size)
        domains = {p.email.rpartition("@")[2] for p in people(args.emails)}
        offload = rt.aws  # clients built here, untimed
        reader = offload.reader(aws["results"])
        bodies: list[str] = []

        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        t0 = time.perf_counter()
        while offload.submitter.run_once(created.job_id):
            pass
        t1 = time.perf_counter()
        in_handler, invocations, returned = run_worker(aws, bodies)
        t2 = time.perf_counter()
        applied = 0
        while n := poll_results(reader, rt.callbacks):
            applied += n
        t3 = time.perf_counter()
        if profiler:
            profiler.disable()
        sent = (
            Recipient.select()
            .where(Recipient.job == created.job_id, Recipient.status == RecipientStatus.SENT)
            .count()
        )
        ses_count = sent_to(endpoint, domains)
        rt.close()

        # Floor: the same rendered emails, one bare SendEmail each, same sender.
        emails = [p for b in bodies for p in decode_body(b.encode())["recipients"]]
        ses = boto3.client("sesv2", region_name=REGION, endpoint_url=endpoint)
        t = time.perf_counter()
        for p in emails:
            send_bare(ses, p)
        floor = time.perf_counter() - t
        ses.close()
        costs = call_costs(endpoint, aws["table"], emails[:500])
        aws["sqs"].close()

    total = t3 - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    html = sum(len(p["html"].encode()) for p in emails) / max(len(emails), 1)
    text = sum(len(p["text"].encode()) for p in emails) / max(len(emails), 1)
    print(f"emails:                {created.pending} in {created.batches} batches, "
          f"{len(bodies)} SQS messages, {invocations} handler invocations")  # fmt: skip
    print(f"verified:              {sent} sent in the ledger, {ses_count} in moto SES for "
          f"this run, {applied} callbacks applied, {returned} records returned to the "
          "queue")  # fmt: skip
    print(f"end to end:            {total:.2f} s  ({args.emails / total:.0f} emails/s)")
    print(f"  submit (sidecar):    {t1 - t0:.2f} s  render + build + gzip + SQS + ledger")
    print(f"  worker:              {t2 - t1:.2f} s  of which {in_handler:.2f} s in the handler "
          f"(claim + SendEmail + mark sent + callback), the rest receive/delete")  # fmt: skip
    print(f"  results apply:       {t3 - t2:.2f} s  poll_results until the queue is empty")
    print(f"floor (bare sesv2):    {floor:.2f} s  ({len(emails) / floor:.0f} emails/s, "
          f"{len(emails)} SendEmail, mean html {html:.0f} B, text {text:.0f} B)")  # fmt: skip
    print(f"ratio end to end/floor: {total / floor:.2f}  (target <= 1.3)")
    per = (t2 - t1) / max(len(emails), 1) * 1000
    calls = ", ".join(f"{name} {ms:.2f}" for name, ms in costs.items())
    sample = min(len(emails), 500)
    print(f"per recipient:         worker {per:.2f} ms; bare calls at moto ({sample} each), "
          f"ms: {calls}; sum {sum(costs.values()):.2f}")  # fmt: skip
    print(f"peak RSS:              {rss:.0f} MB (this process, moto excluded)")
    if profiler:
        print("\nprofile of the pipeline (times inflated by cProfile; read the shares):")
        stats = pstats.Stats(profiler, stream=sys.stdout).strip_dirs()
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
