"""The cloud's own figures for `GET /metrics`, read in the background (docs/monitoring.md).

A scrape never calls a cloud API: a thread of the daemon reads, every minute, for each
configured cloud provider

- AWS: the job queue's and the DLQ's depth as SQS counts them (GetQueueAttributes:
  ApproximateNumberOfMessages + ...NotVisible + ...Delayed) and the SES send quota
  (GetSendQuota: Max24HourSend, SentLast24Hours, MaxSendRate);
- Cloudflare: the job queue's and the DLQ's backlog (the Queues API's `GET .../metrics`,
  `backlog_count`: messages not yet acknowledged), when account_id and auth_token are set;

and `/metrics` serves what it last read. A reading that fails (unreachable, refused)
is counted in `moodle_offload_cloud_gauge_errors_total{provider}`, logged at warning the
first time (again only after it has worked), and its gauge is absent until the next
good reading: an old figure is never served as a current one. Nothing here raises.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sidecar import metrics

log = logging.getLogger(__name__)

#: the gauges are read this often (seconds)
EVERY = 60.0
#: one request to a cloud API gives up after this (one attempt: the next is a minute on)
TIMEOUT = 10.0

QUEUE_DEPTH = "moodle_offload_queue_depth"
SES_MAX_24H = "moodle_offload_ses_quota_max_24h"
SES_SENT_24H = "moodle_offload_ses_quota_sent_24h"
SES_MAX_RATE = "moodle_offload_ses_max_send_rate"

_FAMILIES = {
    QUEUE_DEPTH: (
        "Messages in a cloud queue as the provider counts them, by provider (aws, "
        "cloudflare) and queue (jobs, dead_letter): SQS's waiting + in flight + delayed, "
        "Cloudflare's backlog (not yet acknowledged); read every minute",
        ("provider", "queue"),
    ),
    SES_MAX_24H: ("SES: emails the account may send in 24 hours (-1: no daily limit)", ()),
    SES_SENT_24H: ("SES: emails the account sent in the last 24 hours", ()),
    SES_MAX_RATE: ("SES: emails the account may send a second", ()),
}

#: one reading's samples: {(family, label values): value}
Samples = dict[tuple[str, tuple[str, ...]], float]


@dataclass
class Reading:
    provider: str
    what: str  # for the log: "jobs queue", "SES quota"
    read: Callable[[], Samples]  # raises on failure


class CloudGauges(Collector):
    """The readings of the configured clouds, refreshed by `run` (the daemon's thread) and
    served by `collect` (a `/metrics` scrape) from a snapshot under a lock."""

    def __init__(self, config, *, every: float = EVERY, timeout: float = TIMEOUT):
        self.config = config
        self.every = every
        self.timeout = timeout
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], Samples] = {}  # (provider, what) -> samples
        self._failing: set[tuple[str, str]] = set()
        self._readings: list[Reading] | None = None
        self._clients: list = []

    @staticmethod
    def wanted(config) -> bool:
        """Whether any cloud provider is configured (the daemon starts the thread then)."""
        return config.providers.aws is not None or config.providers.cloudflare is not None

    # --- the thread --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Read every `every` seconds, first at once, until `stop` is set."""
        try:
            while True:
                self.refresh()
                if stop.wait(self.every):
                    return
        finally:
            self.close()

    def refresh(self) -> None:
        """One round: every reading once. Never raises."""
        for reading in self._built():
            key = (reading.provider, reading.what)
            try:
                samples = reading.read()
            except Exception as exc:  # noqa: BLE001 - a gauge never stops the daemon
                metrics.cloud_gauge_error(reading.provider)
                with self._lock:
                    self._values.pop(key, None)
                if key not in self._failing:
                    self._failing.add(key)
                    log.warning(
                        "metrics: the %s %s could not be read: %s; its gauge is absent and "
                        "moodle_offload_cloud_gauge_errors_total counts the tries (every %.0fs)",
                        reading.provider, reading.what, _why(exc), self.every,
                    )  # fmt: skip
                continue
            with self._lock:
                self._values[key] = samples
            if key in self._failing:
                self._failing.discard(key)
                log.info("metrics: the %s %s is read again", reading.provider, reading.what)

    def close(self) -> None:
        for c in self._clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing only
                log.debug("closing a cloud gauge client failed", exc_info=True)
        self._clients = []
        self._readings = None

    # --- the scrape --------------------------------------------------------------------------

    def collect(self):
        with self._lock:
            values = [s for samples in self._values.values() for s in samples.items()]
        families = {name: GaugeMetricFamily(name, doc, labels=list(labels))
                    for name, (doc, labels) in _FAMILIES.items()}  # fmt: skip
        for (name, labels), value in sorted(values):
            families[name].add_metric(list(labels), value)
        yield from (f for f in families.values() if f.samples)

    # --- what to read ------------------------------------------------------------------------

    def _built(self) -> list[Reading]:
        if self._readings is None:
            readings: list[Reading] = []
            for provider, build in (("aws", self._aws), ("cloudflare", self._cloudflare)):
                if getattr(self.config.providers, provider) is None:
                    continue
                try:
                    readings += build()
                except Exception as exc:  # noqa: BLE001 - counted, tried again next round
                    metrics.cloud_gauge_error(provider)
                    if (provider, "setup") not in self._failing:
                        self._failing.add((provider, "setup"))
                        log.warning("metrics: the %s gauges could not be set up: %s",
                                    provider, _why(exc))  # fmt: skip
                    self.close()  # built again next round
                    return []
                self._failing.discard((provider, "setup"))
            self._readings = readings
        return self._readings

    def _aws(self) -> list[Reading]:
        from providers.aws.account import SesAccount
        from providers.aws.clients import Endpoint
        from providers.aws.queues import QueueReader

        aws = self.config.providers.aws
        t = self.timeout
        endpoint = Endpoint(aws.region, aws.endpoint_url, connect_timeout=t, read_timeout=t,
                            max_attempts=1)  # fmt: skip
        out = []
        for queue, url in (("jobs", aws.sqs_queue_url), ("dead_letter", aws.dlq_url)):
            if url:
                reader = QueueReader(url, endpoint)
                self._clients.append(reader)
                out.append(Reading("aws", f"{queue} queue",
                                   _sqs_depth(reader, queue)))  # fmt: skip
        ses = SesAccount(endpoint)
        self._clients.append(ses)
        out.append(Reading("aws", "SES quota", lambda: _ses_quota(ses)))
        return out

    def _cloudflare(self) -> list[Reading]:
        from providers.cloudflare.queues import CloudflareSettings, QueueMetricsReader

        cf = self.config.providers.cloudflare
        if not (cf.account_id and cf.auth_token):
            log.info("metrics: the Cloudflare queue depths are not read: set "
                     "[providers.cloudflare] account_id and auth_token")  # fmt: skip
            return []
        settings = CloudflareSettings(
            account_id=cf.account_id, api_token=cf.auth_token.get_secret_value(),
            api_base=cf.api_base, timeout=self.timeout, attempts=1,
        )  # fmt: skip
        reader = QueueMetricsReader(settings)
        self._clients.append(reader)
        out = []
        for queue, queue_id in (("jobs", cf.queue_id), ("dead_letter", cf.dlq_id)):
            if queue_id:
                out.append(Reading("cloudflare", f"{queue} queue",
                                   _cf_backlog(reader, queue_id, queue)))  # fmt: skip
        return out


def _sqs_depth(reader, queue: str) -> Callable[[], Samples]:
    return lambda: {(QUEUE_DEPTH, ("aws", queue)): float(reader.depth().total)}


def _cf_backlog(reader, queue_id: str, queue: str) -> Callable[[], Samples]:
    return lambda: {(QUEUE_DEPTH, ("cloudflare", queue)): float(
        reader.metrics(queue_id).backlog_count
    )}  # fmt: skip


def _ses_quota(ses) -> Samples:
    q = ses.quota()
    return {(SES_MAX_24H, ()): q.max_24h, (SES_SENT_24H, ()): q.sent_24h,
            (SES_MAX_RATE, ()): q.max_rate}  # fmt: skip


def _why(exc: Exception) -> str:
    """A provider's own one-line message (it names the call and the queue, never a
    credential); for anything else, only its type."""
    from providers.base import ProviderError

    return str(exc) if isinstance(exc, ProviderError) else type(exc).__name__
