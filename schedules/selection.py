"""Who a schedule reaches when it fires, and why each other learner of the course does not.

Pure: the caller fetches learners, completion, account states and the ledger's lists at fire
time (never reused from an earlier run, so a learner who completed since then is left out
now) and passes `now`. What the dry run counts is what the run sends: both call this.

Every learner of the course is either a recipient or counted under exactly one reason, the
first that applies, in this order (`REASONS`):
`other_company` (a company schedule; not one of the company's users), `enrolment_suspended`
(Moodle's enrolment is not active), `not_tracked` (Moodle does not track the learner's
completion and the audience needs it), the audience (`completed` for not_completed,
`not_completed` for completed, `active` for inactive), `course_completed`
(`suppress_course_completion`), `activity_completed` (the `suppresstarget` activity is in
state 1, 2 or 3: complete-fail is still complete), `no_email`, `invalid_email`, the ledger's
lists (`excluded`, e.g. `suppressed`: the bounce list), then for the certificate action
`not_completed` and `already_issued`, then `unsubscribed` (the learner opted out of this
kind of mail and would get only that mail: a certificate, and the email carrying it,
still goes), and last the account (`account_suspended`, `nologin`:
Moodle's email_to_user() mails neither). So learners + nothing else = recipients + left out.

The account comes last so that the caller need only ask Moodle about the learners a first
selection without accounts picked. Under `both`, a learner who gets the email but whose
certificate was already issued is a recipient; the certificate is counted in `withheld`.
"""

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from schedules.model import ActionType, Audience, Schedule

OTHER_COMPANY = "other_company"
ENROLMENT_SUSPENDED = "enrolment_suspended"
NOT_TRACKED = "not_tracked"
COMPLETED = "completed"
NOT_COMPLETED = "not_completed"
ACTIVE = "active"
COURSE_COMPLETED = "course_completed"
ACTIVITY_COMPLETED = "activity_completed"
NO_EMAIL = "no_email"
INVALID_EMAIL = "invalid_email"
SUPPRESSED = "suppressed"
ALREADY_ISSUED = "already_issued"
UNSUBSCRIBED = "unsubscribed"
ACCOUNT_SUSPENDED = "account_suspended"
NOLOGIN = "nologin"

#: Every reason, in the order they are tried, with what an admin reads. The ledger's lists
#: (`excluded`) may bring reasons of their own: they are shown after `suppressed`.
REASONS: Mapping[str, str] = MappingProxyType({
    OTHER_COMPANY: "other company",
    ENROLMENT_SUSPENDED: "suspended enrolment",
    NOT_TRACKED: "completion not tracked",
    COMPLETED: "completed",
    NOT_COMPLETED: "not completed",
    ACTIVE: "recently active",
    COURSE_COMPLETED: "course completed",
    ACTIVITY_COMPLETED: "activity complete",
    NO_EMAIL: "no address",
    INVALID_EMAIL: "invalid address",
    SUPPRESSED: "suppressed address",
    ALREADY_ISSUED: "already given this certificate",
    UNSUBSCRIBED: "unsubscribed",
    ACCOUNT_SUSPENDED: "suspended account",
    NOLOGIN: "account set to nologin",
})  # fmt: skip


def label(reason: str) -> str:
    """What an admin reads for `reason`; a reason this module does not know reads as itself."""
    return REASONS.get(reason, reason.replace("_", " "))


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
    active_enrolment: bool = True  # False: Moodle lists the enrolment as suspended


class CompletionData(Protocol):
    """Completion of the schedule's course; moodle_ws's CourseCompletions fits.

    An optional `untracked` attribute (a set of user ids) names learners Moodle does not
    track in the course; it is read with getattr.
    """

    @property
    def completed(self) -> Mapping[int, int]: ...  # userid -> timecompleted

    def activity_state(self, cmid: int, userid: int) -> int: ...


class AccountData(Protocol):
    """A learner's Moodle account; moodle_ws's User fits. None = the token may not see it."""

    @property
    def suspended(self) -> bool | None: ...

    @property
    def auth(self) -> str | None: ...


@dataclass(frozen=True)
class Account:
    """A plain AccountData, for callers without moodle_ws (and for tests)."""

    suspended: bool | None = False
    auth: str | None = "manual"


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
    """Recipients per action, in userid order, and every other learner, by reason."""

    email: tuple[Learner, ...]
    certificate: tuple[Learner, ...]
    left_out: Mapping[str, int]  # reason -> learners, in REASONS order; only those that occurred
    learners: int  # distinct learners of the course that were given
    audience_size: int  # learners the audience matched
    # under `both`: certificates not given to learners who get the email, by reason
    withheld: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def recipients(self) -> tuple[Learner, ...]:
        """Distinct learners who receive something (an email, a certificate, or both)."""
        by_id = {lr.userid: lr for lr in (*self.email, *self.certificate)}
        return tuple(by_id[uid] for uid in sorted(by_id))

    @property
    def total(self) -> int:
        """How many learners receive something: the number of emails the run sends."""
        return len({lr.userid for lr in self.email} | {lr.userid for lr in self.certificate})

    @property
    def left_out_total(self) -> int:
        """Learners left out, all reasons; `total + left_out_total == learners`."""
        return sum(self.left_out.values())


