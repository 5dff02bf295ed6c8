"""Delivery records in DynamoDB: what makes a redelivered SQS message send nothing twice.

No email API takes an idempotency key. One invocation at a time holds a batch (an item
`batch#{batch_id}` with an owner and a lease until that invocation's deadline); only the
holder reads and writes the batch's records, so they are written in bulk, without
conditions: per chunk of recipients one BatchGetItem, one UpdateItem noting on the holder
item the recipients about to be sent (`inflight`), and one BatchWriteItem per 25 sends
recorded. A holder that stops mid-chunk leaves `inflight` behind: the next holder records
those without a record as `sending` of that round (outcome unknown: reported failed, sent
again only in a later round). Record layout (partition key `pk`, String):

| attribute         | type | meaning                                                        |
|-------------------|------|----------------------------------------------------------------|
| `pk`              | S    | `"{batch_id}#{userid}"`                                        |
| `state`           | S    | `sending` (started, outcome unknown), `sent` or `failed`       |
| `round`           | N    | the message's `attempt` (the sidecar's delivery round)         |
| `job_id`          | S    | for people reading the table                                   |
| `lease_until`     | N    | sending: epoch ms until which its invocation may still run     |
| `expires_at`      | N    | epoch seconds; the table's TTL attribute (14 days on)          |
| `external_id`     | S    | sent: the SES MessageId (absent for a certificate-only job)    |
| `certificate_key` | S    | sent: the S3 key of the certificate PDF, when one was made     |
| `timesent`        | N    | sent: epoch seconds                                            |
| `error_message`   | S    | failed: the reason reported to the sidecar                     |
| `attempts`        | N    | failed: delivery rounds tried (`round + 1`)                    |

The holder item: `owner` (S), `lease_until` (N, epoch ms), `inflight` (NS of userids),
`inflight_round` (N), `expires_at`.

A recipient is sent when it has no record, or a record of an earlier round that is not
`sent`: within one round a recipient is tried once; a later round (the sidecar retrying
failed recipients) tries again everything not `sent`.
"""

import logging
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from providers.base import ProviderUnavailable

log = logging.getLogger(__name__)

SENDING, SENT, FAILED = "sending", "sent", "failed"
_NAMES = {"#s": "state", "#r": "round"}


class LedgerUnavailable(ProviderUnavailable):
    """The DynamoDB table cannot be read or written now (or does not exist)."""


@dataclass(frozen=True)
class Record:
    """One delivery record as read back from the table."""

    state: str
    round: int
    lease_until: int | None = None
    external_id: str | None = None
    certificate_key: str | None = None
    timesent: int | None = None
    error_message: str | None = None
    attempts: int | None = None


@dataclass(frozen=True)
class Taken:
    """The batch is ours; `started`: userids a stopped holder began in `round` and may
    have sent without recording it."""

    started: set[int]
    round: int


@dataclass(frozen=True)
class Sent:
    """One send of this invocation, waiting to be recorded by `mark_sent_many`."""

    key: str
    round: int
    job_id: str
    external_id: str | None
    certificate_key: str | None
    timesent: int


def record_key(batch_id: str, userid: int) -> str:
    """The partition key of one recipient's record in one batch."""
    return f"{batch_id}#{userid}"


def batch_key(batch_id: str) -> str:
    """The partition key of the batch's holder (the invocation delivering it)."""
    return f"batch#{batch_id}"


