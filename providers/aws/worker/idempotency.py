"""Delivery records in DynamoDB: one item per (batch_id, userid), claimed before any send.

No email API takes an idempotency key, so this table is what makes a redelivered SQS
message send nothing twice. Item layout (partition key `pk`, String):

| attribute         | type | meaning                                                        |
|-------------------|------|----------------------------------------------------------------|
| `pk`              | S    | `"{batch_id}#{userid}"`                                        |
| `state`           | S    | `sending` (claimed), `sent` or `failed`                        |
| `round`           | N    | the message's `attempt` (the sidecar's delivery round)         |
| `job_id`          | S    | for people reading the table                                   |
| `claimed_at`      | N    | epoch seconds of the claim                                     |
| `lease_until`     | N    | epoch milliseconds when the claiming invocation must have ended |
| `expires_at`      | N    | epoch seconds; the table's TTL attribute (14 days on)          |
| `external_id`     | S    | sent: the SES MessageId (absent for a certificate-only job)    |
| `certificate_key` | S    | sent: the S3 key of the certificate PDF, when one was made     |
| `timesent`        | N    | sent: epoch seconds                                            |
| `error_message`   | S    | failed: the reason reported to the sidecar                     |
| `attempts`        | N    | failed: delivery rounds tried (`round + 1`)                    |

A claim succeeds when there is no item, or when the item is not `sent` and belongs to
an earlier round: within one round a recipient is tried once; a later round (the
sidecar retrying failed recipients) tries again everything not `sent`.
"""

import logging
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


def record_key(batch_id: str, userid: int) -> str:
    """The partition key of one recipient's record in one batch."""
    return f"{batch_id}#{userid}"


class Ledger:
    """Claims and outcomes of (batch_id, userid) deliveries in one DynamoDB table."""

    def __init__(self, client: Any, table: str, *, ttl_seconds: int):
        self.client = client
        self.table = table
        self.ttl_seconds = ttl_seconds

    def claim(
        self, key: str, round_: int, *, job_id: str, now: float, lease_until_ms: int
    ) -> Record | None:
        """Claim `key` for `round_`: None when claimed, else the record that prevents it.

        Raises LedgerUnavailable when DynamoDB cannot be reached or refuses the write.
        """
        item = {
            "pk": {"S": key},
            "state": {"S": SENDING},
            "round": {"N": str(round_)},
            "job_id": {"S": job_id},
            "claimed_at": {"N": str(int(now))},
            "lease_until": {"N": str(lease_until_ms)},
            "expires_at": {"N": str(int(now) + self.ttl_seconds)},
        }
        for _ in range(3):  # the item may vanish between the refused put and the read
            try:
                self.client.put_item(
                    TableName=self.table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(pk) OR (#s <> :sent AND #r < :round)",
                    ExpressionAttributeNames=_NAMES,
                    ExpressionAttributeValues={":sent": {"S": SENT}, ":round": {"N": str(round_)}},
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return None
            except ClientError as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise self._unavailable("PutItem", key, exc) from None
                old = exc.response.get("Item") or self._get(key)
            except BotoCoreError as exc:
                raise self._unavailable("PutItem", key, exc) from None
            if old is not None:
                return _record(old)
        raise LedgerUnavailable(f"table {self.table}: {key}: the record changes while read")

    def mark_sent(
        self,
        key: str,
        round_: int,
        *,
        external_id: str | None,
        certificate_key: str | None,
        timesent: int,
    ) -> None:
        """Record `key` as sent in `round_`; raises LedgerUnavailable (the send stands)."""
        values: dict[str, Any] = {
            ":state": {"S": SENT},
            ":timesent": {"N": str(timesent)},
            ":expires": {"N": str(timesent + self.ttl_seconds)},
        }
        sets = ["#s = :state", "timesent = :timesent", "expires_at = :expires"]
        if external_id:
            values[":external_id"] = {"S": external_id}
            sets.append("external_id = :external_id")
        if certificate_key:
            values[":certificate_key"] = {"S": certificate_key}
            sets.append("certificate_key = :certificate_key")
        self._update(key, round_, "SET " + ", ".join(sets), values)

    def mark_failed(
        self, key: str, round_: int, *, error_message: str, attempts: int, now: float
    ) -> None:
        """Record `key` as failed in `round_`; raises LedgerUnavailable."""
        self._update(
            key,
            round_,
            "SET #s = :state, error_message = :error, attempts = :attempts, expires_at = :expires",
            {
                ":state": {"S": FAILED},
                ":error": {"S": error_message},
                ":attempts": {"N": str(attempts)},
                ":expires": {"N": str(int(now) + self.ttl_seconds)},
            },
        )

    def release(self, key: str, round_: int) -> None:
        """Delete this round's `sending` claim so a redelivery tries again.

        Idempotent: a claim already gone (or taken over by another round) is left alone.
        Raises LedgerUnavailable.
        """
        try:
            self.client.delete_item(
                TableName=self.table,
                Key={"pk": {"S": key}},
                ConditionExpression="#s = :sending AND #r = :round",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={
                    ":sending": {"S": SENDING},
                    ":round": {"N": str(round_)},
                },
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise self._unavailable("DeleteItem", key, exc) from None
        except BotoCoreError as exc:
            raise self._unavailable("DeleteItem", key, exc) from None

    def get(self, key: str) -> Record | None:
        """The record of `key` (strongly consistent read), or None; raises LedgerUnavailable."""
        item = self._get(key)
        return None if item is None else _record(item)

    def _get(self, key: str) -> dict | None:
        try:
            resp = self.client.get_item(
                TableName=self.table, Key={"pk": {"S": key}}, ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable("GetItem", key, exc) from None
        return resp.get("Item")

    def _update(self, key: str, round_: int, expression: str, values: dict) -> None:
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": {"S": key}},
                UpdateExpression=expression,
                # only our own claim: never overwrite what a later round wrote meanwhile
                ConditionExpression="#r = :round",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={**values, ":round": {"N": str(round_)}},
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                log.warning(
                    "table %s: %s: taken over by a later round; not updated", self.table, key
                )
                return
            raise self._unavailable("UpdateItem", key, exc) from None
        except BotoCoreError as exc:
            raise self._unavailable("UpdateItem", key, exc) from None

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
