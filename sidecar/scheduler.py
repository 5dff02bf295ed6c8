"""APScheduler is the clock, the database the truth: two ticking jobs, nothing else.

`sync` reads the schedules every `schedules.sync_interval`; `fire` asks every
`schedules.tick_interval` what is due. Both run with max_instances=1 and coalesce, so a
slow Moodle never piles ticks up; what fires and when is decided by `sidecar.runs`.
"""

import logging

from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger(__name__)


def schedules_usable(config) -> str | None:
    """Why schedules cannot run with this config, or None when they can."""
    s = config.schedules
    if s.source in ("moodle", "both") and config.moodle is None:
        return "no [moodle] section"
    if s.source in ("file", "both") and s.file is None:
        return "schedules.file is not set"
    return None


class Ticker:
    def __init__(self, rt):
        self.rt = rt
        self.scheduler = BackgroundScheduler(timezone="UTC", daemon=True)

    def start(self) -> None:
        cfg = self.rt.config.schedules
        common = dict(max_instances=1, coalesce=True, misfire_grace_time=None)
        self.scheduler.add_job(self.sync, "interval", seconds=cfg.sync_interval, id="sync",
                               next_run_time=_now(), **common)  # fmt: skip
        self.scheduler.add_job(self.fire, "interval", seconds=cfg.tick_interval, id="fire",
                               **common)  # fmt: skip
        self.scheduler.start()
        log.info("schedules: sync every %d s, due check every %d s (%s)",
                 cfg.sync_interval, cfg.tick_interval, cfg.timezone)  # fmt: skip

    def sync(self) -> None:
        from sidecar import sync
        from sidecar.moodle import open_client

        try:
            with self.rt.db.connection_context():
                for result in sync.sync_all(self.rt.config, lambda: open_client(self.rt.config),
                                            self.rt.clock()):  # fmt: skip
                    log.info("schedule sync %s", result.summary)
            # A schedule due now need not wait for the next tick; through the scheduler, so
            # there is never more than one tick at a time.
            self.scheduler.modify_job("fire", next_run_time=_now())
        except Exception:  # noqa: BLE001 - tick boundary
            log.exception("schedule sync failed; retried at the next interval")

    def fire(self) -> None:
        from sidecar.runs import Runner

        if self.rt.stop.is_set():
            return
        try:
            with self.rt.db.connection_context():
                Runner(self.rt).tick()
        except Exception:  # noqa: BLE001 - tick boundary
            log.exception("schedule tick failed; retried at the next interval")

    def shutdown(self) -> None:
        """Stop ticking without waiting for a run in progress: its claim is taken over at
        the next start on this host (its jobs are committed in one transaction or not at
        all, under the run's idempotency key)."""
        self.scheduler.shutdown(wait=False)


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)
