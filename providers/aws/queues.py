"""Reading the queues the sidecar polls: results (signed callbacks), the DLQ, SES events.

Every queue delivers at least once: a message is deleted only after what it says is
durable in the ledger, and whatever reads it must be idempotent.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from providers.aws.clients import Endpoint, client, translate

log = logging.getLogger(__name__)

#: the message attribute that carries a callback's X-Signature through a results queue
SIGNATURE_ATTRIBUTE = "signature"


@dataclass(frozen=True)
class QueueDepth:
    """SQS's approximate counts of one queue (they lag by up to a minute)."""

    waiting: int  # ApproximateNumberOfMessages: ready to be received
    in_flight: int  # ApproximateNumberOfMessagesNotVisible: received, not yet deleted
    delayed: int  # ApproximateNumberOfMessagesDelayed

    @property
    def total(self) -> int:
        return self.waiting + self.in_flight + self.delayed


@dataclass(frozen=True)
class Received:
    message_id: str
    receipt: str
    body: bytes
    attributes: dict[str, str]  # string message attributes
    receive_count: int


class QueueReader:
    """Receives and deletes messages of one queue; one client, reused."""

    def __init__(self, url: str, endpoint: Endpoint, *, wait_seconds: int = 0):
        self.url = url
        self.wait_seconds = wait_seconds
        # a long poll must not be cut by the client's own read timeout
        self.client = client("sqs", endpoint, read_timeout=max(30.0, wait_seconds + 10.0))

    def close(self) -> None:
        self.client.close()

    def receive(self, max_messages: int = 10) -> list[Received]:
        """Up to `max_messages` (≤ 10) messages; raises ProviderUnavailable / ProviderError."""
        try:
            resp = self.client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=self.wait_seconds,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"SQS ReceiveMessage on {self.url}") from None
        return [_received(m) for m in resp.get("Messages", [])]

    def delete(self, receipts: Sequence[str]) -> None:
        """Delete handled messages (10 a request); a receipt SQS refuses is logged, not raised:
        that message comes back and is handled again, idempotently."""
        for start in range(0, len(receipts), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": r}
                for i, r in enumerate(receipts[start : start + 10])
            ]
            try:
                resp = self.client.delete_message_batch(QueueUrl=self.url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                raise translate(exc, f"SQS DeleteMessageBatch on {self.url}") from None
            for bad in resp.get("Failed", []):
                log.warning(
                    "queue %s: could not delete a handled message (%s); it will be read again",
                    self.url, bad.get("Code"),
                )  # fmt: skip

    def attributes(self) -> dict[str, str]:
        """The queue's attributes (depth, redrive policy...); raises ProviderError."""
        try:
            resp = self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["All"])
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"SQS GetQueueAttributes on {self.url}") from None
        return resp.get("Attributes", {})

    def depth(self) -> QueueDepth:
        """How many messages wait, are in flight and are delayed; raises ProviderError."""
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        try:
            resp = self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=names)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"SQS GetQueueAttributes on {self.url}") from None
        attrs = resp.get("Attributes", {})
        waiting, in_flight, delayed = (int(attrs.get(n, 0)) for n in names)
        return QueueDepth(waiting, in_flight, delayed)


def _received(m: dict[str, Any]) -> Received:
    attrs = {
        name: value["StringValue"]
        for name, value in (m.get("MessageAttributes") or {}).items()
        if "StringValue" in value
    }
    count = int((m.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))
    return Received(m["MessageId"], m["ReceiptHandle"], m["Body"].encode(), attrs, count)