class Ledger:
    """Claims and outcomes of (batch_id, userid) deliveries in one DynamoDB table."""

    def __init__(self, client: Any, table: str, *, ttl_seconds: int):
        self.client = client
        self.table = table
        self.ttl_seconds = ttl_seconds

    def claim_batch(
        self, batch_id: str, owner: str, *, now_ms: int, lease_until_ms: int
    ) -> "Taken | None":
        """Take the batch for this invocation until `lease_until_ms`; None when another live
        invocation holds it. Only the holder writes the batch's records, so those writes
        need no condition. The result names the recipients a previous holder had started
        and not recorded (it stopped mid-chunk). Raises LedgerUnavailable."""
        key = batch_key(batch_id)
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key={"pk": {"S": key}},
                UpdateExpression="SET #o = :owner, lease_until = :lease, expires_at = :expires",
                ConditionExpression=(
                    "attribute_not_exists(pk) OR lease_until < :now OR #o = :owner"
                ),
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={
                    ":owner": {"S": owner},
                    ":lease": {"N": str(lease_until_ms)},
                    ":expires": {"N": str(lease_until_ms // 1000 + self.ttl_seconds)},
                    ":now": {"N": str(now_ms)},
                },
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return None
            raise self._unavailable("UpdateItem", key, exc) from None
        except BotoCoreError as exc:
            raise self._unavailable("UpdateItem", key, exc) from None
        old = resp.get("Attributes") or {}
        if old.get("owner", {}).get("S") == owner:
            return Taken(set(), 0)
        started = {int(n) for n in old.get("inflight", {}).get("NS", [])}
        return Taken(started, int(old.get("inflight_round", {}).get("N", "0")))

    def start(self, batch_id: str, owner: str, userids: list[int], round_: int) -> None:
        """Note, on the holder's item, the recipients about to be sent (one write a chunk):
        if this invocation stops before recording them, the next holder reports them
        unknown instead of sending them again. Raises LedgerUnavailable, also when the
        batch was taken over (the lease ran out)."""
        key = batch_key(batch_id)
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": {"S": key}},
                UpdateExpression="SET inflight = :ids, inflight_round = :round",
                ConditionExpression="#o = :owner",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={
                    ":ids": {"NS": [str(u) for u in userids]},
                    ":round": {"N": str(round_)},
                    ":owner": {"S": owner},
                },
            )
        except ClientError as exc:
            raise self._unavailable("UpdateItem", key, exc) from None
        except BotoCoreError as exc:
            raise self._unavailable("UpdateItem", key, exc) from None

    def release_batch(self, batch_id: str, owner: str) -> None:
        """Give the batch back (if still ours), its started recipients all recorded.

        Raises LedgerUnavailable (the lease ends anyway)."""
        try:
            self.client.delete_item(
                TableName=self.table,
                Key={"pk": {"S": batch_key(batch_id)}},
                ConditionExpression="#o = :owner",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise self._unavailable("DeleteItem", batch_key(batch_id), exc) from None
        except BotoCoreError as exc:
            raise self._unavailable("DeleteItem", batch_key(batch_id), exc) from None

    def read_many(self, keys: list[str]) -> dict[str, Record]:
        """The records of `keys` that exist (strongly consistent, 100 a request).

        Raises LedgerUnavailable."""
        found: dict[str, Record] = {}
        for start in range(0, len(keys), 100):
            todo = {self.table: {"Keys": [{"pk": {"S": k}} for k in keys[start : start + 100]],
                                 "ConsistentRead": True}}  # fmt: skip
            for _ in range(5):
                try:
                    resp = self.client.batch_get_item(RequestItems=todo)
                except (ClientError, BotoCoreError) as exc:
                    raise self._unavailable("BatchGetItem", keys[start], exc) from None
                for item in resp.get("Responses", {}).get(self.table, []):
                    found[item["pk"]["S"]] = _record(item)
                todo = resp.get("UnprocessedKeys") or {}
                if not todo:
                    break
            else:
                raise LedgerUnavailable(f"table {self.table}: reads left unprocessed (throttled)")
        return found

    def mark_sending_many(
        self, keys: list[str], round_: int, *, job_id: str, now: float, lease_until_ms: int
    ) -> None:
        """Record the batch holder's intent to send each key in `round_`, before any send.

        Raises LedgerUnavailable (then nothing of these may be sent)."""
        self._write_many([self._claim_item(k, round_, job_id, now, lease_until_ms) for k in keys])

    def mark_sent_many(self, sent: list["Sent"]) -> None:
        """Record the holder's sends, 25 a request; raises LedgerUnavailable (sends stand)."""
        self._write_many([self._sent_item(s) for s in sent])

    def _write_many(self, items: list[dict]) -> None:
        """Put items with BatchWriteItem (25 a request), resending what DynamoDB left
        unprocessed. Unconditional: only the holder of the batch writes its records."""
        for start in range(0, len(items), 25):
            todo = {self.table: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
            for attempt in range(6):
                try:
                    resp = self.client.batch_write_item(RequestItems=todo)
                except (ClientError, BotoCoreError) as exc:
                    first = items[start]["pk"]["S"]
                    raise self._unavailable("BatchWriteItem", first, exc) from None
                todo = resp.get("UnprocessedItems") or {}
                if not todo:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))
            else:
                raise LedgerUnavailable(f"table {self.table}: writes left unprocessed (throttled)")

    def _claim_item(self, key, round_, job_id, now, lease_until_ms) -> dict:
        return {
            "pk": {"S": key},
            "state": {"S": SENDING},
            "round": {"N": str(round_)},
            "job_id": {"S": job_id},
            "claimed_at": {"N": str(int(now))},
            "lease_until": {"N": str(lease_until_ms)},
            "expires_at": {"N": str(int(now) + self.ttl_seconds)},
        }

    def _sent_item(self, s: "Sent") -> dict:
        item = {
            "pk": {"S": s.key},
            "state": {"S": SENT},
            "round": {"N": str(s.round)},
            "job_id": {"S": s.job_id},
            "timesent": {"N": str(s.timesent)},
            "expires_at": {"N": str(s.timesent + self.ttl_seconds)},
        }
        if s.external_id:
            item["external_id"] = {"S": s.external_id}
        if s.certificate_key:
            item["certificate_key"] = {"S": s.certificate_key}
        return item

    def mark_failed(
        self, key: str, round_: int, *, job_id: str, error_message: str, attempts: int, now: float
    ) -> None:
        """Record `key` as failed in `round_` (the holder's write); raises LedgerUnavailable."""
        self._write_many([{
            "pk": {"S": key},
            "state": {"S": FAILED},
            "round": {"N": str(round_)},
            "job_id": {"S": job_id},
            "error_message": {"S": error_message},
            "attempts": {"N": str(attempts)},
            "expires_at": {"N": str(int(now) + self.ttl_seconds)},
        }])  # fmt: skip

    def _unavailable(self, operation: str, key: str, exc: Exception) -> LedgerUnavailable:
        reason = f"{_code(exc)}: {_message(exc)}" if isinstance(exc, ClientError) else str(exc)
        return LedgerUnavailable(f"DynamoDB {operation} on table {self.table} ({key}): {reason}")


def _record(item: dict) -> Record:
    def text(name: str) -> str | None:
        return item[name]["S"] if name in item else None

    def number(name: str) -> int | None:
        return int(item[name]["N"]) if name in item else None

    return Record(
        state=text("state") or SENDING,
        round=number("round") or 0,
        lease_until=number("lease_until"),
        external_id=text("external_id"),
        certificate_key=text("certificate_key"),
        timesent=number("timesent"),
        error_message=text("error_message"),
        attempts=number("attempts"),
    )


def _code(exc: Exception) -> str:
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""


def _message(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Message", "")
