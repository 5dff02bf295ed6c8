import tomllib
from dataclasses import FrozenInstanceError, replace

import pytest

from schedules import (
    ActionType,
    Audience,
    CloudPreference,
    Frequency,
    MalformedSchedule,
    Schedule,
    ScheduleError,
)
from tests.schedules.factory import ROW, hms, row, schedule


def test_good_row_gives_every_field_typed():
    s = Schedule.from_remote(ROW)
    assert s == Schedule(
        id=12,
        name="Weekly reminder",
        enabled=True,
        companyid=3,
        courseid=7,
        frequency=Frequency.DAILY,
        custom_interval=0,
        timeofday=hms(9),
        weekday=0,
        monthday=0,
        action_type=ActionType.EMAIL,
        cloud_preference=CloudPreference.AUTO,
        suppresstarget=0,
        suppress_course_completion=False,
        audience=Audience.ENROLLED,
        inactive_days=0,
        template_id="reminder",
        subject="Please finish your course",
        timemodified=1_767_225_600,
        startdate=None,
        source="moodle",
    )


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"frequency": "weekly", "weekday": 6},
        {"frequency": "monthly", "monthday": 31},
        {"frequency": "custom", "custom_interval": 10, "startdate": 1_767_312_000},
        {"audience": "inactive", "inactive_days": 30},
        {"action_type": "both", "suppresstarget": 41, "suppress_course_completion": 1},
        {"enabled": 0, "cloud_preference": "local", "audience": "not_completed"},
    ],
    ids=["daily", "weekly", "monthly", "custom", "inactive", "both_suppressed", "disabled"],
)
def test_good_rows_round_trip(over):
    s = schedule(**over)
    assert Schedule.from_remote(s.as_row()) == s
    assert all(not hasattr(v, "value") for v in s.as_row().values())  # plain values


def test_unknown_extra_keys_are_ignored():
    assert schedule(colour="blue", lastrun=5) == schedule()


@pytest.mark.parametrize("value, expected", [(1, True), (0, False), (True, True), (False, False)])
def test_booleans_come_as_0_1_or_true_false(value, expected):
    assert schedule(enabled=value).enabled is expected
    assert schedule(suppress_course_completion=value).suppress_course_completion is expected


def test_weekday_out_of_range_message_names_schedule_field_and_rule():
    with pytest.raises(MalformedSchedule) as info:
        schedule(frequency="weekly", weekday=9)
    assert str(info.value) == "schedule 12: weekday: must be 0-6 (0 = Sunday), got 9"
    assert (info.value.schedule_id, info.value.field, info.value.source) == (
        12,
        "weekday",
        "moodle",
    )
    assert isinstance(info.value, ScheduleError)


