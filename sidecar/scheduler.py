"""APScheduler is the clock, the database the truth: two ticking jobs, nothing else.

`sync` reads the schedules every `schedules.sync_interval`; `fire` asks every
`schedules.tick_interval` what is due. Both run with max_instances=1 and coalesce, so a
slow Moodle never piles ticks up; what fires and when is decided by `sidecar.runs`.

Under the daemon both are watched (sidecar.watchdog) as `schedule-sync` and
`schedule-tick`: a run beats as it starts and after each Moodle request (each allowing the
next the Moodle request budget), and between runs announces its interval plus MARGIN; one
that hangs stops the watchdog's pings.
"""

import logging
from functools import partial

from apscheduler.schedulers.background import BackgroundScheduler

from sidecar import crashpoints

log = logging.getLogger(__name__)

#: how late APScheduler may start a run before the watchdog counts it (the watchdog
#: interval is allowed on top)
MARGIN = 10.0
#: the watchdog's name of each ticking job
WATCHED = {"sync": "schedule-sync", "fire": "schedule-tick"}


def schedules_usable(config) -> str | None:
    """Why schedules cannot run with this config, or None when they can."""
    s = config.schedules
    if s.source in ("moodle", "both") and config.moodle is None:
        return "no [moodle] section"
    if s.source in ("file", "both") and s.file is None:
        return "schedules.file is not set"
    return None


class Ticker:
    """`heartbeats` (sidecar.watchdog.Heartbeats, optional) watches the two jobs."""

    def __init__(self, rt, heartbeats=None):
        self.rt = rt
        self.heartbeats = heartbeats
        self.scheduler = BackgroundScheduler(timezone="UTC", daemon=True)
        self.every: dict[str, float] = {}  # job id -> its interval in seconds

    def start(self) -> None:
        cfg = self.rt.config.schedules
        self.every = {"sync": float(cfg.sync_interval), "fire": float(cfg.tick_interval)}
        common = dict(max_instances=1, coalesce=True, misfire_grace_time=None)
        self.scheduler.add_job(self.sync, "interval", seconds=cfg.sync_interval, id="sync",
                               next_run_time=_now(), **common)  # fmt: skip
        self.scheduler.add_job(self.fire, "interval", seconds=cfg.tick_interval, id="fire",
                               **common)  # fmt: skip
        if self.heartbeats is not None:
            for job, every in self.every.items():
                self.heartbeats.watch(WATCHED[job], idle=every + MARGIN)
        self.scheduler.start()
        log.info("schedules: sync every %d s, due check every %d s (%s)",
                 cfg.sync_interval, cfg.tick_interval, cfg.timezone)  # fmt: skip

    def sync(self) -> None:
        from sidecar import sync
        from sidecar.moodle import open_client

        config = self.rt.config
        progress = self._running("sync")
        try:
            crashpoints.hang("schedules.sync")
            with self.rt.db.connection_context():
                for result in sync.sync_all(config, lambda: open_client(config, progress),
                                            self.rt.clock()):  # fmt: skip
                    log.info("schedule sync %s", result.summary)
            # A schedule due now need not wait for the next tick; through the scheduler, so
            # there is never more than one tick at a time.
            self.scheduler.modify_job("fire", next_run_time=_now())
        except Exception:  # noqa: BLE001 - tick boundary
            log.exception("schedule sync failed; retried at the next interval")
        finally:
            self._idle("sync")

    def fire(self) -> None:
        from sidecar.runs import Runner

        if self.rt.stop.is_set():
            return
        progress = self._running("fire")
        try:
            crashpoints.hang("schedules.tick")
            with self.rt.db.connection_context():
                Runner(self.rt, progress=progress).tick()
        except Exception:  # noqa: BLE001 - tick boundary
            log.exception("schedule tick failed; retried at the next interval")
        finally:
            self._idle("fire")

    def _running(self, job: str):
        """Beat as a run starts; the beat its Moodle requests give (None: not watched)."""
        from sidecar.moodle import request_budget

        if self.heartbeats is None:
            return None
        beat = partial(self.heartbeats.beat, WATCHED[job])
        beat(idle=request_budget(self.rt.config))
        return beat

    def _idle(self, job: str) -> None:
        if self.heartbeats is not None:
            self.heartbeats.beat(WATCHED[job], idle=self.every[job] + MARGIN)

    def shutdown(self) -> None:
        """Stop ticking without waiting for a run in progress: its claim is taken over at
        the next start on this host (its jobs are committed in one transaction or not at
        all, under the run's idempotency key)."""
        self.scheduler.shutdown(wait=False)


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)
