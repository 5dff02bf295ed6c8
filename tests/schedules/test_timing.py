"""The time rules, driven by explicit instants: no sleeps, no clock."""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from schedules import CatchUp, MalformedSchedule, due_now, next_due
from schedules.model import Frequency
from tests.schedules.factory import hms, schedule

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
ZONES = {"london": LONDON, "new_york": NEW_YORK, "utc": UTC}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def epoch(*args: int) -> int:
    return int(utc(*args).timestamp())


def daily(at: int, **over):
    return schedule(frequency="daily", timeofday=at, **over)


# --- every frequency ---

# (id, schedule overrides, zone, after, expected due) -- London is on GMT in January.
NEXT_DUE = [
    ("daily_later_today", {"frequency": "daily"}, "london", utc(2026, 1, 5, 8), utc(2026, 1, 5, 9)),
    ("daily_at_due_is_tomorrow", {}, "london", utc(2026, 1, 5, 9), utc(2026, 1, 6, 9)),
    ("daily_after_due", {}, "london", utc(2026, 1, 5, 9, 0, 1), utc(2026, 1, 6, 9)),
    ("daily_summer_time", {}, "london", utc(2026, 7, 1), utc(2026, 7, 1, 8)),
    ("daily_new_york", {}, "new_york", utc(2026, 1, 5, 12), utc(2026, 1, 5, 14)),
    ("daily_midnight", {"timeofday": 0}, "london", utc(2026, 1, 5, 12), utc(2026, 1, 6)),
    ("daily_last_second", {"timeofday": 86399}, "utc", utc(2026, 1, 5),
     utc(2026, 1, 5, 23, 59, 59)),
    ("daily_year_end", {}, "utc", utc(2026, 12, 31, 10), utc(2027, 1, 1, 9)),
    ("daily_28_feb_leap", {}, "utc", utc(2028, 2, 28, 10), utc(2028, 2, 29, 9)),
    ("daily_28_feb_common", {}, "utc", utc(2026, 2, 28, 10), utc(2026, 3, 1, 9)),
    # Moodle weekdays: 0 = Sunday. 2026-01-04 is a Sunday.
    ("weekly_same_day_later", {"frequency": "weekly", "weekday": 1}, "london",
     utc(2026, 1, 5, 8), utc(2026, 1, 5, 9)),
    ("weekly_same_day_passed", {"frequency": "weekly", "weekday": 1}, "london",
     utc(2026, 1, 5, 10), utc(2026, 1, 12, 9)),
    ("monthly_this_month", {"frequency": "monthly", "monthday": 15}, "london",
     utc(2026, 1, 5), utc(2026, 1, 15, 9)),
    ("monthly_next_month", {"frequency": "monthly", "monthday": 15}, "london",
     utc(2026, 1, 20), utc(2026, 2, 15, 9)),
    ("monthly_31_in_january", {"frequency": "monthly", "monthday": 31}, "utc",
     utc(2026, 1, 1), utc(2026, 1, 31, 9)),
    ("monthly_31_in_april_is_30", {"frequency": "monthly", "monthday": 31}, "utc",
     utc(2026, 4, 1), utc(2026, 4, 30, 9)),
    ("monthly_31_after_april_30", {"frequency": "monthly", "monthday": 31}, "utc",
     utc(2026, 4, 30, 10), utc(2026, 5, 31, 9)),
    ("monthly_31_in_february_is_28", {"frequency": "monthly", "monthday": 31}, "utc",
     utc(2026, 2, 1), utc(2026, 2, 28, 9)),
    ("monthly_30_in_february_is_28", {"frequency": "monthly", "monthday": 30}, "utc",
     utc(2026, 2, 1), utc(2026, 2, 28, 9)),
    ("monthly_29_feb_common_year_is_28", {"frequency": "monthly", "monthday": 29}, "utc",
     utc(2026, 2, 1), utc(2026, 2, 28, 9)),
    ("monthly_29_feb_leap_year", {"frequency": "monthly", "monthday": 29}, "utc",
     utc(2028, 2, 1), utc(2028, 2, 29, 9)),
    ("monthly_31_feb_leap_year_is_29", {"frequency": "monthly", "monthday": 31}, "utc",
     utc(2028, 2, 1), utc(2028, 2, 29, 9)),
    ("monthly_29_after_feb_28_common", {"frequency": "monthly", "monthday": 29}, "utc",
     utc(2026, 2, 28, 10), utc(2026, 3, 29, 9)),
    ("monthly_december_to_january", {"frequency": "monthly", "monthday": 1}, "utc",
     utc(2026, 12, 2), utc(2027, 1, 1, 9)),
    ("custom_anchor_day_is_first", {"frequency": "custom", "custom_interval": 10,
     "startdate": epoch(2026, 2, 1, 15)}, "utc", utc(2026, 1, 1), utc(2026, 2, 1, 9)),
    ("custom_nothing_before_anchor", {"frequency": "custom", "custom_interval": 1,
     "startdate": epoch(2026, 2, 1)}, "utc", utc(2026, 1, 31, 10), utc(2026, 2, 1, 9)),
    ("custom_anchor_on_timemodified", {"frequency": "custom", "custom_interval": 3,
     "timemodified": epoch(2026, 1, 10, 15)}, "utc", utc(2026, 1, 10, 15), utc(2026, 1, 13, 9)),
    # 03:00 UTC on 10 January is still 9 January in New York: that is the anchor day.
    ("custom_anchor_is_local_date", {"frequency": "custom", "custom_interval": 3,
     "timemodified": epoch(2026, 1, 10, 3)}, "new_york", utc(2026, 1, 10, 3),
     utc(2026, 1, 12, 14)),
]  # fmt: skip


