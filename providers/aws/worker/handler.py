"""The AWS Lambda worker: SQS records holding `offload.batch.v1` messages → SES, S3, callback.

Entry point `providers.aws.worker.handler.handler` (SQS event source mapping with
`ReportBatchItemFailures`). Each record body is one batch message (docs/job-message.md),
maybe a gzip envelope, maybe one part of a split batch; each record is reported to the
sidecar in one callback (docs/callback.md), and a record goes back to SQS (listed in
`batchItemFailures`) only when something may still change: a throttled send, an
undelivered callback, time running out, or a body that is not a batch message (which
then reaches the dead-letter queue after the queue's maxReceiveCount).

Environment:
- `OFFLOAD_IDEMPOTENCY_TABLE` (required): DynamoDB table, partition key `pk` (S), TTL
  attribute `expires_at`; layout in `idempotency.py`.
- `OFFLOAD_CALLBACK_SECRET_ARN` (Secrets Manager, SecretString, read once per container)
  or `OFFLOAD_CALLBACK_SECRET`: the HMAC secret that signs callbacks.
- `OFFLOAD_SES_CONFIGURATION_SET`: default configuration set for SES sends.
- `OFFLOAD_CERT_SSE` (`AES256` default, or `aws:kms`), `OFFLOAD_CERT_KMS_KEY_ID`.
- `OFFLOAD_SES_RETRIES` (4): in-invocation retries of a throttled SES/S3 call.
- `OFFLOAD_MIN_REMAINING_MS` (30000): no recipient is started with less time left.
- `AWS_ENDPOINT_URL` (standard boto3): another endpoint, for tests.

Batch header keys read beyond the core ones of docs/job-message.md (all optional):
- `attempt` (int ≥ 0, default 0): the sidecar's delivery round of this batch. A recipient
  is tried once per round; a message with a higher `attempt` resends every recipient of
  the batch not recorded `sent` (and re-reports the sent ones without sending).
- `email.configuration_set`: SES configuration set; wins over the environment's.
- `email.attach_certificate` (bool, default false): attach the certificate PDF, sending
  a raw MIME message; otherwise SES's simple content (HTML + text) is sent.
- `part`, `part_count`: a split batch's part (see `providers.message`); logged only.

Recipient keys read beyond docs/job-message.md (optional):
- `unsubscribe_url` (http(s) URL or null): the learner's one-click unsubscribe link; the
  email then goes as raw MIME with `List-Unsubscribe: <url>` and
  `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).

Per record: take the batch (one invocation at a time; another's live hold sends the
record back to SQS), then per chunk of recipients: read their records, note the ones to
send as started, and per recipient certificate PDF to S3 → SES v2 SendEmail (tags
job_id, batch_id, userid); the sends are recorded `sent` in bulk (`idempotency.py`).
Throttling and 5xx are retried with backoff; if they persist the record goes back to
SQS, what was sent recorded and reported, the rest not started. A SendEmail whose answer
was lost (SES may have taken it) is recorded and reported as an unknown outcome, never
retried: SES takes no idempotency key. Other refusals record
and report the recipient `failed` (`attempts` is the round + 1), never retried in that
round.

A recipient with a record is reported from it: `sent` and `failed` as recorded;
`sending` means an invocation started it and may have sent. While that invocation's
lease runs the record goes back to SQS (its owner will report); after it the recipient
is reported failed with UNKNOWN_OUTCOME and is not resent until a later round.
"""

import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

from providers.aws.worker.batch import Batch, Recipient, parse_batch
from providers.aws.worker.callback import (
    CallbackUndelivered,
    callback_bodies,
    enqueue,
    post,
    queue_region,
    read_secret,
)
from providers.aws.worker.delivery import NO_RETRY_SERVICES, Backoff, Delivery, Refused, Unknown
from providers.aws.worker.idempotency import (
    FAILED,
    SENT,
    Ledger,
    LedgerUnavailable,
    Record,
    Sent,
    Taken,
    record_key,
)
from providers.aws.worker.settings import WorkerSettings
from providers.message import BATCH_SCHEMA, MessageError
from providers.signing import sign

