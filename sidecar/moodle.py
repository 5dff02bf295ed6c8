"""Moodle wiring: the client from the config, `check`'s Moodle part, and pulling a course.

What each web-service function is for is said once, here, so `check` can tell an admin
exactly what a missing function disables.
"""

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from moodle_ws import companion, completion, functions
from moodle_ws.accounts import Accounts, accounts_by_id
from moodle_ws.client import ClientSettings, MoodleClient, RequestTally
from moodle_ws.errors import MoodleError
from moodle_ws.types import Course, CourseCompletions, EnrolledUser, SiteInfo
from sidecar import metrics
from sidecar.config import Config, MoodleConfig
from sidecar.errors import ConfigError

log = logging.getLogger(__name__)

SERVICES_PAGE = "Site administration > Server > Web services > External services"

# Needed by every deployment: without one of these, core features stop.
REQUIRED = {
    "core_webservice_get_site_info": "nothing: the token cannot be checked",
    "core_enrol_get_enrolled_users": "learners cannot be read: reminders, re-engagement and "
    "certificates stop",
    "core_completion_get_course_completion_status": "course completion cannot be read per "
    "learner (needed unless the companion bulk function is there): suppression and "
    "certificates stop",
    "core_completion_get_activities_completion_status": "activity completion cannot be read: "
    "schedules that stop on an activity (suppresstarget) cannot run",
    "core_course_get_courses_by_field": "course names and links in emails cannot be read",
    "core_user_get_users_by_field": "welcome, licence and CSV emails cannot look users up, "
    "and schedules cannot run (they cannot tell suspended and nologin accounts)",
}

OPTIONAL = {
    "core_user_update_users": "welcome emails cannot set temporary passwords",
    "core_user_create_users": "`users import` cannot create accounts",
    "core_message_send_instant_messages": "no delivery through Moodle's own messaging",
    "tool_mobile_call_external_functions": "without the companion bulk function, completion "
    "takes one request per learner instead of one per ~500",
}

IOMAD = {
    "block_iomad_company_admin_get_companies": "IOMAD companies cannot be listed",
    "block_iomad_company_admin_get_departments": "company audiences cannot be resolved",
    "block_iomad_company_admin_get_department_users": "company audiences cannot be resolved",
    "block_iomad_company_admin_get_license_info": "a company's licences cannot be listed",
    "block_iomad_company_admin_get_license_from_id": "licence-allocation emails cannot run",
    "block_iomad_company_admin_get_user_companies": "company managers named in "
    "[dashboard] company_managers cannot sign in to the dashboard",
    "block_iomad_company_admin_assign_users": "`users import --company` cannot put the "
    "new accounts in the company",
}


def client_settings(m: MoodleConfig, progress: Callable[[float], None] | None = None
                    ) -> ClientSettings:  # fmt: skip
    """The client's settings from `[moodle]`. `progress(seconds)` (the watchdog's beat) is
    told after every request how long the next one may take (`request_budget`)."""
    settings = ClientSettings(
        url=m.url,
        token=m.token.get_secret_value(),
        timeout=m.timeout,
        max_concurrency=m.max_concurrency,
        verify_tls=m.verify_tls,
        attempts=m.retry_attempts,
        max_input_vars=m.max_input_vars,
        observe=metrics.moodle_request,
    )
    if progress is None:
        return settings
    budget = settings.request_budget

    def observe(function: str, outcome: str, seconds: float) -> None:
        metrics.moodle_request(function, outcome, seconds)
        progress(budget)

    return replace(settings, observe=observe)


def request_budget(config: Config) -> float:
    """How long a watched thread may wait for one Moodle request (0 without [moodle])."""
    return 0.0 if config.moodle is None else client_settings(config.moodle).request_budget


def open_client(config: Config, progress: Callable[[float], None] | None = None
                ) -> MoodleClient:  # fmt: skip
    """A client for the configured site; `progress` as in `client_settings`. Raises
    ConfigError when there is no [moodle]."""
    if config.moodle is None:
        raise ConfigError("no [moodle] section in the config: set moodle.url and moodle.token")
    return MoodleClient(client_settings(config.moodle, progress))


@dataclass(frozen=True)
class FunctionCheck:
    name: str
    present: bool
    required: bool
    disables: str


@dataclass(frozen=True)
class MoodleReport:
    site: SiteInfo
    functions: list[FunctionCheck]

    @property
    def missing_required(self) -> list[FunctionCheck]:
        return [f for f in self.functions if f.required and not f.present]