@pytest.mark.parametrize(
    "over, zone, after, expected",
    [case[1:] for case in NEXT_DUE],
    ids=[case[0] for case in NEXT_DUE],
)
def test_next_due(over, zone, after, expected):
    assert next_due(schedule(**over), after, ZONES[zone]) == expected


@pytest.mark.parametrize(
    "weekday, expected_day",
    [(0, 4), (1, 5), (2, 6), (3, 7), (4, 8), (5, 9), (6, 10)],
    ids=["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"],
)
def test_weekly_on_each_weekday(weekday, expected_day):
    # Saturday 2026-01-03 after its 09:00: the next Saturday is a week on.
    s = schedule(frequency="weekly", weekday=weekday)
    due = next_due(s, utc(2026, 1, 3, 23), LONDON)
    assert due == utc(2026, 1, expected_day, 9)
    assert due.isoweekday() % 7 == weekday


def test_monthly_31_falls_on_each_month_end_for_a_year():
    s = schedule(frequency="monthly", monthday=31)
    due, days = utc(2026, 1, 1), []
    for _ in range(14):
        due = next_due(s, due, UTC)
        days.append(due.date())
    assert [d.day for d in days] == [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31, 28]


def test_monthly_29_over_a_leap_year_and_a_common_year():
    s = schedule(frequency="monthly", monthday=29)
    febs = [next_due(s, utc(y, 2, 1), UTC).date() for y in (2027, 2028, 2029, 2100, 2400)]
    assert febs == [date(2027, 2, 28), date(2028, 2, 29), date(2029, 2, 28),
                    date(2100, 2, 28), date(2400, 2, 29)]  # fmt: skip


