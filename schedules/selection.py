"""Who a schedule reaches when it fires: audience, then suppression, then actions.

Pure: the caller fetches learners and completion at fire time (never reused from an
earlier run, so a learner who completed since then is suppressed now) and passes `now`.

Every learner the audience matches either receives something or is counted under exactly
one reason, the first that applies, in this order:
`not_tracked` (Moodle does not track the learner's completion and the audience needs
it), `course_completed` (`suppress_course_completion`), `activity_completed` (the
`suppresstarget` activity is in state 1, 2 or 3: complete-fail is still complete),
`no_email` (nothing can be delivered, a certificate included), then for the certificate
action `not_completed` and `already_issued`. Under `both`, a learner who gets the email
but whose certificate was already issued is counted as `already_issued` too.
"""

from collections import Counter
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from schedules.model import ActionType, Audience, Schedule

NOT_TRACKED = "not_tracked"
COURSE_COMPLETED = "course_completed"
ACTIVITY_COMPLETED = "activity_completed"
NO_EMAIL = "no_email"
NOT_COMPLETED = "not_completed"
ALREADY_ISSUED = "already_issued"

# Moodle's completion states: 0 incomplete, 1 complete, 2 complete-pass, 3 complete-fail.
COMPLETE_STATES = frozenset({1, 2, 3})
DAY_SECONDS = 86400
_NEEDS_COMPLETION = frozenset({Audience.NOT_COMPLETED, Audience.COMPLETED})


@dataclass(frozen=True)
class Learner:
    """A participant of the schedule's course, as Moodle gave them at fire time."""

    userid: int
    email: str | None  # None when the token's user may not see it
    firstname: str
    lastname: str
    lastaccess: int = 0  # epoch seconds, 0 = never
    lastcourseaccess: int | None = None  # None when Moodle did not give it


class CompletionData(Protocol):
    """Completion of the schedule's course; moodle_ws's CourseCompletions fits.

    An optional `untracked` attribute (a set of user ids) names learners Moodle does not
    track in the course; it is read with getattr.
    """

    @property
    def completed(self) -> Mapping[int, int]: ...  # userid -> timecompleted

    def activity_state(self, cmid: int, userid: int) -> int: ...


@dataclass(frozen=True)
class Completions:
    """A plain CompletionData, for callers without moodle_ws (and for tests)."""

    completed: Mapping[int, int] = field(default_factory=dict)
    activity_states: Mapping[int, Mapping[int, int]] = field(default_factory=dict)
    untracked: frozenset[int] = frozenset()

    def activity_state(self, cmid: int, userid: int) -> int:
        """The state of activity `cmid` for `userid`; 0 (incomplete) when unknown."""
        return self.activity_states.get(cmid, {}).get(userid, 0)


@dataclass(frozen=True)
class Selection:
    """Recipients per action, in userid order, and what was left out, by reason."""

    email: tuple[Learner, ...]
    certificate: tuple[Learner, ...]
    suppressed: Mapping[str, int]  # reason -> learners; only reasons that occurred
    audience_size: int  # learners the audience matched, before suppression

    @property
    def total(self) -> int:
        """Distinct learners who receive something (an email, a certificate, or both)."""
        return len({lr.userid for lr in self.email} | {lr.userid for lr in self.certificate})

    @property
    def suppressed_total(self) -> int:
        """Learners (and, under `both`, withheld certificates) left out, all reasons."""
        return sum(self.suppressed.values())


def select_recipients(
    schedule: Schedule,
    learners: Iterable[Learner],
    completion: CompletionData,
    now: int,
    *,
    issued: Set[int] = frozenset(),
    reissue: bool = False,
) -> Selection:
    """Recipients of one firing of `schedule` at `now` (epoch seconds); raises nothing.

    `issued` are the user ids already holding a certificate for the course; they get no
    second one unless `reissue`. A learner listed twice counts once.
    """
    untracked = frozenset(getattr(completion, "untracked", None) or ())
    completed = completion.completed
    action = schedule.action_type
    counts: Counter[str] = Counter()
    email: list[Learner] = []
    certificate: list[Learner] = []
    size = 0
    for learner in _unique(learners):
        if not _in_audience(schedule, learner, completed, now):
            continue
        size += 1
        reason = _suppression(schedule, learner, completion, untracked)
        if reason:
            counts[reason] += 1
            continue
        if action is not ActionType.CERTIFICATE:
            email.append(learner)
        if action is ActionType.EMAIL:
            continue
        if learner.userid not in completed:
            if action is ActionType.CERTIFICATE:
                counts[NOT_COMPLETED] += 1
        elif learner.userid in issued and not reissue:
            counts[ALREADY_ISSUED] += 1
        else:
            certificate.append(learner)
    return Selection(
        tuple(email), tuple(certificate), MappingProxyType(dict(sorted(counts.items()))), size
    )


def is_inactive(learner: Learner, inactive_days: int, now: int) -> bool:
    """True when the learner's last access is older than `inactive_days` before `now`.

    The course access is used when Moodle gave it, else the site access; 0 means never,
    which is inactive. An access exactly `inactive_days` old is not yet inactive.
    """
    last = learner.lastcourseaccess if learner.lastcourseaccess is not None else learner.lastaccess
    return last <= 0 or last < now - inactive_days * DAY_SECONDS


def _in_audience(
    schedule: Schedule, learner: Learner, completed: Mapping[int, int], now: int
) -> bool:
    audience = schedule.audience
    if audience is Audience.NOT_COMPLETED:
        return learner.userid not in completed
    if audience is Audience.COMPLETED:
        return learner.userid in completed
    if audience is Audience.INACTIVE:
        return is_inactive(learner, schedule.inactive_days, now)
    return True


def _suppression(
    schedule: Schedule, learner: Learner, completion: CompletionData, untracked: frozenset[int]
) -> str | None:
    uid = learner.userid
    if schedule.audience in _NEEDS_COMPLETION and uid in untracked:
        return NOT_TRACKED
    if schedule.suppress_course_completion and uid in completion.completed:
        return COURSE_COMPLETED
    target = schedule.suppresstarget
    if target > 0 and completion.activity_state(target, uid) in COMPLETE_STATES:
        return ACTIVITY_COMPLETED
    if not (learner.email or "").strip():
        return NO_EMAIL
    return None


def _unique(learners: Iterable[Learner]) -> list[Learner]:
    by_id: dict[int, Learner] = {}
    for learner in learners:
        by_id.setdefault(learner.userid, learner)
    return [by_id[uid] for uid in sorted(by_id)]
