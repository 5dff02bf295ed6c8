"""`GET /metrics` (docs/monitoring.md): Prometheus text format, with `prometheus_client`.

Two kinds of figures:

- read from the ledger at scrape time by `LedgerCollector` (jobs by type and status,
  recipients by status, stuck jobs, the last schedule sync): a few aggregate queries,
  never a Python loop over rows, so two daemons on one database report the same figures
  and a restart loses nothing;
- counted in this process since it started (`REGISTRY`): callbacks, schedule runs,
  schedule syncs, Moodle requests and their latency, local deliveries and the delivery
  latency from commit to sent. Prometheus' `rate()`/`increase()` handle the reset at a
  restart.

The cloud's own figures (queue and DLQ depth as the provider counts them, the SES quota)
are read by a background thread every minute (sidecar.cloudgauges) and served from what
it last read: a scrape never waits for a cloud API.

Every function here that the delivery, callback, schedule or Moodle code calls never
raises: a metric is never a reason for a message not to go out.
"""

import hmac
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from peewee import SQL, Database, fn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sidecar.status import JOB_FINAL, BatchStatus, RecipientStatus

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST

# no `_created` series beside each counter: Prometheus does not need them
disable_created_metrics()

#: this process's counters and histograms (the ledger's gauges are read per scrape)
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