# (id, interval, anchor date, zone, timeofday, expected local dates from the anchor on)
CUSTOM = [
    ("every_1_across_month_end", 1, date(2026, 1, 30), "utc", hms(9),
     ["2026-01-30", "2026-01-31", "2026-02-01", "2026-02-02"]),
    ("every_1_across_29_feb", 1, date(2028, 2, 28), "utc", hms(9),
     ["2028-02-28", "2028-02-29", "2028-03-01"]),
    ("every_2_across_month_end", 2, date(2026, 1, 28), "utc", hms(9),
     ["2026-01-28", "2026-01-30", "2026-02-01", "2026-02-03"]),
    ("every_7_across_month_end", 7, date(2026, 1, 28), "london", hms(9),
     ["2026-01-28", "2026-02-04", "2026-02-11"]),
    ("every_10_across_month_end", 10, date(2026, 1, 25), "new_york", hms(9),
     ["2026-01-25", "2026-02-04", "2026-02-14", "2026-02-24", "2026-03-06"]),
    ("every_1_across_london_spring", 1, date(2026, 3, 28), "london", hms(1, 30),
     ["2026-03-28", "2026-03-29", "2026-03-30"]),
    ("every_2_across_london_spring", 2, date(2026, 3, 27), "london", hms(1, 30),
     ["2026-03-27", "2026-03-29", "2026-03-31"]),
    ("every_7_across_new_york_fall", 7, date(2026, 10, 25), "new_york", hms(1, 30),
     ["2026-10-25", "2026-11-01", "2026-11-08"]),
    ("every_10_across_new_york_fall", 10, date(2026, 10, 22), "new_york", hms(1, 30),
     ["2026-10-22", "2026-11-01", "2026-11-11"]),
    ("every_10_across_london_fall", 10, date(2026, 10, 15), "london", hms(9),
     ["2026-10-15", "2026-10-25", "2026-11-04"]),
]  # fmt: skip


@pytest.mark.parametrize(
    "interval, anchor, zone, at, expected",
    [case[1:] for case in CUSTOM],
    ids=[case[0] for case in CUSTOM],
)
def test_custom_every_n_days(interval, anchor, zone, at, expected):
    tz = ZONES[zone]
    start = datetime.combine(anchor, datetime.min.time(), tz)
    s = schedule(
        frequency="custom", custom_interval=interval, timeofday=at, startdate=int(start.timestamp())
    )
    due, days = start - timedelta(seconds=1), []
    for _ in expected:
        previous, due = due, next_due(s, due, tz)
        assert due > previous
        days.append(due.astimezone(tz).date().isoformat())
    assert days == expected


def test_custom_across_london_spring_forward_exact_instants():
    s = schedule(
        frequency="custom", custom_interval=2, timeofday=hms(1, 30), startdate=epoch(2026, 3, 27)
    )
    first = next_due(s, utc(2026, 3, 26), LONDON)
    second = next_due(s, first, LONDON)
    third = next_due(s, second, LONDON)
    # 01:30 GMT; 01:30 does not exist on the 29th: 02:00 BST; 01:30 BST.
    assert [first, second, third] == [
        utc(2026, 3, 27, 1, 30),
        utc(2026, 3, 29, 1),
        utc(2026, 3, 31, 0, 30),
    ]


# --- daylight saving ---

