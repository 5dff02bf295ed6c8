"""Typed wrappers of the core web-service functions we call (docs/moodle.md).

Each sends only the parameters Moodle declares and turns the answer into records from
`moodle_ws.types`.
"""

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from moodle_ws.client import MoodleClient, RequestTally
from moodle_ws.encoding import options
from moodle_ws.types import (
    ActivitiesCompletion,
    Course,
    CourseCompletionStatus,
    EnrolledUser,
    MessageResult,
    SiteInfo,
    User,
    Warning,
)

log = logging.getLogger(__name__)

# What the templates and the audiences need of a learner, and nothing more.
LEARNER_FIELDS = ("id", "firstname", "lastname", "email", "lastaccess", "lastcourseaccess")
COURSE_FIELDS = ("id", "ids", "shortname", "idnumber", "category", "sectionid", "")
USER_FIELDS = ("id", "idnumber", "username", "email")
USERS_PER_REQUEST = 500
TEXT_FORMATS = {"moodle": 0, "html": 1, "plain": 2, "markdown": 4}


def site_info(client: MoodleClient) -> SiteInfo:
    return SiteInfo.from_json(client.call("core_webservice_get_site_info"))


def enrolled_users_page(
    client: MoodleClient,
    courseid: int,
    *,
    limitfrom: int = 0,
    limitnumber: int = 0,
    fields: Sequence[str] = LEARNER_FIELDS,
    only_active: bool = False,
    only_suspended: bool = False,
    tally: RequestTally | None = None,
) -> list[EnrolledUser]:
    """One page of a course's participants, ordered by user id.

    `only_suspended` (Moodle 3.11+; an older site ignores it and lists everyone) cannot be
    combined with `only_active`.
    """
    if only_active and only_suspended:
        raise ValueError("only_active and only_suspended exclude each other")
    opts = options(
        userfields=",".join(fields),
        onlyactive=True if only_active else None,
        onlysuspended=True if only_suspended else None,
        limitfrom=limitfrom,
        limitnumber=limitnumber,
        sortby="id",
        sortdirection="ASC",
    )
    rows = client.call(
        "core_enrol_get_enrolled_users", {"courseid": courseid, "options": opts}, tally=tally
    )
    return [EnrolledUser.from_json(r) for r in rows]


