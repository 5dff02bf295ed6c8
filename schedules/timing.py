"""When a schedule is due: pure rules over (schedule, previous due time, now).

Every argument instant is a timezone-aware `datetime`, every result is aware UTC; the
schedule's wall-clock times are read in `tz`, the daemon's `[schedules] timezone` (a
`zoneinfo.ZoneInfo`). Nothing here reads the clock.

Rules, one due time per matching local date, at `timeofday`:
- daily: every date; weekly: dates whose weekday is `weekday` (0 = Sunday);
- monthly: day `monthday`, or the month's last day when the month is shorter
  (31 -> 30 April, 29/30/31 -> 28 February, or 29 in a leap year);
- custom: every `custom_interval` days counted from the anchor date, the local date of
  `startdate` (else of `timemodified`); the anchor date is the first occurrence and no
  date before it is due. `startdate` anchors custom schedules only.

Daylight saving (pinned by named cases in tests/schedules/test_timing.py):
- Fall-back: a wall time that occurs twice (01:30 on 2026-10-25 in Europe/London,
  2026-11-01 in America/New_York) is due ONCE, at its first occurrence (fold=0, still
  on summer time). The second pass of the same wall time is not a new due time.
- Spring-forward: a wall time that does not exist (01:30 on 2026-03-29 in London, whose
  clocks jump 01:00 -> 02:00; 02:30 on 2026-03-08 in New York, 02:00 -> 03:00) is due at
  the first instant after the gap, i.e. the transition itself: 02:00 BST = 01:00 UTC in
  London, 03:00 EDT = 07:00 UTC in New York. It is not skipped and not moved an hour on.
- So each matching local date yields exactly one instant, and the instants of successive
  dates strictly increase: no run is lost and none is doubled.

Why not APScheduler's triggers: APScheduler 3.11's `CronTrigger` with a zoneinfo zone
fires a nonexistent 01:30 at 02:30 BST (an hour late) and fires 01:30 TWICE at fall-back
(once per offset), and `CalendarIntervalTrigger` skips the spring-forward day altogether.
Neither gives the rules above, so they are written here with zoneinfo directly.

Catch-up after downtime (`due_now`): only the LATEST due time `<= now` after the previous
one can fire, and at most once. `CatchUp.RUN_ONCE` fires it however late; `CatchUp.SKIP`
fires it only when it is at most `grace` old, otherwise reports it skipped. Every due time
before it is counted as missed, never fired. A schedule that never fired counts from
`since` (its first sync), so a new schedule does not fire for the past.
"""

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum

from schedules.model import Frequency, MalformedSchedule, Schedule

DEFAULT_GRACE = timedelta(minutes=5)


class CatchUp(StrEnum):
    """What to do with due times missed while the daemon was not running."""

    RUN_ONCE = "run_once"  # fire the latest missed one, once
    SKIP = "skip"  # fire nothing missed; only a due time within the grace window fires


@dataclass(frozen=True)
class Due:
    """The decision for one schedule at one tick: what to record, and whether to fire it.

    `due_at` is the latest due time `<= now`; the caller records a run at it whether it
    fires or not, so the next call starts after it. `missed` counts the due times between
    the previous run and `due_at`; `skipped` those that will never fire (all of `missed`
    under SKIP, plus `due_at` itself when it is older than the grace window).
    """

    due_at: datetime
    fire: bool
    missed: int
    skipped: int
    first_due_at: datetime  # the earliest due time considered (= due_at when none missed)
    late: timedelta  # now - due_at
    policy: CatchUp

    @property
    def summary(self) -> str:
        """One line for the log: what is due, how late, and what the policy did."""
        what = "firing" if self.fire else "skipping"
        line = f"due {self.due_at.isoformat()}, {what} it {_seconds(self.late)}s late"
        if self.missed:
            line += (
                f"; {self.missed} earlier due time(s) missed since {self.first_due_at.isoformat()}"
            )
        return f"{line} (catch-up {self.policy.value}, {self.skipped} skipped)"


def next_due(schedule: Schedule, after: datetime, tz: tzinfo) -> datetime:
    """The first due instant strictly after `after`, in UTC.

    Raises ValueError for a naive `after`; MalformedSchedule when a field the rule uses
    is out of range (a Schedule built without `from_remote`).
    """
    _require_aware(after, "after")
    # A due time of an earlier local date is before `after`: even one a gap pushed past
    # midnight lands on the first instant of the next date, not later.
    for day in _due_dates(schedule, after.astimezone(tz).date(), tz):
        at = local_instant(day, schedule.timeofday, tz)
        if at > after:
            return at
    raise MalformedSchedule(
        schedule.id, "frequency", "no due time before year 9999", schedule.source
    )