def select_recipients(
    schedule: Schedule,
    learners: Iterable[Learner],
    completion: CompletionData,
    now: int,
    *,
    issued: Set[int] = frozenset(),
    reissue: bool = False,
    members: Set[int] | None = None,
    check_email: Callable[[str], object] | None = None,
    excluded: Mapping[str, Set[int]] = MappingProxyType({}),
    accounts: Mapping[int, AccountData] | None = None,
    unsubscribed: Set[int] = frozenset(),
) -> Selection:
    """Recipients of one firing of `schedule` at `now` (epoch seconds); raises nothing.

    `issued` are the user ids already holding a certificate for the course; they get no
    second one unless `reissue`. `members` are the company's users (None: the whole site).
    `check_email(address)` raises ValueError for what is not an address (None: only a
    missing address is refused). `excluded` maps a reason to the user ids a list of the
    ledger holds (the bounce list...), tried in its order. `accounts` are the Moodle
    accounts by user id (None: not looked at; a learner missing from it is mailed).
    `unsubscribed` opted out of this schedule's kind of mail: they get no email of that
    kind, but a certificate still goes to them with its email. A learner listed twice
    counts once.
    """
    rules = _Rules(schedule, completion, now, members, check_email, excluded)
    action = schedule.action_type
    counts: Counter[str] = Counter()
    withheld: Counter[str] = Counter()
    email: list[Learner] = []
    certificate: list[Learner] = []
    size = audience = 0
    for learner in _unique(learners):
        uid = learner.userid
        size += 1
        reason = rules.before_audience(learner) or rules.audience(learner)
        if reason is None:
            audience += 1
            reason = rules.after_audience(learner)
        certify = withhold = False
        if reason is None and action is not ActionType.EMAIL:
            if uid not in rules.completed:
                reason = NOT_COMPLETED if action is ActionType.CERTIFICATE else None
            elif uid in issued and not reissue:
                reason = ALREADY_ISSUED if action is ActionType.CERTIFICATE else None
                withhold = action is ActionType.BOTH
            else:
                certify = True
        if reason is None and not certify and uid in unsubscribed:
            reason = UNSUBSCRIBED
        if reason is None and accounts is not None:
            reason = _account(accounts.get(uid))
        if reason:
            counts[reason] += 1
            continue
        if action is not ActionType.CERTIFICATE:
            email.append(learner)
        if certify:
            certificate.append(learner)
        if withhold:
            withheld[ALREADY_ISSUED] += 1
    return Selection(
        tuple(email),
        tuple(certificate),
        _ordered(counts, excluded),
        size,
        audience,
        MappingProxyType(dict(withheld)),
    )


def is_inactive(learner: Learner, inactive_days: int, now: int) -> bool:
    """True when the learner's last access is older than `inactive_days` before `now`.

    The course access is used when Moodle gave it, else the site access; 0 means never,
    which is inactive. An access exactly `inactive_days` old is not yet inactive.
    """
    last = learner.lastcourseaccess if learner.lastcourseaccess is not None else learner.lastaccess
    return last <= 0 or last < now - inactive_days * DAY_SECONDS


class _Rules:
    """The reasons up to the action's, for one schedule, in the order they are tried."""

    def __init__(self, schedule, completion, now, members, check_email, excluded):
        self.schedule, self.completion, self.now = schedule, completion, now
        self.members, self.check_email, self.excluded = members, check_email, excluded
        self.completed: Mapping[int, int] = completion.completed
        self.untracked = frozenset(getattr(completion, "untracked", None) or ())

    def before_audience(self, learner: Learner) -> str | None:
        uid = learner.userid
        if self.members is not None and uid not in self.members:
            return OTHER_COMPANY
        if not learner.active_enrolment:
            return ENROLMENT_SUSPENDED
        if self.schedule.audience in _NEEDS_COMPLETION and uid in self.untracked:
            return NOT_TRACKED
        return None

    def audience(self, learner: Learner) -> str | None:
        """The reason the audience leaves the learner out, or None when it takes them."""
        audience, done = self.schedule.audience, learner.userid in self.completed
        if audience is Audience.NOT_COMPLETED:
            return COMPLETED if done else None
        if audience is Audience.COMPLETED:
            return None if done else NOT_COMPLETED
        if audience is Audience.INACTIVE:
            return None if is_inactive(learner, self.schedule.inactive_days, self.now) else ACTIVE
        return None

    def after_audience(self, learner: Learner) -> str | None:
        uid, schedule = learner.userid, self.schedule
        if schedule.suppress_course_completion and uid in self.completed:
            return COURSE_COMPLETED
        target = schedule.suppresstarget
        if target > 0 and self.completion.activity_state(target, uid) in COMPLETE_STATES:
            return ACTIVITY_COMPLETED
        address = (learner.email or "").strip()
        if not address:
            return NO_EMAIL
        if self.check_email is not None:
            try:
                self.check_email(address)
            except ValueError:
                return INVALID_EMAIL
        for reason, userids in self.excluded.items():
            if uid in userids:
                return reason
        return None


def _account(account: AccountData | None) -> str | None:
    # Moodle's email_to_user() sends nothing to a suspended or nologin account.
    if account is None:
        return None
    if account.suspended:
        return ACCOUNT_SUSPENDED
    if account.auth == "nologin":
        return NOLOGIN
    return None


def _ordered(counts: Counter[str], excluded: Mapping[str, Set[int]]) -> Mapping[str, int]:
    order = list(REASONS)
    at = order.index(SUPPRESSED) + 1
    order[at:at] = [r for r in excluded if r not in REASONS]
    return MappingProxyType({r: counts[r] for r in order if counts[r]})


def _unique(learners: Iterable[Learner]) -> list[Learner]:
    by_id: dict[int, Learner] = {}
    for learner in learners:
        by_id.setdefault(learner.userid, learner)
    return [by_id[uid] for uid in sorted(by_id)]