log = logging.getLogger(__name__)

UNKNOWN_OUTCOME = (
    "delivery outcome unknown: the worker stopped during the send; not resent to avoid "
    "a duplicate (jobs retry sends it again)"
)
LOST_ANSWER = (
    "delivery outcome unknown: SES may have taken the email but its answer was lost ({}); "
    "not resent to avoid a duplicate (jobs retry sends it again)"
)
#: time assumed left when there is no Lambda context (a local invocation)
NO_CONTEXT_MS = 15 * 60 * 1000
# botocore's default 60 s timeouts, three attempts, would outlast the whole invocation
_CLIENT_CONFIG = Config(retries={"mode": "standard"}, connect_timeout=5, read_timeout=30)
_NO_RETRY_CONFIG = _CLIENT_CONFIG.merge(
    Config(retries={"mode": "standard", "total_max_attempts": 1})
)
_MAX_ERROR = 1000
#: recipients read in one BatchGetItem and noted as started in one write (a worker killed
#: mid-chunk leaves at most these started: reported unknown, not resent in that round)
CHUNK = 50


class _Busy(Exception):
    """Another invocation holds a live claim on this recipient."""


@dataclass
class _Outcome:
    """What became of one SQS record."""

    updates: list[dict] = field(default_factory=list)
    replayed: int = 0
    first_error: str | None = None
    retry: bool = False  # list the record in batchItemFailures
    stop: bool = False  # start no further record in this invocation


