"""Batch messages into SQS with `SendMessageBatch` (docs/job-message.md).

The bodies come already built and split by `providers.message.build_batch_messages`,
each within the queue's `MaximumMessageSize`; this module only packs them into
requests (at most 10 entries, and the sum of the bodies within the same limit, as SQS
counts a batch's payload against it) and sends them.

Retries happen at two levels. botocore ("standard" mode) retries a whole request on
throttling, 5xx and connection errors. An entry SQS lists in `Failed` with
`SenderFault` false is resent alone with capped exponential backoff; one with
`SenderFault` true is reported failed at once. Nothing is dropped: every message ends
accepted (with its SQS MessageId), reported failed (with the reason), or, when SQS
cannot be reached, `SubmitInterrupted` carries what was accepted before the outage.
"""

import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from providers.aws.clients import Endpoint, client, error_parts, is_transient
from providers.base import (
    BatchOutcome,
    MessageOverLimit,
    ProviderError,
    ProviderUnavailable,
    SubmitInterrupted,
)

log = logging.getLogger(__name__)

#: SendMessageBatch takes at most this many entries
MAX_ENTRIES = 10

_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,70}")
_MISSING_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


@dataclass(frozen=True)
class AwsSettings:
    """What the SQS submitter needs; built by the sidecar from `[providers.aws]`."""

    region: str
    sqs_queue_url: str
    endpoint_url: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    #: botocore attempts per request, first included (throttling, 5xx, connection errors)
    max_attempts: int = 5
    #: sends of one entry SQS reports failed with SenderFault false, first one included
    entry_attempts: int = 4
    backoff_base: float = 0.2
    backoff_max: float = 5.0

    @property
    def is_fifo(self) -> bool:
        return self.sqs_queue_url.endswith(".fifo")


@dataclass(frozen=True)
class QueueInfo:
    """What `check` read from the queue's attributes."""

    url: str
    max_message_bytes: int
    fifo: bool
    dlq_arn: str | None
    max_receive_count: int | None

    def describe(self) -> str:
        kind = "FIFO queue" if self.fifo else "queue"
        if self.dlq_arn:
            redrive = f"dead letters go to {self.dlq_arn} after {self.max_receive_count} receives"
        else:
            redrive = "no redrive policy (DLQ): a poison message is retried until it expires"
        return f"{kind} {self.url}: messages up to {self.max_message_bytes} bytes; {redrive}"


@dataclass
class _Entry:
    batch_id: str
    part: int
    body: str
    size: int
    tag: str = ""
    attempts: int = 0
    message_id: str | None = None
    error: str | None = None  # final: reported failed
    reason: str = "no result from SQS"  # the last server-side failure


def entry_id(batch_id: str, part: int, tag: str = "") -> str:
    """The deterministic SendMessageBatch entry Id (and FIFO dedup id) of one message;
    `tag` (letters, digits, `-`, `_`) tells apart parts of one batch split differently."""
    suffix = f"-{part}" + (f"-{tag}" if tag else "")
    if _ENTRY_ID.fullmatch(batch_id) and len(batch_id) + len(suffix) <= 80:
        return batch_id + suffix
    return _digest(batch_id) + suffix


def _tag(tags: Mapping[str, Sequence[str]], batch_id: str, part: int) -> str:
    given = tags.get(batch_id) or ()
    return given[part] if part < len(given) else ""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def pack(sizes: Sequence[int], limit: int) -> list[tuple[int, int]]:
    """Contiguous (lo, hi) ranges of at most MAX_ENTRIES items whose sizes sum to <= limit."""
    ranges: list[tuple[int, int]] = []
    lo, used = 0, 0
    for i, size in enumerate(sizes):
        if i > lo and (i - lo == MAX_ENTRIES or used + size > limit):
            ranges.append((lo, i))
            lo, used = i, 0
        used += size
    if sizes:
        ranges.append((lo, len(sizes)))
    return ranges


def _client(settings: AwsSettings) -> Any:
    endpoint = Endpoint(
        settings.region, settings.endpoint_url, settings.connect_timeout,
        settings.read_timeout, settings.max_attempts,
    )  # fmt: skip
    return client("sqs", endpoint)


