"""Runs the AWS worker as Lambda's SQS event source mapping would, against moto.

Receive up to `batch_size` messages, hand them to the handler as a real SQS event,
delete those not named in `batchItemFailures`, and let the failed ones come back
(their visibility is reset at once, where Lambda would wait for the timeout).
"""

import hashlib
from dataclasses import dataclass


@dataclass
class Context:
    """The part of Lambda's context object the worker reads."""

    remaining_ms: int = 900_000
    function_name: str = "offload-worker"
    aws_request_id: str = "test-request"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def sqs_event(messages: list[dict], queue_arn: str, region: str = "eu-west-1") -> dict:
    """Lambda's event for messages from ReceiveMessage (with All attributes)."""
    records = []
    for m in messages:
        attrs = m.get("Attributes", {})
        records.append({
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": {
                "ApproximateReceiveCount": attrs.get("ApproximateReceiveCount", "1"),
                "SentTimestamp": attrs.get("SentTimestamp", "0"),
                "SenderId": attrs.get("SenderId", "AIDAEXAMPLE"),
                "ApproximateFirstReceiveTimestamp": attrs.get(
                    "ApproximateFirstReceiveTimestamp", "0"
                ),
                **({"MessageGroupId": attrs["MessageGroupId"]}
                   if "MessageGroupId" in attrs else {}),
            },
            "messageAttributes": {},
            "md5OfBody": hashlib.md5(m["Body"].encode()).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        })  # fmt: skip
    return {"Records": records}


def queue_arn(sqs, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]


def drain_once(sqs, url: str, handle, *, batch_size: int = 10, context=None) -> tuple[int, int]:
    """One poll of the event source mapping; returns (messages handed over, failures)."""
    resp = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=min(batch_size, 10), WaitTimeSeconds=0,
        MessageSystemAttributeNames=["All"], VisibilityTimeout=120,
    )  # fmt: skip
    messages = resp.get("Messages", [])
    if not messages:
        return 0, 0
    result = handle(sqs_event(messages, queue_arn(sqs, url)), context or Context())
    failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
    done = [m for m in messages if m["MessageId"] not in failed]
    for start in range(0, len(done), 10):
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                     for i, m in enumerate(done[start : start + 10])],
        )  # fmt: skip
    for m in messages:
        if m["MessageId"] in failed:
            sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
            )
    return len(messages), len(failed)
