"""The bulk tools that are ad-hoc schedules: `send reengagement` and `certificates issue`.

Each tool builds a Schedule in memory (never synced, never stored) and goes through the
very code a schedule's run goes through: `Runner.prepare` pulls the course, selects,
counts by reason, routes and renders the sample, so the tool's preview is the schedule's
dry run for the same settings; `Runner.commit` commits the jobs under the tool's own
idempotency key, so a user that key already holds is never sent to again.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from moodle_ws import completion, functions, iomad
from schedules.model import ActionType, Audience, CloudPreference, Frequency, Schedule
from sidecar.db import store
from sidecar.errors import MoodleLacks, SidecarError
from sidecar.moodle import IOMAD, REQUIRED, SERVICES_PAGE, open_client
from sidecar.runs import Runner, RunOutcome, _needs_course_completion


@dataclass(frozen=True)
class Tool:
    """One tool run: its ad-hoc schedule, its idempotency key and what it is called."""

    title: str
    schedule: Schedule
    key: str
    reissue: bool = False
    only: frozenset[int] | None = None  # the users the admin listed; None: the whole course


@dataclass(frozen=True)
class Preview:
    tool: Tool
    outcome: RunOutcome
    already_sent: int  # recipients the tool's key already holds: they are skipped
    refused: list[str] = field(default_factory=list)  # listed users not served, and why

    @property
    def to_send(self) -> int:
        return self.outcome.recipients - self.already_sent


def _schedule(courseid: int, companyid: int, **over) -> Schedule:
    fields = dict(
        id=0, name="", enabled=True, companyid=companyid, courseid=courseid,
        frequency=Frequency.DAILY, custom_interval=0, timeofday=0, weekday=0, monthday=1,
        action_type=ActionType.EMAIL, cloud_preference=CloudPreference.AUTO,
        suppresstarget=0, suppress_course_completion=False, audience=Audience.ENROLLED,
        inactive_days=0, template_id="", subject="", timemodified=0,
    )  # fmt: skip
    return Schedule(**{**fields, **over})


def reengagement_key(courseid: int, inactive_days: int, day: datetime) -> str:
    """The default key: one per course, inactivity and UTC day, whatever the other options
    (a second run that day, with or without --exclude-completed or --company, mails nobody
    who had the first)."""
    return f"reengagement:course:{courseid}:inactive:{inactive_days}:{day:%Y-%m-%d}"


def reengagement(
    courseid: int,
    inactive_days: int,
    *,
    now: datetime,
    exclude_completed: bool = False,
    companyid: int = 0,
    key: str | None = None,
) -> Tool:
    """`send reengagement`: the schedule audience `inactive`, fired once, now."""
    if inactive_days < 1:
        raise SidecarError(f"--inactive-days must be at least 1, got {inactive_days}")
    schedule = _schedule(
        courseid, companyid, name=f"re-engagement of course {courseid}",
        audience=Audience.INACTIVE, inactive_days=inactive_days,
        suppress_course_completion=exclude_completed, template_id="reengagement",
    )  # fmt: skip
    title = f"re-engagement of course {courseid} (inactive for {inactive_days} days)"
    return Tool(title, schedule, key or reengagement_key(courseid, inactive_days, now))


def certificates_key(courseid: int, *, reissue_at: datetime | None = None) -> str:
    """One key per course (a certificate once per course); a reissue gets a key of its own."""
    key = f"certificates:course:{courseid}"
    return f"{key}:reissue:{reissue_at:%Y%m%dT%H%M%S}" if reissue_at else key


def certificates(
    courseid: int,
    *,
    now: datetime,
    userids: Iterable[int] = (),
    reissue: bool = False,
    companyid: int = 0,
) -> Tool:
    """`certificates issue`: the completed learners of the course (or the listed ones)."""
    only = frozenset(userids) or None
    schedule = _schedule(
        courseid, companyid, name=f"certificates of course {courseid}",
        action_type=ActionType.CERTIFICATE, audience=Audience.COMPLETED,
    )  # fmt: skip
    title = f"certificates of course {courseid}" + (" (reissue)" if reissue else "")
    key = certificates_key(courseid, reissue_at=now if reissue else None)
    return Tool(title, schedule, key, reissue=reissue, only=only)


def needed_functions(schedule: Schedule, site, prefix: str) -> list[str]:
    """The web-service functions a run of `schedule` calls on this site."""
    names = ["core_course_get_courses_by_field", "core_enrol_get_enrolled_users"]
    companion_answers = completion.choose_method(site, prefix) == "companion"
    if _needs_course_completion(schedule) and not companion_answers:
        names.append(completion.COURSE_FN)
    if not companion_answers:  # the companion's completion answer tells the accounts
        names.append("core_user_get_users_by_field")
    if schedule.companyid:
        names += [iomad.PREFIX + "get_departments", iomad.PREFIX + "get_department_users"]
    return names


def check_functions(rt, schedule: Schedule) -> None:
    """Raise MoodleLacks naming each function the tool needs that the token's service
    lacks, what it is for, and where to add it."""
    client = open_client(rt.config)
    try:
        site = functions.site_info(client)
    finally:
        client.close()
    missing = [n for n in needed_functions(schedule, site, rt.config.moodle.companion_prefix)
               if not site.has(n)]  # fmt: skip
    if missing:
        why = {**REQUIRED, **IOMAD}
        raise MoodleLacks(
            "Moodle: not in the token's external service: "
            + "; ".join(f"{n} ({why.get(n, 'needed by this tool')})" for n in missing)
            + f". Add {'it' if len(missing) == 1 else 'them'} to the service under "
            f"{SERVICES_PAGE}"
        )


def preview(rt, tool: Tool) -> Preview:
    """What the tool would send, sending nothing: the schedule's dry run, plus the
    recipients its key already holds and the listed users it cannot serve."""
    check_functions(rt, tool.schedule)
    outcome = Runner(rt).prepare(tool.schedule, rt.clock(), reissue=tool.reissue, only=tool.only)
    userids = [lr.userid for lr in outcome.selection.recipients]
    already = len(store.taken_send_keys(tool.key, userids))
    return Preview(tool, outcome, already, _refused(tool, outcome))


def commit(rt, pv: Preview) -> RunOutcome:
    """Commit the previewed selection's jobs under the tool's key."""
    return Runner(rt).commit(pv.tool.schedule, pv.outcome, key=pv.tool.key)


def _refused(tool: Tool, outcome: RunOutcome) -> list[str]:
    """Each listed user who gets nothing because of the course itself, by id and name."""
    if not tool.only:
        return []
    pulled = outcome.pulled
    by_id = {u.id: u for u in pulled.learners}
    done = pulled.completions.completed
    out = []
    for uid in sorted(tool.only):
        user = by_id.get(uid)
        if user is None:
            why = ("enrolment suspended" if uid in pulled.suspended_enrolments
                   else f"not a participant of course {tool.schedule.courseid}")  # fmt: skip
            out.append(f"user {uid}: {why}")
            continue
        name = " ".join(p for p in (user.firstname, user.lastname) if p) or "?"
        if tool.schedule.audience is Audience.COMPLETED and uid not in done:
            out.append(f"user {uid} ({name}): not completed")
    return out
