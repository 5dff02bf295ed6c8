"""systemd's watchdog: WATCHDOG=1 only while the main loop and the delivery threads progress.

Watched: the delivery loop, the Moodle write-back thread, the cloud submit and results
threads, the alerts loop (stuck-job alerts, the daily report), and the two ticking jobs of
the schedules (`schedule-sync`, `schedule-tick`, run by APScheduler in threads of its own
pool, so only their lateness counts, not a thread).

Each watched thread beats (`Heartbeats.beat`) when it makes progress: once a loop turn, and
once a recipient inside a delivery batch. Before it waits it says how long (`idle=`), so a
thread backing off for five minutes is not taken for a wedged one; a ticking job, between
runs, its interval plus `scheduler.MARGIN`. A thread talking to Moodle beats after every
request, each time allowing the next the Moodle request budget (`sidecar.moodle.
request_budget`: the longest retry backoff, then a connect and an answer each within
`moodle.timeout`), so a slow but live Moodle is not taken for a wedge. The main loop pings
(`WATCHDOG=1`) every `$WATCHDOG_USEC`/2 only while no watched thread is dead or more than
one watchdog interval late; a thread stuck in a call that never returns therefore stops the
pings, and systemd (`WatchdogSec=`) kills and restarts the service. With the pings goes a
`STATUS=` line: the jobs running and the last schedule sync.
"""

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

log = logging.getLogger(__name__)


def interval(env: Mapping[str, str] = os.environ) -> float | None:
    """The watchdog interval in seconds systemd asked for, or None (no watchdog)."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (the variables were inherited)
    return int(usec) / 1_000_000


class Heartbeats:
    """The last sign of progress of each watched thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._alive: dict[str, Callable[[], bool] | None] = {}  # None: a periodic job
        self._due: dict[str, float] = {}  # name -> by when the next beat is expected

    def watch(self, thread: threading.Thread | str, idle: float = 0.0) -> None:
        """Expect beats from `thread`, the first within `idle` seconds. A name instead of a
        thread is a periodic job that runs in whatever thread its scheduler picks: only its
        lateness counts."""
        name = thread if isinstance(thread, str) else thread.name
        with self._lock:
            self._alive[name] = None if isinstance(thread, str) else thread.is_alive
            self._due[name] = self.clock() + idle

    def beat(self, name: str, idle: float = 0.0) -> None:
        """`name` made progress; it may now wait `idle` seconds before its next beat."""
        self._due[name] = self.clock() + idle

    def wedged(self, grace: float) -> list[str]:
        """Watched threads that died, or are more than `grace` seconds past their next beat,
        each as "name (why)"."""
        now = self.clock()
        out = []
        with self._lock:
            for name, alive in self._alive.items():
                if alive is not None and not alive():
                    out.append(f"{name} (exited)")
                elif now - self._due[name] > grace:
                    out.append(f"{name} (no progress for {now - self._due[name]:.0f}s)")
        return out


def status_line(now: datetime) -> str:
    """One line for `systemctl status`: "3 jobs running; last schedule sync 12:04 UTC"."""
    from sidecar.db.models import Job
    from sidecar.web.pages.overview import RUNNING

    running = Job.select().where(Job.status.in_(RUNNING)).count()
    return f"{running} job{'' if running == 1 else 's'} running; {last_sync_text(now)}"


def last_sync_text(now: datetime) -> str:
    """ "last schedule sync 12:04 UTC" (its date too when older than a day), or "no
    schedule sync yet"; a sync that failed since says so."""
    from sidecar.db.models import SyncState

    sync = SyncState.get_or_none(SyncState.source == "moodle")
    if sync is None or (sync.ok_at is None and sync.error_at is None):
        return "no schedule sync yet"
    text = (
        "no schedule sync yet"
        if sync.ok_at is None
        else f"last schedule sync {_at(sync.ok_at, now)}"
    )
    if sync.error_at is not None and (sync.ok_at is None or sync.error_at >= sync.ok_at):
        text += f" (failed at {_at(sync.error_at, now)})"
    return text


def _at(at: datetime, now: datetime) -> str:
    return f"{at:%H:%M} UTC" if now - at < timedelta(days=1) else f"{at:%Y-%m-%d %H:%M} UTC"