# (id, zone, local wall time due, expected UTC instant). London: spring 01:00 GMT ->
# 02:00 BST, fall 02:00 BST -> 01:00 GMT. New York: spring 02:00 EST -> 03:00 EDT,
# fall 02:00 EDT -> 01:00 EST.
DST = [
    ("london_spring_2026_before_gap", "london", "2026-03-29 00:30", "2026-03-29 00:30"),
    ("london_spring_2026_gap_start", "london", "2026-03-29 01:00", "2026-03-29 01:00"),
    ("london_spring_2026_in_gap", "london", "2026-03-29 01:30", "2026-03-29 01:00"),
    ("london_spring_2026_gap_last_second", "london", "2026-03-29 01:59:59", "2026-03-29 01:00"),
    ("london_spring_2026_after_gap", "london", "2026-03-29 02:30", "2026-03-29 01:30"),
    ("london_fall_2026_before_overlap", "london", "2026-10-25 00:30", "2026-10-24 23:30"),
    ("london_fall_2026_overlap_start", "london", "2026-10-25 01:00", "2026-10-25 00:00"),
    ("london_fall_2026_in_overlap", "london", "2026-10-25 01:30", "2026-10-25 00:30"),
    ("london_fall_2026_after_overlap", "london", "2026-10-25 02:30", "2026-10-25 02:30"),
    ("new_york_spring_2026_before_gap", "new_york", "2026-03-08 01:30", "2026-03-08 06:30"),
    ("new_york_spring_2026_gap_start", "new_york", "2026-03-08 02:00", "2026-03-08 07:00"),
    ("new_york_spring_2026_in_gap", "new_york", "2026-03-08 02:30", "2026-03-08 07:00"),
    ("new_york_spring_2026_after_gap", "new_york", "2026-03-08 03:30", "2026-03-08 07:30"),
    ("new_york_fall_2026_before_overlap", "new_york", "2026-11-01 00:30", "2026-11-01 04:30"),
    ("new_york_fall_2026_overlap_start", "new_york", "2026-11-01 01:00", "2026-11-01 05:00"),
    ("new_york_fall_2026_in_overlap", "new_york", "2026-11-01 01:30", "2026-11-01 05:30"),
    ("new_york_fall_2026_after_overlap", "new_york", "2026-11-01 02:30", "2026-11-01 07:30"),
    ("london_spring_2025_in_gap", "london", "2025-03-30 01:30", "2025-03-30 01:00"),
    ("london_fall_2025_in_overlap", "london", "2025-10-26 01:30", "2025-10-26 00:30"),
    ("new_york_spring_2025_in_gap", "new_york", "2025-03-09 02:30", "2025-03-09 07:00"),
    ("new_york_fall_2025_in_overlap", "new_york", "2025-11-02 01:30", "2025-11-02 05:30"),
]


@pytest.mark.parametrize(
    "zone, wall, expected", [case[1:] for case in DST], ids=[case[0] for case in DST]
)
def test_dst_change(zone, wall, expected):
    local = datetime.fromisoformat(wall)
    after = datetime.fromisoformat(f"{wall[:10]}T00:00Z") - timedelta(hours=12)
    due = next_due(daily(hms(local.hour, local.minute, local.second)), after, ZONES[zone])
    assert due == datetime.fromisoformat(f"{expected}Z")


# (id, zone, fall-back date, timeofday): the wall time occurs twice on that day.
OVERLAPS = [
    ("london_2026_0130", "london", date(2026, 10, 25), hms(1, 30)),
    ("london_2026_0100", "london", date(2026, 10, 25), hms(1)),
    ("new_york_2026_0130", "new_york", date(2026, 11, 1), hms(1, 30)),
    ("london_2025_0130", "london", date(2025, 10, 26), hms(1, 30)),
    ("new_york_2025_0130", "new_york", date(2025, 11, 2), hms(1, 30)),
]


@pytest.mark.parametrize("zone, day, at", [c[1:] for c in OVERLAPS], ids=[c[0] for c in OVERLAPS])
def test_fall_back_second_pass_of_the_wall_time_is_not_due(zone, day, at):
    tz, s = ZONES[zone], daily(at)
    first = next_due(s, utc(day.year, day.month, day.day) - timedelta(hours=12), tz)
    second_pass = first + timedelta(hours=1)  # the same wall time, on standard time
    assert second_pass.astimezone(tz).replace(tzinfo=None) == first.astimezone(tz).replace(
        tzinfo=None
    )
    after_first = next_due(s, first, tz)
    assert after_first.astimezone(tz).date() == day + timedelta(days=1)
    assert next_due(s, second_pass - timedelta(seconds=1), tz) == after_first


# A week of consecutive next_due calls around each change: one run per local day.
WEEKS = [
    (zone, change, at)
    for zone, changes in {
        "london": [date(2026, 3, 29), date(2026, 10, 25), date(2025, 3, 30), date(2025, 10, 26)],
        "new_york": [date(2026, 3, 8), date(2026, 11, 1), date(2025, 3, 9), date(2025, 11, 2)],
    }.items()
    for change in changes
    for at in (hms(0, 30), hms(1), hms(1, 30), hms(2), hms(2, 30), hms(3), hms(9))
]