# (field, overrides, words in the message); ... removes the key.
MALFORMED = [
    ("id", {"id": ...}, "required"),
    ("id", {"id": 0}, "at least 1"),
    ("id", {"id": -4}, "at least 1"),
    ("id", {"id": "12"}, "must be an integer, got '12'"),
    ("id", {"id": True}, "must be an integer, got True"),
    ("id", {"id": 1.5}, "must be an integer"),
    ("name", {"name": ...}, "required"),
    ("name", {"name": 5}, "must be a string"),
    ("enabled", {"enabled": ...}, "required"),
    ("enabled", {"enabled": 2}, "true/false or 0/1, got 2"),
    ("enabled", {"enabled": "yes"}, "true/false or 0/1"),
    ("companyid", {"companyid": -1}, "at least 0"),
    ("companyid", {"companyid": "x"}, "must be an integer"),
    ("courseid", {"courseid": ...}, "required"),
    ("courseid", {"courseid": 0}, "at least 1"),
    ("frequency", {"frequency": ...}, "required"),
    ("frequency", {"frequency": "hourly"}, "one of daily, weekly, monthly, custom; got 'hourly'"),
    ("frequency", {"frequency": 1}, "one of"),
    ("timeofday", {"timeofday": ...}, "required"),
    ("timeofday", {"timeofday": -1}, "0-86399"),
    ("timeofday", {"timeofday": 86400}, "0-86399 (seconds after local midnight), got 86400"),
    ("timeofday", {"timeofday": "09:00"}, "must be an integer"),  # "HH:MM" is for the file
    ("weekday", {"frequency": "weekly", "weekday": ...}, "required"),
    ("weekday", {"frequency": "weekly", "weekday": None}, "required"),
    ("weekday", {"frequency": "weekly", "weekday": -1}, "0-6 (0 = Sunday)"),
    ("weekday", {"frequency": "weekly", "weekday": 7}, "0-6 (0 = Sunday), got 7"),
    ("weekday", {"weekday": "mon"}, "must be an integer"),  # typed even when unused
    ("monthday", {"frequency": "monthly", "monthday": ...}, "required"),
    ("monthday", {"frequency": "monthly", "monthday": 0}, "1-31, got 0"),
    ("monthday", {"frequency": "monthly", "monthday": 32}, "1-31, got 32"),
    ("custom_interval", {"frequency": "custom"}, "at least 1 (days) for a custom schedule, got 0"),
    ("custom_interval", {"frequency": "custom", "custom_interval": ...}, "required"),
    ("custom_interval", {"frequency": "custom", "custom_interval": -2}, "at least 1"),
    ("action_type", {"action_type": "sms"}, "one of email, certificate, both; got 'sms'"),
    ("action_type", {"action_type": ...}, "required"),
    ("cloud_preference", {"cloud_preference": "edge"}, "one of auto, cloud, local"),
    ("suppresstarget", {"suppresstarget": -1}, "at least 0"),
    ("suppresstarget", {"suppresstarget": "41"}, "must be an integer"),
    ("suppress_course_completion", {"suppress_course_completion": 2}, "0/1"),
    ("audience", {"audience": "all"}, "one of enrolled, inactive, not_completed, completed"),
    ("inactive_days", {"audience": "inactive"}, "at least 1 for audience inactive, got 0"),
    ("inactive_days", {"audience": "inactive", "inactive_days": ...}, "required"),
    ("template_id", {"template_id": ...}, "required"),
    ("template_id", {"template_id": 5}, "must be a string"),
    ("subject", {"subject": 5}, "must be a string"),
    ("timemodified", {"timemodified": ...}, "required"),
    ("timemodified", {"timemodified": -1}, "at least 0"),
    ("startdate", {"startdate": -1}, "at least 0"),
    ("startdate", {"startdate": "2026-01-01"}, "must be an integer"),
]


@pytest.mark.parametrize(
    "field, over, words",
    MALFORMED,
    ids=[f"{f}-{list(o.values())[-1]!r}" for f, o, _ in MALFORMED],
)
def test_malformed_row_names_schedule_and_field(field, over, words):
    with pytest.raises(MalformedSchedule) as info:
        schedule(**over)
    who = "?" if field == "id" else "12"
    assert str(info.value).startswith(f"schedule {who}: {field}: ")
    assert words in str(info.value)
    assert info.value.field == field
    assert info.value.schedule_id == (None if field == "id" else 12)


@pytest.mark.parametrize(
    "over",
    [
        {"weekday": 9, "monthday": 0, "custom_interval": -3, "inactive_days": 0},
        {"weekday": None, "monthday": None, "custom_interval": None, "inactive_days": None},
        {"weekday": ..., "monthday": ..., "custom_interval": ..., "inactive_days": ...},
        {"frequency": "weekly", "weekday": 2, "monthday": 99},
    ],
    ids=["leftover_values", "nulls", "absent", "weekly_with_leftover_monthday"],
)
def test_fields_a_schedule_does_not_use_do_not_make_it_malformed(over):
    schedule(**over)


def test_null_subject_is_empty_and_zero_startdate_is_none():
    s = schedule(subject=None, startdate=0)
    assert (s.subject, s.startdate) == ("", None)


def test_a_row_that_is_not_a_mapping_is_malformed():
    with pytest.raises(MalformedSchedule, match=r"schedule \?: \(row\): must be a mapping"):
        Schedule.from_remote([1, 2])  # type: ignore[arg-type]


def test_unknown_source_is_a_programming_error():
    with pytest.raises(ValueError, match="source must be one of moodle, file"):
        Schedule.from_remote(ROW, source="ldap")


def test_schedule_is_frozen():
    with pytest.raises(FrozenInstanceError):
        schedule().enabled = False  # type: ignore[misc]


# --- change detection ---