class Worker:
    """Delivers batch messages; one per Lambda container, clients built on first use."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        dynamodb: Any = None,
        s3: Any = None,
        sesv2: Any = None,
        sqs: Any = None,
        secretsmanager: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ):
        self.settings = settings
        given = {"dynamodb": dynamodb, "s3": s3, "sesv2": sesv2, "sqs": sqs,
                 "secretsmanager": secretsmanager}  # fmt: skip
        self._given = {name: client for name, client in given.items() if client is not None}
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._clock = clock
        self._secret = None if settings.callback_secret_arn else settings.callback_secret
        self._session: Any = None
        self._ledger: Ledger | None = None
        self.delivery = Delivery(settings, self.client, sleep=sleep, rng=rng or random.Random())

    @property
    def ledger(self) -> Ledger:
        """The delivery records (its DynamoDB client is built on first use)."""
        if self._ledger is None:
            self._ledger = Ledger(
                self.client("dynamodb"),
                self.settings.idempotency_table,
                ttl_seconds=self.settings.record_ttl_seconds,
            )
        return self._ledger

    def client(self, service: str, region: str | None = None) -> Any:
        """The injected client for `service`, or a boto3 one built once (per region).

        boto3 takes the region from AWS_REGION and the endpoint from AWS_ENDPOINT_URL.
        """
        if service in self._given:
            return self._given[service]
        key = (service, region)
        if key not in self._clients:
            if self._session is None:
                self._session = boto3.session.Session()
            config = _NO_RETRY_CONFIG if service in NO_RETRY_SERVICES else _CLIENT_CONFIG
            self._clients[key] = self._session.client(service, region_name=region, config=config)
        return self._clients[key]

    # --- records ---------------------------------------------------------------------

    def handle(self, event: Mapping[str, Any], context: Any) -> dict:
        """Process an SQS event; the partial batch response. Never raises for one record."""
        failures: list[str] = []
        stop = False
        records = event.get("Records") or []
        # this invocation, as holder of the batches it delivers
        request = getattr(context, "aws_request_id", None) or "local"
        self._owner = f"{request}:{uuid.uuid4().hex[:12]}"
        for record in records:
            mid = str(record.get("messageId", "?"))
            if not stop and self._out_of_time(context):
                log.warning(
                    "SQS message %s and the rest: less than %d ms left; returned to the queue",
                    mid, self.settings.min_remaining_ms,
                )  # fmt: skip
                stop = True
            if stop:
                failures.append(mid)
                continue
            try:
                outcome = self._process(mid, record, context)
            except Exception:  # the loop boundary: one record's bug must not lose the others
                log.exception("SQS message %s: unexpected error; returned to the queue", mid)
                failures.append(mid)
                continue
            if outcome.retry:
                failures.append(mid)
            stop = outcome.stop
        if failures:
            log.info("%d of %d SQS messages returned to the queue", len(failures), len(records))
        return {"batchItemFailures": [{"itemIdentifier": mid} for mid in failures]}

    def _process(self, mid: str, record: Mapping[str, Any], context: Any) -> _Outcome:
        body = record.get("body")
        try:
            if not isinstance(body, str):
                raise MessageError("body: missing")
            batch = parse_batch(body.encode("utf-8"))
        except MessageError as exc:
            log.error(
                "SQS message %s: not a valid %s message (%s); returned to the queue, it goes "
                "to the dead-letter queue after the queue's maxReceiveCount",
                mid, BATCH_SCHEMA, exc,
            )  # fmt: skip
            return _Outcome(retry=True)
        where = f"{batch.describe()} (SQS message {mid})"
        outcome = _Outcome()
        now = self._clock()
        lease_until_ms = int(now * 1000) + self._remaining_ms(context)
        try:
            taken = self.ledger.claim_batch(
                batch.batch_id, self._owner, now_ms=int(now * 1000), lease_until_ms=lease_until_ms
            )
            if taken is not None and taken.started:
                self._note_stopped_holder(where, batch, taken)
        except LedgerUnavailable as exc:
            log.warning("%s: %s; returned to the queue", where, exc)
            return _Outcome(retry=True, stop=True)
        if taken is None:
            log.info("%s: another invocation is delivering this batch; returned to the queue",
                     where)  # fmt: skip
            return _Outcome(retry=True)
        recorded = True
        try:
            recipients = list(batch.recipients)
            for start in range(0, len(recipients), CHUNK):
                chunk = recipients[start : start + CHUNK]
                recorded = self._deliver_chunk(where, batch, chunk, context, outcome)
                if outcome.stop or not recorded:
                    break
        finally:
            if recorded:  # else the started list stays for the next holder to report unknown
                try:
                    self.ledger.release_batch(batch.batch_id, self._owner)
                except LedgerUnavailable as exc:
                    log.warning("%s: batch not given back (%s); its lease ends anyway", where, exc)
        if outcome.updates and not self._report(where, batch, outcome.updates):
            outcome.retry = True
        failed = sum(u["status"] == FAILED for u in outcome.updates)
        log.info(
            "%s: %d sent, %d failed (%d reported from earlier deliveries)%s%s",
            where, len(outcome.updates) - failed, failed, outcome.replayed,
            f"; first failure: {outcome.first_error}" if outcome.first_error else "",
            "; returned to the queue" if outcome.retry else "",
        )  # fmt: skip
        return outcome

    # --- one recipient ---------------------------------------------------------------

    def _note_stopped_holder(self, where: str, batch: Batch, taken: Taken) -> None:
        """Turn what a stopped holder had started and not recorded into `sending` records
        of its round: reported unknown in that round, sent again only in a later one."""
        keys = [record_key(batch.batch_id, u) for u in sorted(taken.started)]
        recorded = self.ledger.read_many(keys)
        unknown = [k for k in keys if k not in recorded]
        if unknown:
            log.warning("%s: %d recipients were being sent by an invocation that stopped",
                        where, len(unknown))  # fmt: skip
            self.ledger.mark_sending_many(
                unknown, taken.round, job_id=batch.job_id, now=self._clock(), lease_until_ms=0
            )

    def _deliver_chunk(
        self, where: str, batch: Batch, chunk: list[Recipient], context: Any, outcome: _Outcome
    ) -> bool:
        """Read the chunk's records, note the ones to send on the batch's holder item (one
        write), send them, record the sends (one write per 25). Runs while this invocation
        holds the batch.

        Sets `outcome.stop` when the record must stop here (time, throttling, DynamoDB
        down). Returns False only when sends could not be recorded: then the holder item
        keeps them as started, and the next holder reports them unknown.
        """
        now = self._clock()
        keys = {r.userid: record_key(batch.batch_id, r.userid) for r in chunk}
        try:
            records = self.ledger.read_many(list(keys.values()))
        except LedgerUnavailable as exc:
            log.warning("%s: %s; returned to the queue", where, exc)
            outcome.retry = outcome.stop = True
            return True
        todo: list[Recipient] = []
        for r in chunk:
            old = records.get(keys[r.userid])
            if old is None or (old.state != SENT and old.round < batch.attempt):
                todo.append(r)
                continue
            try:
                outcome.updates.append(self._replay(batch, r, old, now))
                outcome.replayed += 1
            except _Busy:
                outcome.retry = True
        if not todo:
            return True
        try:
            self.ledger.start(batch.batch_id, self._owner, [r.userid for r in todo], batch.attempt)
        except LedgerUnavailable as exc:
            log.warning("%s: %s; returned to the queue, nothing of it sent", where, exc)
            outcome.retry = outcome.stop = True
            return True
        done: list[Sent] = []
        lost: list[str] = []  # record keys of sends whose outcome is unknown
        try:
            for r in todo:
                if self._out_of_time(context):
                    log.warning("%s: less than %d ms left; returned to the queue",
                                where, self.settings.min_remaining_ms)  # fmt: skip
                    outcome.retry = outcome.stop = True
                    break
                try:
                    self._deliver(batch, r, keys[r.userid], outcome, done)
                except Unknown as exc:
                    log.warning("%s: userid %d: %s; not sent again", where, r.userid, exc)
                    lost.append(keys[r.userid])
                    outcome.first_error = outcome.first_error or "SES answer lost"
                    outcome.updates.append(
                        _failed(r.userid, LOST_ANSWER.format(exc), batch.attempt + 1)
                    )
                except Backoff as exc:
                    log.warning("%s: userid %d: %s; returned to the queue", where, r.userid, exc)
                    outcome.retry = outcome.stop = True
                    break
        finally:
            recorded = self._record_sent(where, done) and self._record_lost(where, batch, lost)
        if not recorded:
            outcome.retry = outcome.stop = True
        return recorded

    def _record_lost(self, where: str, batch: Batch, lost: list[str]) -> bool:
        """Sends whose answer was lost become `sending` records of this round (reported
        unknown, never sent again in it); False when they could not be written."""
        if not lost:
            return True
        try:
            self.ledger.mark_sending_many(
                lost, batch.attempt, job_id=batch.job_id, now=self._clock(), lease_until_ms=0
            )
        except LedgerUnavailable as exc:
            log.error("%s: %d unknown outcomes not recorded: %s", where, len(lost), exc)
            return False
        return True

    def _record_sent(self, where: str, done: list[Sent]) -> bool:
        if not done:
            return True
        try:
            self.ledger.mark_sent_many(done)
        except LedgerUnavailable as exc:
            log.error("%s: %d sent, but their records were not written: %s", where, len(done), exc)
            return False
        return True

    def _deliver(
        self, batch: Batch, r: Recipient, key: str, outcome: _Outcome, done: list[Sent]
    ) -> None:
        """Deliver one recipient noted as started; its send joins `done` (recorded by the
        caller). Raises Backoff when throttling persists (nothing was sent)."""
        who = f"{batch.describe()}: userid {r.userid}"
        try:
            certificate_key, pdf = self.delivery.store_certificate(who, batch, r)
            external_id = self.delivery.send_email(who, batch, r, pdf) if batch.send_email else None
        except Refused as exc:
            outcome.first_error = outcome.first_error or exc.code
            outcome.updates.append(self._fail(who, batch, key, r, str(exc)))
            return
        timesent = int(self._clock())
        done.append(Sent(key, batch.attempt, batch.job_id, external_id, certificate_key, timesent))
        log.debug("%s: sent to %s as %s", who, r.email, external_id)
        outcome.updates.append(_sent(r.userid, external_id, certificate_key, timesent))

    def _replay(self, batch: Batch, r: Recipient, old: Record, now: float) -> dict:
        """The update for a recipient whose record stopped the claim; raises _Busy."""
        who = f"{batch.describe()}: userid {r.userid}"
        if old.state == SENT:
            log.debug("%s: already sent in round %d; not sent again", who, old.round)
            return _sent(r.userid, old.external_id, old.certificate_key, old.timesent)
        if old.state == FAILED:
            return _failed(r.userid, old.error_message or "failed", old.attempts or old.round + 1)
        if old.lease_until is not None and now * 1000 < old.lease_until:
            log.info("%s: another invocation holds the claim; returned to the queue", who)
            raise _Busy
        log.warning("%s: claimed in round %d by an invocation that stopped", who, old.round)
        return _failed(r.userid, UNKNOWN_OUTCOME, old.round + 1)

    def _fail(self, who: str, batch: Batch, key: str, r: Recipient, reason: str) -> dict:
        error, attempts = reason[:_MAX_ERROR], batch.attempt + 1
        log.debug("%s: failed: %s", who, error)
        try:
            self.ledger.mark_failed(
                key, batch.attempt, job_id=batch.job_id, error_message=error, attempts=attempts,
                now=self._clock(),
            )  # fmt: skip
        except LedgerUnavailable as exc:
            log.error("%s: failure not recorded: %s", who, exc)
        return _failed(r.userid, error, attempts)

    def _report(self, where: str, batch: Batch, updates: list[dict]) -> bool:
        """Send the record's callback(s); False (logged) when the sidecar did not take one."""
        try:
            secret = self._callback_secret()
            for body in callback_bodies(batch.job_id, batch.batch_id, updates):
                signature = sign(secret, body)
                if batch.callback_mode == "sqs":
                    sqs = self.client("sqs", queue_region(batch.callback_url))
                    enqueue(sqs, batch.callback_url, body, signature, group=batch.batch_id)
                else:
                    post(
                        batch.callback_url, body, signature, timeout=self.settings.callback_timeout
                    )
        except CallbackUndelivered as exc:
            log.warning(
                "%s: callback not delivered (%s); returned to the queue, a redelivery "
                "reports again without sending", where, exc,
            )  # fmt: skip
            return False
        return True

    def _callback_secret(self) -> str:
        """The HMAC secret, read from Secrets Manager once; raises CallbackUndelivered."""
        if self._secret is None:
            sm = self.client("secretsmanager")
            self._secret = read_secret(sm, self.settings.callback_secret_arn or "")
        return self._secret

    def _remaining_ms(self, context: Any) -> int:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        return int(remaining()) if remaining else NO_CONTEXT_MS

    def _out_of_time(self, context: Any) -> bool:
        return self._remaining_ms(context) < self.settings.min_remaining_ms


def _sent(userid: int, external_id: str | None, key: str | None, timesent: int | None) -> dict:
    update: dict[str, Any] = {"userid": userid, "status": SENT}
    for name, value in (("external_id", external_id), ("certificate_key", key),
                        ("timesent", timesent)):  # fmt: skip
        if value is not None:
            update[name] = value
    return update


def _failed(userid: int, error: str, attempts: int) -> dict:
    return {"userid": userid, "status": FAILED, "error_message": error, "attempts": attempts}


_worker: Worker | None = None


def handler(event: Mapping[str, Any], context: Any) -> dict:
    """The Lambda entry point: the partial batch response for one SQS event.

    Builds the Worker from the environment once per container; raises WorkerConfigError
    (naming the variable) when the environment is wrong, so every record is redelivered.
    """
    global _worker
    if _worker is None:
        _worker = Worker(WorkerSettings.from_env(os.environ))
    return _worker.handle(event, context)