@pytest.mark.parametrize(
    "zone, change, at",
    WEEKS,
    ids=[f"{z}_{c.isoformat()}_{a // 3600:02d}{a % 3600 // 60:02d}" for z, c, a in WEEKS],
)
def test_week_across_dst_runs_once_a_day_without_double_or_gap(zone, change, at):
    tz, s = ZONES[zone], daily(at)
    start = change - timedelta(days=3)
    due = datetime.combine(start, datetime.min.time(), tz) - timedelta(seconds=1)
    runs = []
    for _ in range(7):
        due = next_due(s, due, tz)
        runs.append(due)
    days = [r.astimezone(tz).date() for r in runs]
    assert days == [start + timedelta(days=i) for i in range(7)]
    gaps = [b - a for a, b in zip(runs, runs[1:], strict=False)]
    assert all(timedelta(hours=22) < g < timedelta(hours=26) for g in gaps)


@pytest.mark.parametrize("zone, change", [
    ("london", date(2026, 3, 29)), ("london", date(2026, 10, 25)),
    ("new_york", date(2026, 3, 8)), ("new_york", date(2026, 11, 1)),
], ids=["london_spring", "london_fall", "new_york_spring", "new_york_fall"])  # fmt: skip
@pytest.mark.parametrize("at", [hms(1, 30), hms(2, 30)], ids=["0130", "0230"])
def test_ticking_every_minute_across_dst_fires_once_a_day(zone, change, at):
    tz, s = ZONES[zone], daily(at)
    now = datetime.combine(change - timedelta(days=1), datetime.min.time(), tz).astimezone(UTC)
    since, previous, fired = now, None, []
    for _ in range(3 * 24 * 60):
        now += timedelta(minutes=1)
        due = due_now(s, previous, now, tz, CatchUp.SKIP, since=since)
        if due:
            assert due.fire and due.missed == 0 and due.late < timedelta(minutes=1)
            previous = due.due_at
            fired.append(due.due_at.astimezone(tz).date())
    assert fired == [change - timedelta(days=1), change, change + timedelta(days=1)]


@pytest.mark.parametrize("which", ["after", "now"])
def test_naive_instants_are_refused(which):
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match=f"{which} must be a timezone-aware datetime"):
        if which == "after":
            next_due(schedule(), naive, UTC)
        else:
            due_now(schedule(), utc(2026, 1, 1), naive, UTC, "skip")


def test_results_are_utc_whatever_zone_the_argument_is_in():
    due = next_due(schedule(), datetime(2026, 7, 1, tzinfo=NEW_YORK), LONDON)
    assert due.tzinfo is UTC and due == utc(2026, 7, 1, 8)


def test_summary_says_what_was_done():
    due = due_now(schedule(), utc(2026, 1, 1, 9), utc(2026, 1, 5, 12), UTC, "skip")
    assert due is not None
    assert due.summary == (
        "due 2026-01-05T09:00:00+00:00, skipping it 10800s late; 3 earlier due time(s) missed"
        " since 2026-01-02T09:00:00+00:00 (catch-up skip, 4 skipped)"
    )


@pytest.mark.parametrize(
    "field, value",
    [("weekday", 9), ("monthday", 0), ("custom_interval", 0), ("timeofday", 86400)],
)
def test_hand_built_schedule_out_of_range_is_refused_not_looped_on(field, value):
    freq = {"weekday": "weekly", "monthday": "monthly", "custom_interval": "custom"}
    s = replace(schedule(), frequency=Frequency(freq.get(field, "daily")), **{field: value})
    with pytest.raises(MalformedSchedule, match=f"schedule 12: {field}: "):
        next_due(s, utc(2026, 1, 1), UTC)