def test_same_row_same_fingerprint():
    assert schedule().fingerprint == schedule().fingerprint
    assert len(schedule().fingerprint) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"timemodified": ROW["timemodified"] + 1},
        {"name": "Renamed"},
        {"enabled": 0},
        {"timeofday": hms(9, 1)},
        {"frequency": "weekly", "weekday": 3},
        {"action_type": "certificate"},
        {"suppresstarget": 5},
        {"subject": "New"},
        {"startdate": 1_767_312_000},
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_change_changes_fingerprint_and_equality(change):
    before, after = schedule(), schedule(**change)
    assert before != after
    assert before.fingerprint != after.fingerprint


def test_source_is_part_of_the_fingerprint():
    s = schedule()
    assert replace(s, source="file").fingerprint != s.fingerprint


# --- the TOML file source ---

FILE = """
[[schedule]]
id = 1
name = "Daily nudge"
courseid = 7
frequency = "daily"
timeofday = "09:30"
action_type = "email"
template_id = "reminder"

[[schedule]]
id = 2
name = "Certificates"
enabled = false
courseid = 8
frequency = "custom"
custom_interval = 14
startdate = 2026-01-05T00:00:00+00:00
timeofday = 3600
action_type = "certificate"
suppress_course_completion = true
audience = "completed"
"""


def test_file_entries_get_defaults_and_hh_mm_times():
    first, second = (Schedule.from_file_entry(e) for e in tomllib.loads(FILE)["schedule"])
    assert first.timeofday == hms(9, 30)
    assert (first.enabled, first.companyid, first.source) == (True, 0, "file")
    assert (first.cloud_preference, first.audience) == (CloudPreference.AUTO, Audience.ENROLLED)
    assert (first.suppresstarget, first.suppress_course_completion) == (0, False)
    assert (first.subject, first.timemodified, first.startdate) == ("", 0, None)
    assert second.enabled is False and second.suppress_course_completion is True
    assert second.startdate == 1_767_571_200  # 2026-01-05T00:00:00Z
    assert (second.frequency, second.custom_interval) == (Frequency.CUSTOM, 14)


@pytest.mark.parametrize(
    "text, seconds",
    [("00:00", 0), ("9:05", hms(9, 5)), ("23:59", hms(23, 59)), ("07:30:15", hms(7, 30, 15))],
)
def test_file_timeofday_as_hh_mm(text, seconds):
    assert Schedule.from_file_entry(row(timeofday=text)).timeofday == seconds


FILE_MALFORMED = [
    ("timeofday", {"timeofday": "24:00"}, '"HH:MM"'),
    ("timeofday", {"timeofday": "9am"}, '"HH:MM"'),
    ("timeofday", {"timeofday": 90000}, "0-86399"),
    ("courseid", {"courseid": "7"}, "must be an integer, got '7'"),
    ("enabled", {"enabled": "true"}, "true/false or 0/1"),
    ("weekday", {"frequency": "weekly", "weekday": ...}, "required"),
    ("startdate", {"frequency": "custom", "custom_interval": 3}, "required for a custom"),
    ("startdate", {"startdate": tomllib.loads("d = 2026-01-05")["d"]}, "with an offset"),
    ("startdate", {"startdate": tomllib.loads("d = 2026-01-05T09:00:00")["d"]}, "with an offset"),
]


@pytest.mark.parametrize(
    "field, over, words",
    FILE_MALFORMED,
    ids=[f"{f}-{list(o.values())[-1]!s}" for f, o, _ in FILE_MALFORMED],
)
def test_malformed_file_entry_names_schedule_and_field(field, over, words):
    over = {"timemodified": ..., **over}
    with pytest.raises(MalformedSchedule) as info:
        Schedule.from_file_entry(row(**over))
    assert str(info.value).startswith(f"schedule 12: {field}: ")
    assert words in str(info.value)
    assert info.value.source == "file"


def test_file_custom_schedule_may_anchor_on_timemodified():
    s = Schedule.from_file_entry(row(frequency="custom", custom_interval=3))
    assert s.startdate is None and s.timemodified == ROW["timemodified"]


def test_moodle_weekday_convention_zero_is_sunday_is_accepted_from_both_sources():
    assert schedule(frequency="weekly", weekday=0).weekday == 0
    assert Schedule.from_file_entry(row(frequency="weekly", weekday=6)).weekday == 6
