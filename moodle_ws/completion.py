"""Completion of a whole course, in as few Moodle requests as the site allows.

1. The companion bulk function, when the token's service has it: one request.
2. Otherwise per-user calls batched through `tool_mobile_call_external_functions`
   (about 500 calls a request under PHP's max_input_vars).
3. Otherwise per-user calls, at most `max_concurrency` in flight.

Course-wide errors (completion disabled, no criteria, a function missing from the
service) raise; a user Moodle does not track in the course is reported in `untracked`.
"""

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from moodle_ws import companion, functions
from moodle_ws.client import BATCH_FUNCTION, MoodleClient, RequestTally
from moodle_ws.errors import MissingCapability, MoodleAPIError, NotEnrolled
from moodle_ws.types import (
    AccountState,
    ActivitiesCompletion,
    CourseCompletions,
    CourseCompletionStatus,
    EnrolledUser,
    SiteInfo,
)

log = logging.getLogger(__name__)

COURSE_FN = "core_completion_get_course_completion_status"
ACTIVITIES_FN = "core_completion_get_activities_completion_status"


def choose_method(site: SiteInfo, prefix: str = companion.DEFAULT_PREFIX) -> str:
    """`companion`, `batch` or `per_user`, from the functions of the token's service."""
    if site.has(f"{prefix}_get_course_completions"):
        return "companion"
    if site.has(BATCH_FUNCTION):
        return "batch"
    return "per_user"


def course_completions(
    client: MoodleClient,
    courseid: int,
    userids: Iterable[int],
    *,
    site: SiteInfo,
    prefix: str = companion.DEFAULT_PREFIX,
    activities: bool = False,
    course: bool = True,
    method: str | None = None,
) -> CourseCompletions:
    """Who of `userids` completed the course and, with `activities`, each activity's state.

    `course=False` leaves course completion out (nothing is asked per learner for it); with
    neither, Moodle is not asked at all.

    Raises CompletionNotEnabled, NoCompletionCriteria, FunctionNotInService or another
    MoodleError that concerns the whole course.
    """
    method = method or choose_method(site, prefix)
    userids = list(dict.fromkeys(int(u) for u in userids))
    tally = RequestTally()
    if not course and not activities:
        return CourseCompletions(courseid, {}, {}, "none", 0)
    unmailable = None
    if method == "companion":
        answer = companion.get_course_completions(client, courseid, prefix, tally=tally)
        result = _from_bulk(courseid, answer, set(userids), activities)
        unmailable = _unmailable(answer)
    elif method in ("batch", "per_user"):
        result = _from_per_user(
            client, courseid, userids, activities, method == "batch", tally, course=course
        )
    else:
        raise ValueError(f"unknown completion method {method!r}")
    completed, states, untracked = result
    log.info(
        "course %d: completion of %d users by %s in %d Moodle requests (%d completed)",
        courseid, len(userids), method, tally.count, len(completed),
    )  # fmt: skip
    return CourseCompletions(
        courseid, completed, states, method, tally.count, frozenset(untracked), unmailable
    )


def _unmailable(answer) -> dict[int, AccountState] | None:
    """The companion's optional `unmailable` rows by user id; None from a plugin without it."""
    rows = answer.get("unmailable")
    if rows is None:
        return None
    return {
        int(r["userid"]): AccountState(bool(int(r.get("suspended") or 0)), str(r.get("auth") or ""))
        for r in rows
    }


def _from_bulk(courseid, answer, wanted: set[int], activities: bool):
    completed = {
        int(c["userid"]): int(c["timecompleted"])
        for c in answer.get("completions") or ()
        if c.get("timecompleted") and int(c["userid"]) in wanted
    }
    states: dict[int, dict[int, int]] = {}
    if activities:
        for row in answer.get("cmcompletions") or ():
            userid = int(row["userid"])
            if userid in wanted:
                states.setdefault(int(row["cmid"]), {})[userid] = int(row["state"])
    return completed, states, set()