def inspect(client: MoodleClient, prefix: str) -> MoodleReport:
    """Site info and, for every function we use, whether the token's service has it.

    Raises MoodleError when the token itself does not work.
    """
    site = functions.site_info(client)
    bulk = f"{prefix}_get_course_completions"
    checks: list[FunctionCheck] = []
    for name, loss in REQUIRED.items():
        required = not (name == completion.COURSE_FN and site.has(bulk))
        checks.append(FunctionCheck(name, site.has(name), required, loss))
    for name, loss in {**OPTIONAL, **IOMAD, **companion.names(prefix)}.items():
        checks.append(FunctionCheck(name, site.has(name), False, loss))
    return MoodleReport(site, checks)


def check_lines(config: Config) -> list[tuple[bool | None, str, str]]:
    """`check`'s Moodle lines as (ok, name, detail); ok None is an optional part missing."""
    if config.moodle is None:
        return [(None, "moodle", "no [moodle] section: CSV sends only")]
    # One try: an admin running `check` wants the answer now, not after the backoff.
    client = MoodleClient(replace(client_settings(config.moodle), attempts=1))
    try:
        report = inspect(client, config.moodle.companion_prefix)
    except MoodleError as exc:
        return [(False, "moodle", str(exc))]
    finally:
        client.close()
    site = report.site
    lines: list[tuple[bool | None, str, str]] = [(
        True, "moodle",
        f"{site.sitename!r} at {site.siteurl} (Moodle {site.release or site.version or '?'}), "
        f"token user {site.username} (id {site.userid}), {len(site.functions)} functions "
        "in its service",
    )]  # fmt: skip
    for f in report.functions:
        if f.present:
            if f.name.startswith(config.moodle.companion_prefix):
                lines.append((True, "companion", f"{f.name} found"))
            continue
        if f.required:
            lines.append((False, f.name, f"not in the token's service: {f.disables}. Add it "
                          f"under {SERVICES_PAGE}"))  # fmt: skip
        else:
            lines.append((None, f.name, f"not in the token's service (optional): {f.disables}"))
    return lines


@dataclass(frozen=True)
class PulledCourse:
    course: Course
    learners: list[EnrolledUser]  # participants with an active enrolment
    completions: CourseCompletions
    requests: int  # HTTP requests Moodle served for this pull
    suspended_enrolments: frozenset[int] = frozenset()  # the other participants, by id
    # False without moodle/course:enrolreview: `learners` then holds every participant
    enrolments_visible: bool = True


def pull_course(
    client: MoodleClient,
    courseid: int,
    *,
    site: SiteInfo,
    prefix: str,
    page_size: int,
    activities: bool = False,
    course_completion: bool = True,
) -> PulledCourse:
    """A course, its participants and their completion, fetched now (never cached).

    Participants whose enrolment is suspended are only counted (one more paged call, ids
    only): Moodle does not track their completion and nothing is sent to them.
    """
    course = functions.course(client, courseid)
    if course is None:
        raise MoodleError(f"course {courseid} does not exist or is hidden from the token's user")
    users, result, requests = completion.learners_with_completion(
        client, courseid, site=site, prefix=prefix, activities=activities,
        course=course_completion, page_size=page_size,
    )  # fmt: skip
    tally = RequestTally()
    suspended = completion.suspended_participants(
        client, courseid, [u.id for u in users], page_size=page_size, tally=tally
    )
    requests += 1 + tally.count
    visible = suspended is not None
    suspended = suspended or frozenset()
    log.info(
        "course %d: %d participants (%d more with a suspended enrolment), %d completed, "
        "%d Moodle requests (%s)",
        courseid, len(users), len(suspended), len(result.completed), requests, result.method,
    )  # fmt: skip
    return PulledCourse(course, users, result, requests, suspended, visible)


def accounts(
    client: MoodleClient, userids: Iterable[int], tally: RequestTally | None = None
) -> Accounts:
    """The Moodle accounts of `userids` (suspended, auth), by id.

    `core_enrol_get_enrolled_users` does not give them (Moodle strips both fields from its
    answer). A user the token's user may not see is missing from the answer; a user whose
    profile Moodle cannot return (it fails Moodle's own checks) is in `refused` and logged:
    neither fails the run, both are mailed, as Moodle's answer does not say otherwise.
    """
    found = accounts_by_id(client, userids, tally=tally)
    for userid, error in found.refused.items():
        log.warning(
            "user %d: Moodle cannot return the account, so whether it is suspended or "
            "nologin is unknown and it is mailed; fix the user's profile in Moodle: %s",
            userid, error,
        )  # fmt: skip
    return found


def course_vars(course: Course, wwwroot: str) -> dict[str, str]:
    """The `course` template variable."""
    return {
        "fullname": course.fullname,
        "shortname": course.shortname,
        "url": f"{wwwroot.rstrip('/')}/course/view.php?id={course.id}",
    }
