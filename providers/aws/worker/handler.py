"""The AWS Lambda worker: SQS records holding `offload.batch.v1` messages → SES, S3, callback.

Entry point `providers.aws.worker.handler.handler` (SQS event source mapping with
`ReportBatchItemFailures`). Each record body is one batch message (CONTRACTS §3),
maybe a gzip envelope, maybe one part of a split batch; each record is reported to the
sidecar in one callback (CONTRACTS §4), and a record goes back to SQS (listed in
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

Batch header keys read beyond CONTRACTS §3 (all optional):
- `attempt` (int ≥ 0, default 0): the sidecar's delivery round of this batch. A recipient
  is tried once per round; a message with a higher `attempt` resends every recipient of
  the batch not recorded `sent` (and re-reports the sent ones without sending).
- `email.configuration_set`: SES configuration set; wins over the environment's.
- `email.attach_certificate` (bool, default false): attach the certificate PDF, sending
  a raw MIME message; otherwise SES's simple content (HTML + text) is sent.
- `part`, `part_count`: a split batch's part (see `providers.message`); logged only.

Per recipient: claim (DynamoDB conditional put) → certificate PDF to S3 → SES v2
SendEmail (tags job_id, batch_id, userid) → record `sent`. Throttling and 5xx are
retried with backoff; if they persist the claim is released and the record goes back
to SQS. Other refusals record and report the recipient `failed` (`attempts` is the
round + 1), never retried in that round.

A claim that stopped a new one is reported from its record: `sent` and `failed` as
recorded; `sending` means an invocation claimed it and may have sent. The claim holds a
lease until that invocation's deadline: while it runs the record goes back to SQS (its
owner will report), after it the recipient is reported failed with UNKNOWN_OUTCOME and
is not resent until a later round.
"""

import logging
import os
import random
import time
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
from providers.aws.worker.delivery import Backoff, Delivery, Refused
from providers.aws.worker.idempotency import (
    FAILED,
    SENT,
    Ledger,
    LedgerUnavailable,
    Record,
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
#: time assumed left when there is no Lambda context (a local invocation)
NO_CONTEXT_MS = 15 * 60 * 1000
# botocore's default 60 s timeouts, three attempts, would outlast the whole invocation
_CLIENT_CONFIG = Config(retries={"mode": "standard"}, connect_timeout=5, read_timeout=30)
_MAX_ERROR = 1000


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
            self._clients[key] = self._session.client(
                service, region_name=region, config=_CLIENT_CONFIG
            )
        return self._clients[key]

    # --- records ---------------------------------------------------------------------

    def handle(self, event: Mapping[str, Any], context: Any) -> dict:
        """Process an SQS event; the partial batch response. Never raises for one record."""
        failures: list[str] = []
        stop = False
        records = event.get("Records") or []
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
        for recipient in batch.recipients:
            if self._out_of_time(context):
                log.warning("%s: less than %d ms left; returned to the queue",
                            where, self.settings.min_remaining_ms)  # fmt: skip
                outcome.retry = outcome.stop = True
                break
            try:
                self._deliver(batch, recipient, context, outcome)
            except _Busy:
                outcome.retry = True
            except (Backoff, LedgerUnavailable) as exc:
                log.warning(
                    "%s: userid %d: %s; returned to the queue", where, recipient.userid, exc
                )
                outcome.retry = outcome.stop = True
                break
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

    def _deliver(self, batch: Batch, r: Recipient, context: Any, outcome: _Outcome) -> None:
        key = record_key(batch.batch_id, r.userid)
        now = self._clock()
        lease_until_ms = int(now * 1000) + self._remaining_ms(context)
        old = self.ledger.claim(
            key, batch.attempt, job_id=batch.job_id, now=now, lease_until_ms=lease_until_ms
        )
        if old is not None:
            outcome.updates.append(self._replay(batch, r, old, now))
            outcome.replayed += 1
            return
        who = f"{batch.describe()}: userid {r.userid}"
        try:
            certificate_key, pdf = self.delivery.store_certificate(who, batch, r)
            external_id = self.delivery.send_email(who, batch, r, pdf) if batch.send_email else None
        except Refused as exc:
            outcome.first_error = outcome.first_error or exc.code
            outcome.updates.append(self._fail(who, batch, key, r, str(exc)))
            return
        except Backoff:
            try:
                self.ledger.release(key, batch.attempt)
            except LedgerUnavailable as exc:
                log.error("%s: claim not released (%s); a redelivery reports it unknown", who, exc)
            raise
        timesent = int(self._clock())
        try:
            self.ledger.mark_sent(
                key, batch.attempt, external_id=external_id,
                certificate_key=certificate_key, timesent=timesent,
            )  # fmt: skip
        except LedgerUnavailable as exc:
            log.error("%s: sent, but the record was not written: %s", who, exc)
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
                key, batch.attempt, error_message=error, attempts=attempts, now=self._clock()
            )
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