def _from_per_user(client, courseid, userids, activities, batched, tally, *, course=True):
    calls: list[tuple[str, dict[str, Any]]] = []
    for userid in userids:
        if course:
            calls.append((COURSE_FN, {"courseid": courseid, "userid": userid}))
        if activities:
            calls.append((ACTIVITIES_FN, {"courseid": courseid, "userid": userid}))
    if batched:
        answers = client.iter_batch(calls, tally=tally, tolerate=(NotEnrolled,))
    else:
        answers = _each(client, calls, tally)
    completed: dict[int, int] = {}
    states: dict[int, dict[int, int]] = {}
    untracked: set[int] = set()
    for (function, args), answer in zip(calls, answers, strict=True):
        userid = args["userid"]
        if isinstance(answer, NotEnrolled):
            untracked.add(userid)
            continue
        if isinstance(answer, MoodleAPIError):
            raise answer
        if function == COURSE_FN:
            status = CourseCompletionStatus.from_json(courseid, userid, answer)
            if status.completed:
                completed[userid] = status.timecompleted or 0
        else:
            for s in ActivitiesCompletion.from_json(courseid, userid, answer).statuses:
                if s.state:
                    states.setdefault(s.cmid, {})[userid] = s.state
    return completed, states, untracked


def _each(client: MoodleClient, calls, tally) -> Iterator[Any]:
    """One request per call under the client's concurrency cap; NotEnrolled kept as a value.

    Answers are yielded window by window, so a course-wide error stops within one window
    and the caller never holds more than a window of raw answers."""

    def one(call):
        function, args = call
        try:
            return client.call(function, args, tally=tally)
        except NotEnrolled as exc:
            return exc

    workers = client.settings.max_concurrency
    window = workers * 32  # a course-wide error stops within one window
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="moodle") as pool:
        for i in range(0, len(calls), window):
            yield from pool.map(one, calls[i : i + window])


def active_participants(
    client: MoodleClient, courseid: int, *, page_size: int, tally: RequestTally
) -> list[EnrolledUser]:
    """Participants with an active enrolment (`onlyactive`), by id.

    Suspended enrolments are not learners to mail, and each one would also stop a
    completion batch (Moodle does not track them). `onlyactive` needs
    moodle/course:enrolreview; without it every participant is returned, with a warning.
    """
    try:
        return list(functions.enrolled_users(
            client, courseid, page_size=page_size, only_active=True, tally=tally
        ))  # fmt: skip
    except MissingCapability as exc:
        log.warning(
            "course %d: %s; suspended enrolments are included and filtered by completion "
            "tracking instead", courseid, exc,
        )  # fmt: skip
        return list(functions.enrolled_users(client, courseid, page_size=page_size, tally=tally))


def suspended_participants(
    client: MoodleClient,
    courseid: int,
    active: Iterable[int],
    *,
    page_size: int,
    tally: RequestTally,
) -> frozenset[int] | None:
    """Participants whose enrolment is not active (`onlysuspended`, ids only), by id.

    `active` are the ids `active_participants` gave: they are never in the answer, and a
    site before 3.11, which ignores the option and lists everyone, gives exactly the others.
    Without moodle/course:enrolreview nothing can be told apart: None, with a warning (and
    `active_participants`, for want of the same capability, gave every participant).
    """
    try:
        users = functions.enrolled_users(
            client, courseid, page_size=page_size, fields=("id",), only_suspended=True,
            tally=tally,
        )  # fmt: skip
        ids = {u.id for u in users}
    except MissingCapability as exc:
        log.warning("course %d: %s; suspended enrolments cannot be counted", courseid, exc)
        return None
    return frozenset(ids - set(active))


def learners_with_completion(
    client: MoodleClient,
    courseid: int,
    *,
    site: SiteInfo | None = None,
    prefix: str = companion.DEFAULT_PREFIX,
    activities: bool = False,
    course: bool = True,
    page_size: int = 1000,
    method: str | None = None,
):
    """A course's participants and their completion: `(users, completions, requests)`."""
    tally = RequestTally()
    site = site or functions.site_info(client)
    users = active_participants(client, courseid, page_size=page_size, tally=tally)
    result = course_completions(
        client, courseid, [u.id for u in users], site=site, prefix=prefix,
        activities=activities, course=course, method=method,
    )  # fmt: skip
    return users, result, tally.count + result.requests