class SqsSubmitter:
    """Sends built batch messages to `settings.sqs_queue_url`; one client, reused."""

    def __init__(
        self,
        settings: AwsSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        self.settings = settings
        self.client = _client(settings)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._limit: int | None = None

    def close(self) -> None:
        self.client.close()

    # --- queue attributes --------------------------------------------------------------

    def check(self) -> QueueInfo:
        """Read the queue's size limit and redrive policy (and refresh the cached limit).

        Raises ProviderUnavailable naming the queue URL when it cannot be read.
        """
        url = self.settings.sqs_queue_url
        attrs = self._call(
            "GetQueueAttributes",
            self.client.get_queue_attributes,
            QueueUrl=url,
            AttributeNames=["MaximumMessageSize", "RedrivePolicy", "QueueArn"],
        )["Attributes"]
        self._limit = int(attrs["MaximumMessageSize"])
        redrive = json.loads(attrs.get("RedrivePolicy") or "{}")
        count = redrive.get("maxReceiveCount")
        return QueueInfo(
            url=url,
            max_message_bytes=self._limit,
            fifo=self.settings.is_fifo,
            dlq_arn=redrive.get("deadLetterTargetArn"),
            max_receive_count=int(count) if count is not None else None,
        )

    def max_message_bytes(self) -> int:
        """The queue's `MaximumMessageSize`, read once; raises ProviderUnavailable."""
        if self._limit is None:
            self.check()
        assert self._limit is not None
        return self._limit

    # --- submission --------------------------------------------------------------------

    def submit(
        self,
        batches: Mapping[str, Sequence[bytes]],
        tags: Mapping[str, Sequence[str]] | None = None,
    ) -> dict[str, BatchOutcome]:
        """Send every body of every batch (batch_id → its bodies, in part order).

        Returns a BatchOutcome per batch_id; a batch is `queued` once SQS accepted every
        part. Raises MessageOverLimit before any send when a body is over the queue's
        limit, and SubmitInterrupted (transient, with the outcomes so far) when SQS
        cannot be reached after botocore's retries.
        Entry Ids, and on a FIFO queue the deduplication ids, are `entry_id(batch_id,
        part, tag)`, so a resend within SQS's 5-minute window is dropped by a FIFO queue.
        `tags` (batch_id → one per part) name what each part holds: a resend split at
        other recipients is then not taken for the first one.
        """
        limit = self.max_message_bytes()
        tags = tags or {}
        entries = [
            _Entry(batch_id, part, body.decode("utf-8"), len(body), _tag(tags, batch_id, part))
            for batch_id, bodies in batches.items()
            for part, body in enumerate(bodies)
        ]
        for e in entries:
            if e.size > limit:
                raise MessageOverLimit(
                    f"batch {e.batch_id}: message part {e.part} is {e.size} bytes, over the "
                    f"{limit}-byte MaximumMessageSize of {self.settings.sqs_queue_url}; "
                    "build it with build_batch_messages(max_bytes=max_message_bytes())"
                )
        pending = entries
        while pending:
            self._send_all(pending, limit, entries, batches)
            retry = [e for e in pending if e.message_id is None and e.error is None]
            if retry:
                delay = self._backoff(max(e.attempts for e in retry))
                log.warning(
                    "queue %s: %d entries failed server side; resending in %.2fs",
                    self.settings.sqs_queue_url, len(retry), delay,
                )  # fmt: skip
                self._sleep(delay)
            pending = retry
        return _outcomes(entries, batches)

    def _send_all(
        self,
        pending: list[_Entry],
        limit: int,
        entries: list[_Entry],
        batches: Mapping[str, Sequence[bytes]],
    ) -> None:
        for lo, hi in pack([e.size for e in pending], limit):
            group = pending[lo:hi]
            try:
                self._send(group)
            except ProviderUnavailable as exc:
                raise SubmitInterrupted(str(exc), _outcomes(entries, batches)) from exc
            except ProviderError as exc:
                for e in group:  # the whole request refused: this will not pass as it is
                    e.error = str(exc)

    def _send(self, group: list[_Entry]) -> None:
        by_id = {entry_id(e.batch_id, e.part, e.tag): e for e in group}
        request = []
        for eid, e in by_id.items():
            item = {"Id": eid, "MessageBody": e.body}
            if self.settings.is_fifo:
                item["MessageDeduplicationId"] = eid
                item["MessageGroupId"] = e.batch_id
            request.append(item)
            e.attempts += 1
        resp = self._call(
            "SendMessageBatch",
            self.client.send_message_batch,
            QueueUrl=self.settings.sqs_queue_url,
            Entries=request,
        )
        for ok in resp.get("Successful", []):
            by_id[ok["Id"]].message_id = ok["MessageId"]
        for bad in resp.get("Failed", []):
            e = by_id[bad["Id"]]
            e.reason = f"SQS {bad.get('Code', '?')}: {bad.get('Message', '')}".strip()
            if bad.get("SenderFault", True):
                e.error = e.reason
        for e in group:
            if e.message_id:
                log.debug("batch %s: part %d queued as %s", e.batch_id, e.part, e.message_id)
            elif e.error is None and e.attempts >= self.settings.entry_attempts:
                e.error = f"{e.reason} (after {e.attempts} attempts)"
            if e.error:
                log.warning("batch %s: part %d refused by SQS: %s", e.batch_id, e.part, e.error)

    def _backoff(self, attempt: int) -> float:
        cap = min(self.settings.backoff_max, self.settings.backoff_base * 2 ** (attempt - 1))
        return self._rng.uniform(cap / 2, cap)

    def _call(self, operation: str, method: Callable[..., Any], **params: Any) -> Any:
        url = self.settings.sqs_queue_url
        try:
            return method(**params)
        except ClientError as exc:
            code, status, text = error_parts(exc)
            if code in _MISSING_QUEUE:
                raise ProviderUnavailable(
                    f"SQS queue {url} does not exist or these credentials cannot see it; "
                    "check providers.aws.sqs_queue_url and providers.aws.region"
                ) from None
            message = f"SQS {operation} on {url}: {code}: {text}"
            if is_transient(code, status) or code.startswith("AccessDenied"):
                raise ProviderUnavailable(message) from None
            raise ProviderError(message) from None
        except BotoCoreError as exc:
            raise ProviderUnavailable(f"SQS {operation} on {url}: {exc}") from None


def _outcomes(
    entries: list[_Entry], batches: Mapping[str, Sequence[bytes]]
) -> dict[str, BatchOutcome]:
    by_batch: dict[str, list[_Entry]] = {batch_id: [] for batch_id in batches}
    for e in entries:
        by_batch[e.batch_id].append(e)
    return {
        batch_id: BatchOutcome(
            batch_id,
            tuple(e.message_id for e in parts),
            tuple(e.error for e in parts),
        )
        for batch_id, parts in by_batch.items()
    }
