"""Raw schedule rows and Schedules for the tests: one good row, overridden per case."""

from typing import Any

from schedules import Schedule

# A good `{prefix}_get_schedules` row, as Moodle sends it (bools as 0/1).
ROW: dict[str, Any] = {
    "id": 12,
    "name": "Weekly reminder",
    "enabled": 1,
    "companyid": 3,
    "courseid": 7,
    "frequency": "daily",
    "custom_interval": 0,
    "timeofday": 9 * 3600,
    "weekday": 0,
    "monthday": 0,
    "action_type": "email",
    "cloud_preference": "auto",
    "suppresstarget": 0,
    "suppress_course_completion": 0,
    "audience": "enrolled",
    "inactive_days": 0,
    "template_id": "reminder",
    "subject": "Please finish your course",
    "timemodified": 1_767_225_600,  # 2026-01-01T00:00:00Z
}


def row(**over: Any) -> dict[str, Any]:
    """ROW with `over` applied; a value of ... removes the key."""
    out = {**ROW, **over}
    return {k: v for k, v in out.items() if v is not ...}


def schedule(**over: Any) -> Schedule:
    return Schedule.from_remote(row(**over))


def hms(h: int, m: int = 0, s: int = 0) -> int:
    """Seconds after midnight."""
    return h * 3600 + m * 60 + s
