"""Catch-up after downtime: which due time fires, how many were missed or skipped."""

from datetime import UTC, datetime, timedelta

import pytest

from schedules import CatchUp, due_now
from tests.schedules.factory import schedule


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def epoch(*args: int) -> int:
    return int(utc(*args).timestamp())


def _nth_due(freq: str, n: int) -> datetime:
    """The n-th due time of the catch-up schedules, computed without the code under test."""
    if freq == "daily":
        return utc(2026, 1, 1, 9) + timedelta(days=n)
    if freq == "weekly":
        return utc(2026, 1, 5, 9) + timedelta(weeks=n)  # Mondays
    return utc(2026 + n // 12, n % 12 + 1, 15, 9)  # the 15th of each month


CATCH_UP_SCHEDULES = {
    "daily": {"frequency": "daily"},
    "weekly": {"frequency": "weekly", "weekday": 1},
    "monthly": {"frequency": "monthly", "monthday": 15},
}


@pytest.mark.parametrize("freq", ["daily", "weekly", "monthly"])
@pytest.mark.parametrize("periods_down", [0, 1, 10])
@pytest.mark.parametrize(
    "back, policy, fire, skipped",
    [
        ("within_grace", "run_once", True, lambda n: 0),
        ("late", "run_once", True, lambda n: 0),
        ("within_grace", "skip", True, lambda n: n),
        ("late", "skip", False, lambda n: n + 1),
    ],
    ids=["run_once_on_time", "run_once_late", "skip_on_time", "skip_late"],
)
def test_catch_up_after_downtime(freq, periods_down, back, policy, fire, skipped):
    s = schedule(**CATCH_UP_SCHEDULES[freq])
    previous = _nth_due(freq, 0)
    latest = _nth_due(freq, periods_down + 1)
    now = latest + (timedelta(minutes=2) if back == "within_grace" else timedelta(hours=3))
    due = due_now(s, previous, now, UTC, policy)
    assert due is not None
    assert due.due_at == latest  # never an earlier one, never one per missed period
    assert (due.fire, due.missed, due.skipped) == (fire, periods_down, skipped(periods_down))
    assert due.first_due_at == _nth_due(freq, 1)
    assert due.late == now - latest
    assert due.policy == CatchUp(policy)
    # Recorded, the same due time is never returned again.
    assert due_now(s, due.due_at, now, UTC, policy) is None


@pytest.mark.parametrize("policy", ["run_once", "skip"])
def test_nothing_due_between_due_times(policy):
    s = schedule()
    assert due_now(s, utc(2026, 1, 1, 9), utc(2026, 1, 2, 8, 59, 59), UTC, policy) is None


def test_due_time_exactly_now_fires():
    due = due_now(schedule(), utc(2026, 1, 1, 9), utc(2026, 1, 2, 9), UTC, CatchUp.SKIP)
    assert due and due.fire and due.due_at == utc(2026, 1, 2, 9) and due.late == timedelta(0)


def test_skip_grace_window_is_inclusive_and_configurable():
    s, previous = schedule(), utc(2026, 1, 1, 9)
    edge = utc(2026, 1, 2, 9, 5)
    assert due_now(s, previous, edge, UTC, "skip").fire
    assert not due_now(s, previous, edge + timedelta(seconds=1), UTC, "skip").fire
    assert due_now(s, previous, edge, UTC, "skip", grace=timedelta(0)).fire is False


@pytest.mark.parametrize("policy", ["run_once", "skip"])
def test_new_schedule_does_not_fire_for_the_past(policy):
    # In Moodle since 2020, first synced today at 12:00: the 09:00 runs are history.
    s = schedule(timemodified=epoch(2020, 1, 1))
    since = utc(2026, 3, 10, 12)
    assert due_now(s, None, since + timedelta(minutes=1), UTC, policy, since=since) is None
    assert due_now(s, None, utc(2026, 3, 11, 8), UTC, policy, since=since) is None
    due = due_now(s, None, utc(2026, 3, 11, 9, 1), UTC, policy, since=since)
    assert due and due.fire and due.due_at == utc(2026, 3, 11, 9) and due.missed == 0


def test_since_is_ignored_once_the_schedule_has_fired():
    s = schedule()
    due = due_now(
        s, utc(2026, 1, 1, 9), utc(2026, 1, 3, 10), UTC, "run_once", since=utc(2026, 1, 3)
    )
    assert due and due.missed == 1


def test_never_fired_without_since_is_refused():
    with pytest.raises(ValueError, match="since is required"):
        due_now(schedule(), None, utc(2026, 1, 1), UTC, "run_once")


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="'twice'"):
        due_now(schedule(), utc(2026, 1, 1), utc(2026, 1, 3), UTC, "twice")