def enrolled_users(
    client: MoodleClient,
    courseid: int,
    *,
    page_size: int = 1000,
    fields: Sequence[str] = LEARNER_FIELDS,
    only_active: bool = False,
    only_suspended: bool = False,
    tally: RequestTally | None = None,
) -> Iterator[EnrolledUser]:
    """Every participant of a course, paged with limitfrom/limitnumber, each user once.

    Paging stops at a page that brings no user not seen yet (an empty page, as a rule). A
    short page is not the last: Moodle pages before it leaves out the users the token's user
    may not see, so a page can be short in the middle of the course. That costs one request
    more than stopping at a short page, and loses nobody. Enrolments that change between
    pages can shift the offsets, so users are de-duplicated by id.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    seen: set[int] = set()
    start = 0
    while True:
        page = enrolled_users_page(
            client, courseid, limitfrom=start, limitnumber=page_size, fields=fields,
            only_active=only_active, only_suspended=only_suspended, tally=tally,
        )  # fmt: skip
        new = 0
        for user in page:
            if user.id not in seen:
                seen.add(user.id)
                new += 1
                yield user
        if not new:
            return
        start += page_size


def course_completion_status(
    client: MoodleClient, courseid: int, userid: int, *, tally: RequestTally | None = None
) -> CourseCompletionStatus:
    args = {"courseid": courseid, "userid": userid}
    answer = client.call("core_completion_get_course_completion_status", args, tally=tally)
    return CourseCompletionStatus.from_json(courseid, userid, answer)


def activities_completion_status(
    client: MoodleClient, courseid: int, userid: int, *, tally: RequestTally | None = None
) -> ActivitiesCompletion:
    args = {"courseid": courseid, "userid": userid}
    answer = client.call("core_completion_get_activities_completion_status", args, tally=tally)
    return ActivitiesCompletion.from_json(courseid, userid, answer)


def courses_by_field(
    client: MoodleClient, field: str = "", value: str | int | Iterable[int] = ""
) -> tuple[list[Course], list[Warning]]:
    """Courses by `id`, `ids` (an iterable of ids), `shortname`, `idnumber` or `category`."""
    if field not in COURSE_FIELDS:
        raise ValueError(f"courses_by_field: field must be one of {COURSE_FIELDS}, not {field!r}")
    if field == "ids" and not isinstance(value, str | int):
        value = ",".join(str(int(v)) for v in value)
    answer = client.call("core_course_get_courses_by_field", {"field": field, "value": str(value)})
    return (
        [Course.from_json(c) for c in answer.get("courses") or ()],
        [Warning.from_json(w) for w in answer.get("warnings") or ()],
    )


def course(client: MoodleClient, courseid: int) -> Course | None:
    courses, _ = courses_by_field(client, "id", courseid)
    return courses[0] if courses else None


def users_by_field(
    client: MoodleClient,
    field: str,
    values: Iterable[str | int],
    *,
    chunk: int | None = None,
    tally: RequestTally | None = None,
) -> list[User]:
    """Users whose `field` (id, idnumber, username, email) is one of `values`, by id.

    Moodle silently leaves out users it does not find or whose field the token user may
    not see; callers map the answer back by field. One request per `chunk` values (default
    `users_chunk(client)`).
    """
    if field not in USER_FIELDS:
        raise ValueError(f"users_by_field: field must be one of {USER_FIELDS}, not {field!r}")
    chunk = chunk or users_chunk(client)
    values = list(values)
    users: list[User] = []
    for i in range(0, len(values), chunk):
        part = values[i : i + chunk]
        rows = client.call(
            "core_user_get_users_by_field",
            {"field": field, "values": [str(v) for v in part]},
            tally=tally,
        )
        users.extend(User.from_json(r) for r in rows)
    return sorted(users, key=lambda u: u.id)


def users_chunk(client: MoodleClient) -> int:
    """Values per `users_by_field` request: at most 500 (each user's profile is ~750 bytes
    of answer), and within PHP's max_input_vars: the three ws* variables, `field`, one
    variable per value."""
    return max(1, min(USERS_PER_REQUEST, client.settings.max_input_vars - 4))


def update_users(
    client: MoodleClient,
    updates: Sequence[Mapping[str, Any]],
    *,
    tally: RequestTally | None = None,
) -> list[Warning]:
    """Update users (`[{id, ...fields}]`) in one request; since Moodle 4.0 failures come
    back as warnings (before, the first failure raises and aborts the batch).

    Send a temporary password with `force_password_change(userid, password)`.
    """
    if not updates:
        return []
    answer = client.call(
        "core_user_update_users", {"users": [dict(u) for u in updates]}, tally=tally
    )
    if answer is None:  # Moodle before 4.0
        return []
    return [Warning.from_json(w) for w in answer.get("warnings") or ()]


def create_users(
    client: MoodleClient,
    users: Sequence[Mapping[str, Any]],
    *,
    tally: RequestTally | None = None,
) -> list[tuple[int, str]]:
    """Create accounts (`[{username, firstname, lastname, email, auth?, password?,
    createpassword?, ...}]`) in one request, all or none: returns `(id, username)` in
    order. A problem with any user raises InvalidParameter (Moodle's debuginfo names it)."""
    if not users:
        return []
    rows = client.call("core_user_create_users", {"users": [dict(u) for u in users]}, tally=tally)
    return [(int(r["id"]), str(r["username"])) for r in rows]


def force_password_change(userid: int, password: str) -> dict[str, Any]:
    """The update that sets a temporary password which the user must change at next login."""
    return {
        "id": userid,
        "password": password,
        "preferences": [{"type": "auth_forcepasswordchange", "value": "1"}],
    }


def send_instant_messages(
    client: MoodleClient,
    messages: Sequence[tuple[int, str, str | None]],
    *,
    textformat: str = "html",
) -> list[MessageResult]:
    """Send Moodle messages `(touserid, text, clientmsgid)`, one call per message.

    A batch mixing deliverable and refused recipients makes Moodle fail the whole call
    after the good ones were already sent, so a batch could not be retried safely.
    """
    results = []
    for touserid, text, clientmsgid in messages:
        msg: dict[str, Any] = {
            "touserid": touserid, "text": text, "textformat": TEXT_FORMATS[textformat],
        }  # fmt: skip
        if clientmsgid is not None:
            msg["clientmsgid"] = clientmsgid
        row = client.call("core_message_send_instant_messages", {"messages": [msg]})[0]
        results.append(
            MessageResult(int(row["msgid"]), row.get("clientmsgid"), row.get("errormessage"))
        )
    return results
