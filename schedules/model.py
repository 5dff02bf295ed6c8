"""Schedules as the daemon keeps them: validated, frozen, comparable.

Two sources give the same keys (docs/moodle.md, `{prefix}_get_schedules`): Moodle's rows
(`Schedule.from_remote`) and the `[[schedule]]` tables of the TOML schedule file
(`Schedule.from_file_entry`). Both refuse a malformed schedule with `MalformedSchedule`,
which names the schedule id and the field, so sync can skip that one and keep the rest.

Weekdays count as PHP's `date('w')` and Moodle's calendar do: 0 = Sunday ... 6 = Saturday.
`weekday`, `monthday`, `custom_interval` and `inactive_days` are checked only where they
matter (weekly, monthly, custom, audience inactive): Moodle sends them, often as 0 or
null, for every schedule, and a leftover value must not make a good schedule malformed.
"""

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, NoReturn, TypeVar

SOURCES = ("moodle", "file")


class Frequency(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    CUSTOM = "custom"  # every `custom_interval` days


class ActionType(StrEnum):
    EMAIL = "email"
    CERTIFICATE = "certificate"
    BOTH = "both"


class CloudPreference(StrEnum):
    AUTO = "auto"
    CLOUD = "cloud"
    LOCAL = "local"


class Audience(StrEnum):
    ENROLLED = "enrolled"
    INACTIVE = "inactive"
    NOT_COMPLETED = "not_completed"
    COMPLETED = "completed"


class ScheduleError(Exception):
    """Root of the errors of the schedules package."""


class MalformedSchedule(ScheduleError):
    """A schedule its source gave that cannot be used; sync skips it, keeps the others."""

    def __init__(self, schedule_id: int | None, field: str, problem: str, source: str):
        who = "?" if schedule_id is None else schedule_id
        super().__init__(f"schedule {who}: {field}: {problem}")
        self.schedule_id, self.field, self.problem, self.source = (
            schedule_id, field, problem, source,
        )  # fmt: skip


@dataclass(frozen=True)
class Schedule:
    """One schedule, validated. Times: `timeofday` is seconds after local midnight."""

    id: int
    name: str
    enabled: bool
    companyid: int  # IOMAD company, 0 = all
    courseid: int
    frequency: Frequency
    custom_interval: int  # days, for custom
    timeofday: int
    weekday: int  # 0 = Sunday .. 6 = Saturday, for weekly
    monthday: int  # 1..31, for monthly; past the month's end means its last day
    action_type: ActionType
    cloud_preference: CloudPreference
    suppresstarget: int  # cmid whose completion suppresses the send, 0 = none
    suppress_course_completion: bool
    audience: Audience
    inactive_days: int  # for audience inactive
    template_id: str
    subject: str
    timemodified: int  # epoch seconds
    startdate: int | None = None  # epoch seconds; anchors custom schedules
    source: str = "moodle"

    @classmethod
    def from_remote(cls, row: Mapping[str, Any], source: str = "moodle") -> "Schedule":
        """Validate one raw `{prefix}_get_schedules` row; unknown keys are ignored.

        Raises MalformedSchedule naming the id and the first bad field.
        """
        return _parse(_Reader(row, source, file=False))

    @classmethod
    def from_file_entry(cls, entry: Mapping[str, Any]) -> "Schedule":
        """Validate one `[[schedule]]` table of the TOML schedule file.

        Same keys and rules as Moodle's rows; `timeofday` may also be "HH:MM" or
        "HH:MM:SS", `startdate` an offset date-time, and keys Moodle always sends have
        defaults. Raises MalformedSchedule naming the id and the first bad field.
        """
        return _parse(_Reader(entry, "file", file=True))

    def as_row(self) -> dict[str, Any]:
        """The schedule as a raw row that `from_remote` accepts and turns back into it."""
        row = {
            k: v.value if isinstance(v, StrEnum) else v
            for k, v in asdict(self).items()
            if k != "source"
        }
        if row["startdate"] is None:
            del row["startdate"]
        return row

    @property
    def fingerprint(self) -> str:
        """A stable digest of every field: sync stores it to see that a schedule changed."""
        blob = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


_ABSENT = object()
_E = TypeVar("_E", bound=StrEnum)
_HHMM = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?")
DAY_SECONDS = 86400


class _Reader:
    """Reads one raw mapping key by key; every failure names the schedule and the key."""

    def __init__(self, row: Mapping[str, Any], source: str, *, file: bool):
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        if not isinstance(row, Mapping):
            raise MalformedSchedule(None, "(row)", f"must be a mapping, got {row!r}", source)
        self.row, self.source, self.file = row, source, file
        self.id: int | None = None

    def fail(self, key: str, problem: str) -> NoReturn:
        raise MalformedSchedule(self.id, key, problem, self.source)

    def get(self, key: str, default: Any) -> Any:
        # Moodle's return values are nullable: null is treated as absent.
        value = self.row.get(key)
        if value is None:
            if default is _ABSENT:
                self.fail(key, "required")
            return default
        return value

    def integer(self, key: str, default: Any = _ABSENT) -> int:
        value = self.get(key, default)
        # bool is an int in Python; True as a course id is a type error, not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {value!r}")
        return value

    def at_least(self, key: str, minimum: int, default: Any = _ABSENT, why: str = "") -> int:
        value = self.integer(key, default)
        if value < minimum:
            self.fail(key, f"must be at least {minimum}{why}, got {value}")
        return value

    def boolean(self, key: str, default: Any = _ABSENT) -> bool:
        value = self.get(key, default)
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        self.fail(key, f"must be true/false or 0/1, got {value!r}")

    def text(self, key: str, default: Any = _ABSENT) -> str:
        value = self.get(key, default)
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {value!r}")
        return value

    def choice(self, key: str, kind: type[_E], default: Any = _ABSENT) -> _E:
        value = self.get(key, default)
        if isinstance(value, kind):
            return value
        if isinstance(value, str) and value in kind._value2member_map_:
            return kind(value)
        allowed = ", ".join(m.value for m in kind)
        self.fail(key, f"must be one of {allowed}; got {value!r}")

    def timeofday(self) -> int:
        value = self.get("timeofday", _ABSENT)
        if self.file and isinstance(value, str):
            match = _HHMM.fullmatch(value)
            if not match:
                self.fail("timeofday", f'must be "HH:MM" (00:00-23:59), got {value!r}')
            h, m, s = (int(g or 0) for g in match.groups())
            return h * 3600 + m * 60 + s
        seconds = self.integer("timeofday")
        if not 0 <= seconds < DAY_SECONDS:
            self.fail("timeofday", f"must be 0-86399 (seconds after local midnight), got {seconds}")
        return seconds

    def startdate(self) -> int | None:
        value = self.get("startdate", None)
        if self.file and isinstance(value, datetime) and value.tzinfo is not None:
            return int(value.timestamp())
        if self.file and isinstance(value, date):  # datetime is a date too
            self.fail(
                "startdate",
                f"must be epoch seconds or a date-time with an offset "
                f"(2026-01-05T09:00:00+00:00), got {value.isoformat()} without one",
            )
        if value is None:
            return None
        # Moodle stores an unset date as 0.
        return self.at_least("startdate", 0) or None


def _parse(r: _Reader) -> Schedule:
    def opt(moodle_default: Any, file_default: Any) -> Any:
        # Keys Moodle always sends have defaults in the hand-written file.
        return file_default if r.file else moodle_default

    r.id = r.at_least("id", 1)
    name = r.text("name")
    enabled = r.boolean("enabled", opt(_ABSENT, True))
    companyid = r.at_least("companyid", 0, opt(_ABSENT, 0))
    courseid = r.at_least("courseid", 1)
    frequency = r.choice("frequency", Frequency)
    timeofday = r.timeofday()

    # Conditional fields: required and range-checked only for the frequency that uses them.
    if frequency is Frequency.CUSTOM:
        custom_interval = r.at_least("custom_interval", 1, why=" (days) for a custom schedule")
    else:
        custom_interval = r.integer("custom_interval", 0)
    if frequency is Frequency.WEEKLY:
        weekday = r.integer("weekday")
        if not 0 <= weekday <= 6:
            r.fail("weekday", f"must be 0-6 (0 = Sunday), got {weekday}")
    else:
        weekday = r.integer("weekday", 0)
    if frequency is Frequency.MONTHLY:
        monthday = r.integer("monthday")
        if not 1 <= monthday <= 31:
            r.fail("monthday", f"must be 1-31, got {monthday}")
    else:
        monthday = r.integer("monthday", 0)

    action_type = r.choice("action_type", ActionType)
    cloud_preference = r.choice("cloud_preference", CloudPreference, opt(_ABSENT, "auto"))
    suppresstarget = r.at_least("suppresstarget", 0, opt(_ABSENT, 0))
    suppress_course = r.boolean("suppress_course_completion", opt(_ABSENT, False))
    audience = r.choice("audience", Audience, opt(_ABSENT, "enrolled"))
    if audience is Audience.INACTIVE:
        inactive_days = r.at_least("inactive_days", 1, why=" for audience inactive")
    else:
        inactive_days = r.integer("inactive_days", 0)
    template_id = r.text("template_id", opt(_ABSENT, ""))
    subject = r.text("subject", "")  # empty: the template's own subject
    timemodified = r.at_least("timemodified", 0, opt(_ABSENT, 0))
    startdate = r.startdate()
    if r.file and frequency is Frequency.CUSTOM and startdate is None and not timemodified:
        # A file has no edit time to anchor the every-N-days cycle on.
        r.fail("startdate", "required for a custom schedule in the file (day 1 of the cycle)")
    return Schedule(
        id=r.id, name=name, enabled=enabled, companyid=companyid, courseid=courseid,
        frequency=frequency, custom_interval=custom_interval, timeofday=timeofday,
        weekday=weekday, monthday=monthday, action_type=action_type,
        cloud_preference=cloud_preference, suppresstarget=suppresstarget,
        suppress_course_completion=suppress_course, audience=audience,
        inactive_days=inactive_days, template_id=template_id, subject=subject,
        timemodified=timemodified, startdate=startdate, source=r.source,
    )  # fmt: skip
