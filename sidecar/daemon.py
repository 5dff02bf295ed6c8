"""`moodle-offload run`: HTTP server + delivery loop in one process, systemd-aware.

Start order: config, database upgrade, HTTP bind, delivery loop, READY=1. Signal
handlers only enqueue; the main thread handles them. SIGTERM/SIGINT: STOPPING=1, stop
taking work, let the message in flight finish (bounded by server.drain_timeout), exit 0;
a second signal stops at once. SIGHUP re-reads the config and keeps the old one if the
new one is invalid. The ledger holds every recipient whatever the stop. Under a systemd
watchdog (`WatchdogSec=`) the main loop sends WATCHDOG=1 and a STATUS= line while the
delivery, write-back, cloud and alerts threads and the schedule jobs make progress
(sidecar.watchdog).
"""

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from werkzeug.utils import redirect
from werkzeug.wrappers import Response

from providers.base import ProviderError, ProviderUnavailable
from sidecar import certificates, systemd, watchdog
from sidecar.config import Config, load
from sidecar.errors import ConfigError
from sidecar.jobs import queue_local_batches
from sidecar.runtime import Runtime
from sidecar.web.app import certificate_gone, make_app
from sidecar.web.server import HttpServer

log = logging.getLogger(__name__)

#: the alerts loop (stuck jobs, the daily report) checks this often
ALERTS_EVERY = 60.0
#: retention runs this long after start, then every RETENTION_EVERY seconds
RETENTION_FIRST = 60.0
RETENTION_EVERY = 24 * 3600.0


