"""Schedules: what they are, when they are due, and whom they reach.

A leaf package: no I/O, no clock (every function takes `now`), nothing imported from
the rest of the project. `model` validates schedules, `timing` holds the time rules,
`selection` picks recipients.
"""

from schedules.model import (
    ActionType,
    Audience,
    CloudPreference,
    Frequency,
    MalformedSchedule,
    Schedule,
    ScheduleError,
)
from schedules.selection import (
    REASONS,
    Account,
    AccountData,
    CompletionData,
    Completions,
    Learner,
    Selection,
    is_inactive,
    label,
    select_recipients,
)
from schedules.timing import CatchUp, Due, due_now, local_instant, next_due

__all__ = [
    "REASONS",
    "Account",
    "AccountData",
    "ActionType",
    "Audience",
    "CatchUp",
    "CloudPreference",
    "CompletionData",
    "Completions",
    "Due",
    "Frequency",
    "Learner",
    "MalformedSchedule",
    "Schedule",
    "ScheduleError",
    "Selection",
    "due_now",
    "is_inactive",
    "label",
    "local_instant",
    "next_due",
    "select_recipients",
]