CALLBACKS = Counter(
    "moodle_offload_callbacks",
    "Callbacks from cloud workers, by where they came from (http; sqs or queue: SQS's or "
    "Cloudflare's results queue) and "
    "outcome: accepted (status 200) or rejected with the HTTP status it got "
    "(400 malformed, 401 signature or clock, 404 unknown job or batch, 409 replay, 413 too big)",
    ["source", "outcome", "status"],
    registry=REGISTRY,
)
SCHEDULE_RUNS = Counter(
    "moodle_offload_schedule_runs",
    "Schedule runs finished by this daemon, by outcome: done, failed, retry (Moodle "
    "unreachable, tried again later), skipped (a due time passed while off), superseded",
    ["outcome"],
    registry=REGISTRY,
)
SCHEDULE_SYNCS = Counter(
    "moodle_offload_schedule_syncs",
    "Schedule syncs from a source (moodle), by outcome: ok or failed",
    ["source", "outcome"],
    registry=REGISTRY,
)
MOODLE_REQUESTS = Counter(
    "moodle_offload_moodle_requests",
    "HTTP requests to Moodle's web services (each retry counts), by function and outcome: "
    "ok, error (Moodle answered with an exception), maintenance, unreachable (network, "
    "timeout, HTTP 5xx), disabled (web services off), protocol (an answer that is not "
    "Moodle's JSON)",
    ["function", "outcome"],
    registry=REGISTRY,
)
MOODLE_SECONDS = Histogram(
    "moodle_offload_moodle_request_seconds",
    "Time of one HTTP request to Moodle's web services, answer read, by function",
    ["function"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "moodle_offload_provider_calls",
    "Messages handed to a provider by this daemon, by provider (local: SMTP or the mail "
    "folder) and outcome: sent, retry (temporary failure, tried again later), failed",
    ["provider", "outcome"],
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "moodle_offload_delivery_latency_seconds",
    "From the job's commit to the ledger to the recipient's message sent, by route",
    ["route"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
    registry=REGISTRY,
)

CLOUD_REQUESTS = Counter(
    "moodle_offload_cloud_requests",
    "Requests handing batches to a cloud queue (SQS SendMessageBatch, Cloudflare's Queues "
    "API), by provider and outcome: ok, unavailable (the queue could not be reached; what "
    "it took is kept, the rest waits), error",
    ["provider", "outcome"],
    registry=REGISTRY,
)
CLOUD_SECONDS = Histogram(
    "moodle_offload_cloud_request_seconds",
    "Time of one request handing batches to a cloud queue, by provider",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
CLOUD_BATCHES = Counter(
    "moodle_offload_cloud_batches_queued",
    "Batches the cloud queue took and the ledger recorded as queued, by provider",
    ["provider"],
    registry=REGISTRY,
)

DEAD_LETTERS = Counter(
    "moodle_offload_dead_letters",
    "Batch messages read from a dead-letter queue (the cloud worker failed on them as many "
    "times as the queue allows; their open recipients were marked failed), by provider",
    ["provider"],
    registry=REGISTRY,
)
CLOUD_GAUGE_ERRORS = Counter(
    "moodle_offload_cloud_gauge_errors",
    "Readings of a cloud's queue depth or SES quota that failed (unreachable, refused), by "
    "provider; the gauge of a failed reading is absent until the next good one",
    ["provider"],
    registry=REGISTRY,
)
SES_EVENTS = Counter(
    "moodle_offload_ses_events",
    "Addresses SES reported as a permanent bounce or a complaint (each is suppressed), by kind",
    ["kind"],
    registry=REGISTRY,
)

_OPEN_BATCH = [BatchStatus.PENDING.value, BatchStatus.QUEUED.value, BatchStatus.PROCESSING.value]
_OUTCOMES = {"sent": "sent", "retry_pending": "retry", "failed": "failed"}


def _safely(what: str, action: Callable[[], None]) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 - a metric never stops the work it counts
        log.debug("metrics: could not count %s", what, exc_info=True)


def callback(source: str, status: int) -> None:
    """One callback answered `status` (200: accepted)."""
    outcome = "accepted" if status == 200 else "rejected"
    _safely("a callback", lambda: CALLBACKS.labels(source, outcome, str(status)).inc())


def schedule_run(outcome: str) -> None:
    _safely("a schedule run", lambda: SCHEDULE_RUNS.labels(outcome).inc())


def schedule_sync(source: str, ok: bool) -> None:
    _safely("a sync", lambda: SCHEDULE_SYNCS.labels(source, "ok" if ok else "failed").inc())


def moodle_request(function: str, outcome: str, seconds: float) -> None:
    """The hook `moodle_ws.client.ClientSettings.observe` of every client the sidecar makes."""

    def count() -> None:
        MOODLE_REQUESTS.labels(function, outcome).inc()
        MOODLE_SECONDS.labels(function).observe(seconds)

    _safely("a Moodle request", count)


def delivered(provider: str, status: str, committed_at: datetime, sent_at: datetime | None):
    """A recipient's delivery ended in `status` (sent, retry_pending, failed): counted, and
    for `sent` its latency from `committed_at` (naive UTC, like the ledger)."""

    def count() -> None:
        DELIVERIES.labels(provider, _OUTCOMES.get(status, status)).inc()
        if status == "sent" and sent_at is not None:
            seconds = (sent_at - committed_at).total_seconds()
            DELIVERY_LATENCY.labels(provider).observe(max(seconds, 0.0))

    _safely("a delivery", count)


def cloud_request(provider: str, outcome: str, seconds: float) -> None:
    """One request to a cloud queue ended in `outcome` (ok, unavailable, error)."""

    def count() -> None:
        CLOUD_REQUESTS.labels(provider, outcome).inc()
        CLOUD_SECONDS.labels(provider).observe(seconds)

    _safely("a cloud request", count)


def cloud_batches(provider: str, n: int) -> None:
    if n:
        _safely("cloud batches", lambda: CLOUD_BATCHES.labels(provider).inc(n))


def dead_letter(provider: str) -> None:
    _safely("a dead letter", lambda: DEAD_LETTERS.labels(provider).inc())


def cloud_gauge_error(provider: str) -> None:
    _safely("a cloud gauge error", lambda: CLOUD_GAUGE_ERRORS.labels(provider).inc())


def ses_event(kind: str, addresses: int) -> None:
    """`addresses` reported in one SES event of `kind` (bounce, complaint)."""
    _safely("an SES event", lambda: SES_EVENTS.labels(kind).inc(addresses))


# --- the ledger, read at scrape time -------------------------------------------------------


def _timestamp(at: datetime | None) -> float | None:
    return None if at is None else at.replace(tzinfo=UTC).timestamp()


def recipient_counts() -> dict[str, int]:
    """Recipients by status, every status. Needs an open connection.

    `sent` is the bulk of a ledger that has run for a while, and counting it row by row
    is what a GROUP BY over a million recipients costs (~120 ms on SQLite, bench/metrics.py).
    So: a bare COUNT(*) of the table (SQLite counts the pages of its smallest index without
    reading a row: ~5 ms), the other statuses counted on the (status, ...) index, and
    `sent` the difference.
    """
    from sidecar.db.models import Recipient

    others = [s.value for s in RecipientStatus if s != RecipientStatus.SENT]
    counts = dict.fromkeys(others, 0)
    total = Recipient.select(fn.COUNT(SQL("*"))).scalar() or 0
    for status, n in (
        Recipient.select(Recipient.status, fn.COUNT(SQL("*")))
        .where(Recipient.status.in_(others))
        .group_by(Recipient.status)
        .tuples()
    ):
        counts[status] = n
    counts[RecipientStatus.SENT.value] = total - sum(counts.values())
    return counts


class LedgerCollector(Collector):
    """Gauges read from the ledger on each scrape (aggregate SQL only).

    `moodle_offload_ledger_up` is 0 when the database could not be read; the other
    ledger gauges are then absent, and the scrape still answers (the counters are there).
    """

    def __init__(self, db: Database, stuck_after: timedelta, clock: Callable[[], datetime]):
        self.db = db
        self.stuck_after = stuck_after
        self.clock = clock

    def collect(self):
        try:
            self.db.connect(reuse_if_open=True)
            with self.db.atomic():  # one snapshot where the database gives one (SQLite's WAL)
                families = self._read()
        except Exception as exc:  # noqa: BLE001 - a scrape reports, never fails on the DB
            log.warning("metrics: the ledger could not be read: %s", type(exc).__name__)
            families = []
        up = GaugeMetricFamily(
            "moodle_offload_ledger_up", "1 when this scrape could read the ledger, else 0"
        )
        up.add_metric([], 1 if families else 0)
        yield up
        yield from families

    def _read(self) -> list[GaugeMetricFamily]:
        from sidecar.db.models import Batch, Job, SyncState
        from sidecar.health import stuck_jobs

        jobs = GaugeMetricFamily(
            "moodle_offload_jobs",
            "Jobs in the ledger by type and status",
            labels=["type", "status"],
        )
        for type_, status, n in (
            Job.select(Job.type, Job.status, fn.COUNT(Job.id)).group_by(Job.type, Job.status)
        ).tuples():
            jobs.add_metric([type_, status], n)
        open_jobs = GaugeMetricFamily(
            "moodle_offload_jobs_open", "Jobs not finished (pending, queued, processing or "
            "retry_pending), every type",
        )  # fmt: skip
        recipients = GaugeMetricFamily(
            "moodle_offload_recipients", "Recipients in the ledger by status", labels=["status"]
        )
        counts = recipient_counts()
        for status, n in counts.items():
            recipients.add_metric([status], n)
        finished = {s.value for s in JOB_FINAL}
        open_jobs.add_metric([], sum(
            m.value for m in jobs.samples if m.labels["status"] not in finished
        ))  # fmt: skip
        stuck = GaugeMetricFamily(
            "moodle_offload_stuck_jobs",
            f"Jobs not finished with no progress for more than the stuck threshold "
            f"({int(self.stuck_after.total_seconds())}s, [dashboard] stuck_after)",
        )
        stuck.add_metric([], len(stuck_jobs(self.clock() - self.stuck_after)))
        batches = GaugeMetricFamily(
            "moodle_offload_batches",
            "Batches not done by route (local, aws, cloudflare) and status (pending: not yet "
            "handed over; queued: with the provider or the local queue; processing)",
            labels=["route", "status"],
        )
        batch_recipients = GaugeMetricFamily(
            "moodle_offload_batch_recipients",
            "Recipients in the batches not done, by route and status: the queue depth per provider",
            labels=["route", "status"],
        )
        for route, status, n, size in (
            Batch.select(Batch.route, Batch.status, fn.COUNT(SQL("*")), fn.SUM(Batch.size))
            .where(Batch.status.in_(_OPEN_BATCH))
            .group_by(Batch.route, Batch.status)
            .tuples()
        ):
            batches.add_metric([route, status], n)
            batch_recipients.add_metric([route, status], int(size or 0))
        ok_at = GaugeMetricFamily(
            "moodle_offload_schedule_sync_last_success_timestamp_seconds",
            "When schedules were last synced from the source without error (Unix time)",
            labels=["source"],
        )
        error_at = GaugeMetricFamily(
            "moodle_offload_schedule_sync_last_error_timestamp_seconds",
            "When the last schedule sync from the source failed (Unix time; 0: the last one "
            "succeeded)",
            labels=["source"],
        )
        for source, ok, err in SyncState.select(
            SyncState.source, SyncState.ok_at, SyncState.error_at
        ).tuples():
            if ok is not None:
                ok_at.add_metric([source], _timestamp(ok))
            error_at.add_metric([source], _timestamp(err) or 0.0)
        return [jobs, open_jobs, recipients, stuck, batches, batch_recipients, ok_at, error_at]


class MetricsEndpoint:
    """What `GET /metrics` serves: this process's counters, the ledger's gauges and any
    `collectors` of this daemon (the cloud gauges, sidecar.cloudgauges).

    `token`: when set, a scrape must send `Authorization: Bearer <token>`.
    """

    def __init__(
        self,
        db: Database,
        *,
        stuck_after: timedelta,
        clock: Callable[[], datetime],
        token: str | None = None,
        collectors: tuple[Collector, ...] = (),
    ):
        self.token = token or None
        self._ledger = CollectorRegistry()
        self._ledger.register(LedgerCollector(db, stuck_after, clock))
        for collector in collectors:
            self._ledger.register(collector)

    def authorised(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header lets the scrape in (constant-time compare)."""
        if self.token is None:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        ok = hmac.compare_digest(given.strip().encode(), self.token.encode())
        return scheme.lower() == "bearer" and ok

    def render(self) -> bytes:
        return generate_latest(REGISTRY) + generate_latest(self._ledger)