class Daemon:
    def __init__(self, config: Config, config_path: Path | None = None, *, poll_interval=1.0,
                 retention_delay: float = RETENTION_FIRST,
                 alerts_every: float = ALERTS_EVERY,
                 gauges_every: float | None = None):  # fmt: skip
        from sidecar.cloudgauges import EVERY, CloudGauges

        self.config = config
        # the cloud's queue depths and SES quota for /metrics, read in their own thread
        self.gauges = (CloudGauges(config, every=gauges_every or EVERY)
                       if CloudGauges.wanted(config) else None)  # fmt: skip
        self.alerts_every = alerts_every
        self.retention_delay = retention_delay
        self.config_path = config_path
        self.runtime = Runtime(config)
        self.poll_interval = poll_interval
        self._signals: queue.Queue[int] = queue.Queue()
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self._writeback: threading.Thread | None = None
        self._cloud: list[threading.Thread] = []
        self.http: HttpServer | None = None
        self.ticker = None
        self.running = False
        self.exit_code = 0
        self._stopping = False
        self.heartbeats = watchdog.Heartbeats()
        self._wedged: list[str] = []
        self._ledger_lock = None  # the SQLite ledger's shared lock (sidecar.db.backup)
        self._handlers: dict[int, Callable[[], None]] = {
            signal.SIGTERM: self.handle_term,
            signal.SIGINT: self.handle_term,
            signal.SIGHUP: self.handle_hup,
        }

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, *, schedules: bool = True) -> None:
        rt = self.runtime
        self._hold_ledger()
        applied = rt.upgrade()
        if applied:
            log.info("database: schema now at version %d", applied[-1])
        app = make_app(
            handle_callback=rt.callbacks.handle,
            health=rt.health,
            max_body=self.config.server.callback_max_bytes,
            certificate=self._certificate,
            verify_page=self._verify_page,
            unsubscribe=self._unsubscribe_service(),
            dashboard=self._dashboard(),
            metrics=self._metrics(),
        )
        self.http = HttpServer(app, self.config.server.host, self.config.server.port)
        self.http.start()
        log.info("listening on %s", self.http.url)
        self._worker = threading.Thread(target=self._work_loop, name="delivery", daemon=True)
        self.heartbeats.watch(self._worker)
        self._worker.start()
        if self.config.moodle is not None:
            self._writeback = threading.Thread(target=self._writeback_loop, name="write-back",
                                               daemon=True)  # fmt: skip
            self.heartbeats.watch(self._writeback)
            self._writeback.start()
        if rt.offloads():  # built here, once, before the two threads that share them
            self._cloud = [
                threading.Thread(target=self._submit_loop, name="cloud-submit", daemon=True),
                threading.Thread(target=self._poll_loop, name="cloud-poll", daemon=True),
            ]
            for t in self._cloud:
                self.heartbeats.watch(t)
                t.start()
        if self.gauges is not None:  # never joined: a cloud API call may hang up to its timeout
            threading.Thread(target=self.gauges.run, args=(rt.stop,), name="cloud-gauges",
                             daemon=True).start()  # fmt: skip
        threading.Thread(target=self._retention_loop, name="retention", daemon=True).start()
        alerts = threading.Thread(target=self._alerts_loop, name="alerts", daemon=True)
        self.heartbeats.watch(alerts, idle=1.0)
        alerts.start()
        if schedules:
            self._start_schedules()
        self.running = True

    def _hold_ledger(self) -> None:
        """An SQLite ledger: hold its shared lock while running, so `db restore` refuses
        to replace it under this daemon (sidecar.db.backup)."""
        from sidecar.db import backup

        path = backup.sqlite_path(self.config.database.url)
        if path is not None and self._ledger_lock is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._ledger_lock = backup.hold_shared(path)

    def _unsubscribe_service(self):
        from sidecar import unsubscribe

        why = unsubscribe.unavailable(self.config)
        if why:
            log.warning("unsubscribe links are not sent: %s", why)
        links = self.runtime.unsubscribe_links
        return unsubscribe.UnsubscribeService(links, self.runtime.clock) if links else None

    def _dashboard(self):
        if not self.config.dashboard.enabled:
            return None
        from sidecar.health import Health
        from sidecar.web.dashboard import Dashboard

        health = Health(self.config, self.runtime.db, clock=self.runtime.clock)
        return Dashboard(self.config, self.runtime.clock, self.runtime, health)

    def _metrics(self):
        from datetime import timedelta

        from sidecar.metrics import MetricsEndpoint

        token = self.config.metrics.token
        return MetricsEndpoint(
            self.runtime.db,
            stuck_after=timedelta(seconds=self.config.dashboard.stuck_after),
            clock=self.runtime.clock,
            token=token.get_secret_value() if token else None,
            collectors=(self.gauges,) if self.gauges is not None else (),
        )

    def _start_schedules(self) -> None:
        from sidecar.scheduler import Ticker, schedules_usable

        why = schedules_usable(self.config)
        if why:
            log.info("schedules are off: %s", why)
            return
        self.ticker = Ticker(self.runtime, self.heartbeats)
        self.ticker.start()

    def serve(self) -> int:
        """Start, then handle signals until stopped; returns the exit code."""
        for signum in self._handlers:
            signal.signal(signum, self._enqueue)
        self.start()
        return self.serve_started()

    def serve_started(self) -> int:
        for signum in self._handlers:
            signal.signal(signum, self._enqueue)
        systemd.notify("READY=1")
        log.info("moodle-offload running (pid ready)")
        every = watchdog.interval()
        turn = min(1.0, every / 2) if every else 1.0
        next_ping = 0.0
        while self.running:
            if every and time.monotonic() >= next_ping:
                self.ping_watchdog(every)
                next_ping = time.monotonic() + every / 2
            try:
                signum = self._signals.get(timeout=turn)
            except queue.Empty:
                continue
            self._handlers[signum]()
        return self.exit_code

    def ping_watchdog(self, every: float) -> bool:
        """WATCHDOG=1 with a STATUS= line, unless a delivery thread died or is stuck for
        longer than the watchdog interval: then no ping, and systemd restarts the service.
        Returns whether it pinged."""
        wedged = [] if self._stopping else self.heartbeats.wedged(every)
        names = [w.split(" (")[0] for w in wedged]
        if wedged:
            if names != self._wedged:
                log.error(
                    "watchdog: %s: no WATCHDOG=1 sent, systemd restarts the service",
                    ", ".join(wedged),
                )
            self._wedged = names
            return False
        self._wedged = []
        systemd.notify(f"WATCHDOG=1\nSTATUS={self._status_line()}")
        return True

    def _status_line(self) -> str:
        try:
            with self.runtime.db.connection_context():
                return watchdog.status_line(self.runtime.clock())
        except Exception as exc:  # noqa: BLE001 - the status line is informative only
            log.debug("status line: %s", exc)
            return f"database not readable: {type(exc).__name__}"

    def _enqueue(self, signum: int, _frame) -> None:
        self._signals.put_nowait(signum)

    def handle_term(self) -> None:
        if self._stopping:
            log.warning("second stop signal: stopping now; undelivered recipients stay queued")
            self.running = False
            return
        self._stopping = True
        systemd.notify("STOPPING=1")
        log.info(
            "stopping: finishing the message in flight (at most %ss)",
            self.config.server.drain_timeout,
        )
        threading.Thread(target=self._drain, name="drain", daemon=True).start()

    def shutdown(self) -> None:
        """Stop ticking, delivering and serving, waiting at most server.drain_timeout."""
        self._drain()

    def _drain(self) -> None:
        self.runtime.stop.set()
        self._wake.set()
        if self.ticker is not None:
            self.ticker.shutdown()
        deadline = time.monotonic() + self.config.server.drain_timeout
        for thread in [self._worker, self._writeback, *self._cloud]:
            if thread is not None:
                thread.join(max(deadline - time.monotonic(), 0))
                if thread.is_alive():
                    log.warning(
                        "drain timeout: %s exits with work in flight (it stays in the ledger)",
                        thread.name,
                    )
        if self.http is not None:
            self.http.stop()
        self.runtime.close()
        log.info("stopped")
        self.running = False

    def handle_hup(self) -> None:
        if self.config_path is None:
            log.warning("SIGHUP: no config file to reload")
            return
        systemd.notify("RELOADING=1")
        try:
            new = load(self.config_path)
        except ConfigError as exc:
            log.error("SIGHUP: keeping the running configuration: %s", exc)
            systemd.notify("READY=1")
            return
        changed = [
            name
            for name in type(new).model_fields
            if getattr(new, name) != getattr(self.config, name)
        ]
        # the cloud threads keep the queues and clients they started with
        restart = {
            "database",
            "server",
            "providers",
            "unsubscribe",
            "dashboard",
            "metrics",
            "logging",
        }
        needs_restart = restart & set(changed)
        if needs_restart:
            log.warning(
                "SIGHUP: %s changed: restart the service to apply", ", ".join(sorted(needs_restart))
            )
        self.config = new
        self.runtime.config = new
        self.runtime.callbacks.settings = self.runtime.callback_settings()
        if new.templates.dir != self.runtime.renderer.template_dir:
            self.runtime.renderer.use_dir(new.templates.dir)
            log.info("SIGHUP: templates now from %s", new.templates.dir or "the shipped set")
        try:
            from sidecar import logsetup

            logsetup.add_secrets(new.secret_values())
        except Exception:  # noqa: BLE001
            log.debug("could not register new secrets for redaction", exc_info=True)
        log.info("SIGHUP: configuration reloaded (%s)", ", ".join(changed) or "no change")
        systemd.notify("READY=1")

    # --- work ------------------------------------------------------------------------------

    def _work_loop(self) -> None:
        rt = self.runtime
        rt.welcome_progress = partial(self.heartbeats.beat, "delivery")  # its Moodle calls
        delivery = rt.delivery()
        delivery.heartbeat = partial(self.heartbeats.beat, "delivery")
        while not rt.stop.is_set():
            try:
                with rt.db.connection_context():
                    queue_local_batches(rt.clock())
                    delivery.run_once()
            except Exception:  # noqa: BLE001 - loop boundary: log and go on
                log.exception("delivery loop error; retrying")
            self.heartbeats.beat("delivery", idle=self.poll_interval)
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def _writeback_loop(self) -> None:
        """Write issued certificates back to Moodle (sidecar.writeback), in its own thread
        so a slow or unreachable Moodle never holds delivery back."""
        from sidecar.moodle import open_client, request_budget
        from sidecar.writeback import WriteBack

        rt = self.runtime
        beat = partial(self.heartbeats.beat, "write-back")
        wb = WriteBack(self.config, lambda: open_client(self.config, progress=beat), rt.clock)
        idle = max(self.poll_interval, 5.0)
        pause = idle
        while not rt.stop.is_set():
            # a turn reads the ledger, then calls Moodle: each request beats again
            beat(idle=request_budget(self.config))
            try:
                wb.config = self.config  # SIGHUP
                with rt.db.connection_context():
                    tally = wb.run_once()
                busy = tally.recorded + tally.unknown + tally.refused >= wb.batch
                pause = 0.0 if busy else idle * (6 if tally.deferred else 1)
            except Exception:  # noqa: BLE001 - loop boundary: log and go on
                log.exception("certificate write-back error; retrying")
                pause = min(max(pause * 2, 30.0), 600.0)
            beat(idle=pause)
            rt.stop.wait(pause)

    def _retention_loop(self) -> None:
        """Erase what `[retention]` says is too old (sidecar.privacy): a minute after start,
        then once a day; in batches of 500 rows, so callbacks never wait long."""
        from sidecar import privacy

        rt = self.runtime
        pause = self.retention_delay
        while not rt.stop.wait(pause):
            try:
                with rt.db.connection_context():
                    privacy.retain(self.config, rt, time.perf_counter)
                pause = RETENTION_EVERY
            except Exception:  # noqa: BLE001 - loop boundary: log and go on
                log.exception("retention error; trying again in an hour")
                pause = 3600.0

    def _alerts_loop(self) -> None:
        """Alert `[alerts] admin_emails` once per newly stuck job and create the day's
        report when due (sidecar.alerts), every minute. Both are ledger jobs on the local
        route, which the delivery loop sends; two daemons on one database make one. The
        first check, a second after start, makes a report missed while down; stuck jobs
        are judged from the next one, when this daemon has had a minute to move them."""
        from sidecar import alerts

        rt = self.runtime
        pause, first = 1.0, True
        while not rt.stop.wait(pause):
            self.heartbeats.beat("alerts")  # a check reads and writes the ledger only
            if not self.config.alerts.admin_emails:  # nobody to tell
                pause, first = self.alerts_every, False
                self.heartbeats.beat("alerts", idle=pause)
                continue
            try:
                with rt.db.connection_context():
                    # self.config: SIGHUP
                    if alerts.tick(self.config, rt.clock(), stuck=not first):
                        self._wake.set()
            except Exception:  # noqa: BLE001 - loop boundary: log and go on
                log.exception("alerts error; trying again in a minute")
            pause, first = self.alerts_every, False
            self.heartbeats.beat("alerts", idle=pause)

    def _submit_loop(self) -> None:
        """Hand pending cloud batches to their queue. Each cloud backs off on its own while
        it is unreachable: AWS down does not hold Cloudflare's batches back, nor the other
        way round."""
        rt = self.runtime
        paused: dict[str, tuple[float, float]] = {}  # provider -> (until, last pause)
        while not rt.stop.is_set():
            for offload in rt.offloads():
                name = offload.settings.provider
                until, pause = paused.get(name, (0.0, 0.0))
                if time.monotonic() < until:
                    continue
                try:
                    with rt.db.connection_context():
                        offload.submitter.run_once()
                    paused.pop(name, None)
                    continue
                except ProviderUnavailable as exc:
                    pause = min(max(pause * 2, 5.0), 300.0)
                    log.warning("%s submission paused for %.0fs: %s", name, pause, exc)
                except Exception:  # noqa: BLE001 - loop boundary: log and go on
                    pause = min(max(pause * 2, 5.0), 300.0)
                    log.exception("%s submission error; retrying in %.0fs", name, pause)
                paused[name] = (time.monotonic() + pause, pause)
            self.heartbeats.beat("cloud-submit", idle=self.poll_interval)
            self._wake.wait(self.poll_interval)

    def _poll_loop(self) -> None:
        """Read the results queue (long polling), and the DLQ and SES events now and then.

        Each queue is read on its own: one that cannot be read (deleted, no permission)
        is retried every 30 s while the others go on."""
        from sidecar.cloudpoll import poll_dead_letters, poll_results, poll_ses_events

        rt = self.runtime
        aws = self.config.providers.aws
        polls = []
        if aws is not None:
            if aws.results_queue_url:
                url = aws.results_queue_url
                reader = partial(rt.aws.reader, url, aws.results_wait_seconds)
                polls.append([url, 0.0, 0.0, lambda r=reader: poll_results(r(), rt.callbacks)])
            for url, poll in (
                (aws.dlq_url, poll_dead_letters),
                (aws.ses_events_queue_url, poll_ses_events),
            ):
                if url:
                    reader = partial(rt.aws.reader, url)
                    polls.append([url, 0.0, aws.dlq_poll_interval,
                                  lambda r=reader, p=poll: p(r(), rt.clock)])  # fmt: skip
        cf = self.config.providers.cloudflare
        if cf is not None:  # the Queues pull API: short polls, so each on an interval
            if cf.results_queue_id:
                reader = partial(rt.cloudflare.reader, cf.results_queue_id)
                poll = partial(poll_results, callbacks=rt.callbacks, source="queue")
                every = cf.results_poll_interval
                polls.append([f"cloudflare queue {cf.results_queue_id}", 0.0, every,
                              lambda r=reader, p=poll: p(r())])  # fmt: skip
            if cf.dlq_id:
                reader = partial(rt.cloudflare.reader, cf.dlq_id)
                polls.append([f"cloudflare queue {cf.dlq_id}", 0.0, cf.dlq_poll_interval,
                              lambda r=reader: poll_dead_letters(r(), rt.clock,
                                                                 "cloudflare")])  # fmt: skip
        long_polls = aws is not None and aws.results_queue_url and aws.results_wait_seconds > 0
        # one turn may long-poll (results_wait_seconds) and then wait poll_interval
        turn = (aws.results_wait_seconds if long_polls else 0) + self.poll_interval
        while not rt.stop.is_set():
            self.heartbeats.beat("cloud-poll", idle=turn)
            busy = False
            for entry in polls:
                url, due, interval, poll = entry
                if time.monotonic() < due:
                    continue
                entry[1] = time.monotonic() + interval
                try:
                    with rt.db.connection_context():
                        busy |= poll() > 0 and interval == 0
                except ProviderError as exc:
                    log.warning("queue %s: %s; read again in 30s", url, exc)
                    entry[1] = time.monotonic() + 30
                except Exception:  # noqa: BLE001 - loop boundary: log and go on
                    log.exception("queue %s: poll error; read again in 5s", url)
                    entry[1] = time.monotonic() + 5
                if rt.stop.is_set():
                    return
            if not busy:
                # the SQS results poll itself waits (long polling) when it has a wait time
                rt.stop.wait(0.05 if long_polls else self.poll_interval)

    # --- HTTP helpers ----------------------------------------------------------------------

    def _certificate(self, code: str) -> Response | None:
        """The PDF (or a redirect to it); 410 for a revoked code; None (404) else."""
        cert = certificates.find(code)
        if cert is None:
            return None
        if cert.revoked_at is not None:
            return certificate_gone(cert.code, cert.revoked_at)
        store = self._cloud_store(cert.storage)
        if store is not None:
            url = store.presign(
                cert.key, self.config.offload.presigned_url_ttl, f"certificate-{cert.code}.pdf"
            )
            response = redirect(url, 302)
            response.headers["Cache-Control"] = "no-store"
            return response
        if cert.storage != "local":
            return None
        path = Path(self.config.providers.local.certificate_dir) / cert.key
        if not path.is_file():
            return None
        return Response(
            path.read_bytes(),
            mimetype="application/pdf",
            headers={"Content-Disposition": f'inline; filename="certificate-{cert.code}.pdf"'},
        )

    def _cloud_store(self, storage: str):
        """The bucket holding a certificate stored in "s3" (AWS) or "r2" (Cloudflare), when
        that provider is configured; None otherwise."""
        providers = self.config.providers
        if storage == "s3" and providers.aws is not None:
            return self.runtime.aws.certificates
        if storage == "r2" and providers.cloudflare is not None:
            return self.runtime.cloudflare.certificates
        return None

    def _verify_page(self, code: str) -> str | None:
        from html import escape

        from sidecar.db.models import Certificate, Job, Recipient

        cert = Certificate.get_or_none(Certificate.code == code.strip().upper())
        if cert is None:
            return None
        r = Recipient.get_or_none(Recipient.job == cert.job_id, Recipient.userid == cert.userid)
        name = f"{r.firstname} {r.lastname}".strip() if r else f"user {cert.userid}"
        job = Job.get_or_none(Job.id == cert.job_id)
        course = ((job.template_data or {}).get("course") or {}) if job else {}
        course_name = course.get("fullname") if isinstance(course, dict) else None
        if not course_name and cert.courseid:
            course_name = f"course {cert.courseid}"
        state = "revoked" if cert.revoked_at else "valid"
        colour = "#b91c1c" if cert.revoked_at else "#15803d"
        return (
            "<!doctype html><html lang=en><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<title>Certificate verification</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;"
            "padding:0 1rem;color:#1f2937;line-height:1.5}h1{font-size:1.4rem}"
            f".state{{color:{colour};font-weight:bold}}</style>"
            f'<h1>Certificate {escape(cert.code)}: <span class="state">{state}</span></h1>'
            f"<p>Issued to {escape(name)} on {cert.issued_at:%Y-%m-%d}"
            + (f" for {escape(course_name)}" if course_name else "")
            + ".</p>"
            + (
                f"<p>Revoked on {cert.revoked_at:%Y-%m-%d}"
                + (f": {escape(cert.revoked_reason)}" if cert.revoked_reason else "")
                + ".</p>"
                if cert.revoked_at
                else ""
            )
        )