def due_now(
    schedule: Schedule,
    previous_due: datetime | None,
    now: datetime,
    tz: tzinfo,
    policy: CatchUp | str,
    *,
    since: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
) -> Due | None:
    """What to do now: None when no due time is in (previous_due or since, now].

    `since` (the schedule's first sync) is required when `previous_due` is None and
    ignored otherwise. Raises ValueError for naive instants, a missing `since` or an
    unknown policy. Whether the schedule is enabled is the caller's business.
    """
    policy = CatchUp(policy)
    floor = previous_due if previous_due is not None else since
    if floor is None:
        raise ValueError("due_now: since is required when the schedule has never fired")
    _require_aware(floor, "previous_due" if previous_due is not None else "since")
    _require_aware(now, "now")
    first = next_due(schedule, floor, tz)
    if first > now:
        return None
    latest, missed = first, 0
    while (following := next_due(schedule, latest, tz)) <= now:
        latest, missed = following, missed + 1
    late = now - latest
    if policy is CatchUp.RUN_ONCE:
        fire, skipped = True, 0
    else:
        fire = late <= grace
        skipped = missed if fire else missed + 1
    return Due(latest, fire, missed, skipped, first, late, policy)


def local_instant(day: date, timeofday: int, tz: tzinfo) -> datetime:
    """The UTC instant of wall time `timeofday` (seconds) on local `day`, DST rules above."""
    wall = datetime.combine(day, time()) + timedelta(seconds=timeofday)
    first = wall.replace(tzinfo=tz)  # fold=0: the first of two occurrences at fall-back
    utc = first.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) == wall:
        return utc
    return _gap_end(first, tz)


def anchor_date(schedule: Schedule, tz: tzinfo) -> date:
    """Day 1 of a custom schedule's cycle: local date of `startdate`, else of `timemodified`."""
    epoch = schedule.startdate if schedule.startdate is not None else schedule.timemodified
    return datetime.fromtimestamp(epoch, tz).date()


def _gap_end(wall: datetime, tz: tzinfo) -> datetime:
    """The transition instant that ends the gap `wall` (aware, nonexistent) falls in."""
    # PEP 495: in a gap fold=1 reads the wall time with the offset after the jump, which
    # lands before the transition; fold=0 with the one before it, which lands after.
    before = int(wall.replace(fold=1).timestamp())
    after = int(wall.replace(fold=0).timestamp())
    later = datetime.fromtimestamp(after, tz).utcoffset()
    while after - before > 1:  # transitions fall on whole seconds
        mid = (before + after) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == later:
            after = mid
        else:
            before = mid
    return datetime.fromtimestamp(after, UTC)


def _due_dates(schedule: Schedule, start: date, tz: tzinfo) -> Iterator[date]:
    """Local dates on or after `start` on which the schedule is due, in order."""
    _check(schedule)
    freq = schedule.frequency
    if freq is Frequency.DAILY:
        yield from _every(start, 1)
    elif freq is Frequency.WEEKLY:
        # isoweekday: Monday 1 .. Sunday 7, so % 7 gives Moodle's 0 = Sunday.
        offset = (schedule.weekday - start.isoweekday() % 7) % 7
        yield from _every(start + timedelta(days=offset), 7)
    elif freq is Frequency.MONTHLY:
        year, month = start.year, start.month
        while True:
            last = calendar.monthrange(year, month)[1]
            day = date(year, month, min(schedule.monthday, last))
            if day >= start:
                yield day
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    else:
        anchor, step = anchor_date(schedule, tz), schedule.custom_interval
        periods = max(0, -(-(start - anchor).days // step))  # ceil: first one >= start
        yield from _every(anchor + timedelta(days=periods * step), step)


def _every(first: date, days: int) -> Iterator[date]:
    step = timedelta(days=days)
    day = first
    while True:
        yield day
        try:
            day += step
        except OverflowError:
            return


def _check(schedule: Schedule) -> None:
    """Refuse out-of-range fields a rule loops on, for Schedules built by hand."""
    bad = None
    if not 0 <= schedule.timeofday < 86400:
        bad = ("timeofday", f"must be 0-86399, got {schedule.timeofday}")
    elif schedule.frequency is Frequency.WEEKLY and not 0 <= schedule.weekday <= 6:
        bad = ("weekday", f"must be 0-6 (0 = Sunday), got {schedule.weekday}")
    elif schedule.frequency is Frequency.MONTHLY and not 1 <= schedule.monthday <= 31:
        bad = ("monthday", f"must be 1-31, got {schedule.monthday}")
    elif schedule.frequency is Frequency.CUSTOM and schedule.custom_interval < 1:
        bad = ("custom_interval", f"must be at least 1, got {schedule.custom_interval}")
    if bad:
        raise MalformedSchedule(schedule.id, bad[0], bad[1], schedule.source)


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())
