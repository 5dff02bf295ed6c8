"""sidecar.watchdog: which threads count as wedged, and the interval systemd asks for."""

import os
import threading

from sidecar import watchdog


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def running_thread(name: str) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()
    thread = threading.Thread(target=done.wait, name=name, daemon=True)
    thread.start()
    return thread, done


def test_a_thread_is_wedged_only_past_its_announced_wait_plus_the_grace():
    clock = Clock()
    beats = watchdog.Heartbeats(clock)
    thread, done = running_thread("delivery")
    beats.watch(thread)
    beats.beat("delivery", idle=300)  # backing off for five minutes
    clock.now += 300 + 60
    assert beats.wedged(grace=60) == []
    clock.now += 1
    assert beats.wedged(grace=60) == ["delivery (no progress for 61s)"]
    beats.beat("delivery")
    assert beats.wedged(grace=60) == []
    done.set()
    thread.join()
    assert beats.wedged(grace=60) == ["delivery (exited)"]


def test_a_periodic_job_is_watched_by_name_and_only_its_lateness_counts():
    clock = Clock()
    beats = watchdog.Heartbeats(clock)
    beats.watch("schedule-tick", idle=40)  # runs every 30 s, in its scheduler's threads
    clock.now += 40 + 60
    assert beats.wedged(grace=60) == []
    beats.beat("schedule-tick", idle=65)  # a Moodle request: the next may take 65 s
    clock.now += 65 + 61
    assert beats.wedged(grace=60) == ["schedule-tick (no progress for 61s)"]


def test_the_moodle_request_budget_covers_the_longest_backoff_and_two_timeouts():
    from moodle_ws.client import ClientSettings

    def budget(**over) -> float:
        return ClientSettings(url="https://moodle.example", token="t", **over).request_budget

    assert budget() == 4 + 1 + 2 * 30  # 4 tries: the third retry waits up to 4 s + 1 jitter
    assert budget(attempts=1, timeout=5) == 10  # no retry, no backoff
    assert budget(attempts=10) == 30 + 1 + 60  # backoff capped at max_backoff


def test_the_interval_comes_from_watchdog_usec_for_this_process_only():
    assert watchdog.interval({"WATCHDOG_USEC": "120000000"}) == 120.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog.interval(mine) == 2.0
    assert watchdog.interval({**mine, "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog.interval({}) is None
    assert watchdog.interval({"WATCHDOG_USEC": "0"}) is None


def test_the_status_line_counts_running_jobs_and_tells_the_last_sync(tmp_path):
    from datetime import datetime

    from sidecar.db import migrations
    from sidecar.db.connect import open_database
    from sidecar.db.models import Job, SyncState

    db = open_database(f"sqlite:///{tmp_path}/offload.db")
    migrations.upgrade(db)
    now = datetime(2026, 3, 1, 12, 0)
    assert watchdog.status_line(now) == "0 jobs running; no schedule sync yet"
    common = {"type": "send_csv", "source": "csv", "created_at": now, "updated_at": now,
              "actions": {"email": True}, "template_id": "custom", "template_data": {},
              "route": "local", "total": 1}  # fmt: skip
    for i, status in enumerate(("processing", "queued", "completed")):
        Job.create(id=f"job{i}", status=status, idempotency_key=f"k{i}", **common)
    SyncState.create(source="moodle", ok_at=datetime(2026, 3, 1, 11, 55))
    assert watchdog.status_line(now) == "2 jobs running; last schedule sync 11:55 UTC"
    SyncState.update(error="timed out", error_at=datetime(2026, 3, 1, 11, 58)).execute()
    assert watchdog.last_sync_text(now) == "last schedule sync 11:55 UTC (failed at 11:58 UTC)"
    assert watchdog.last_sync_text(datetime(2026, 3, 5)) == (
        "last schedule sync 2026-03-01 11:55 UTC (failed at 2026-03-01 11:58 UTC)"
    )
    db.close()
