"""core_enrol_get_enrolled_users (enrol/externallib.php).

Options are read before the course is even loaded (so a bad sortby beats a bad
courseid); booleans use PHP `!empty()`. The ordered id list per course and sort is
cached on the site, so paging 50,000 enrolments costs a slice per page.
"""

from moodle_ws.sandbox.context import SITEID, Call
from moodle_ws.sandbox.exceptions import InvalidParameter, coding_error
from moodle_ws.sandbox.impl.userdetails import Viewer, check_fields, user_details
from moodle_ws.sandbox.model import ROLE_CAPABILITIES
from moodle_ws.sandbox.phpvalue import clean_param, php_empty, php_int, php_str

SEPARATEGROUPS = 1
SORTS = ("id", "firstname", "lastname", "siteorder")


def get_enrolled_users(call: Call, courseid: int, options: list[dict]) -> list[dict]:
    """core_enrol_get_enrolled_users; the options and access checks of the module doc."""
    withcapability, groupid, onlyactive, onlysuspended = "", 0, False, False
    fields: list[str] = []
    limitfrom = limitnumber = 0
    sortby, descending = "id", False
    for option in options:
        name, value = option["name"], option["value"]
        if name == "withcapability":
            withcapability = php_str(value)
        elif name == "groupid":
            groupid = php_int(value)
        elif name == "onlyactive":
            onlyactive = not php_empty(value)
        elif name == "onlysuspended":
            onlysuspended = not php_empty(value)
        elif name == "userfields":
            fields = [clean_param(f, "alphanumext") for f in php_str(value).split(",")]
        elif name == "limitfrom":
            limitfrom = clean_param(value, "int")
        elif name == "limitnumber":
            limitnumber = clean_param(value, "int")
        elif name == "sortby":
            if value not in SORTS:
                raise InvalidParameter(
                    f"Invalid value for sortby parameter (value: {php_str(value)}), "
                    f"allowed values are: {','.join(SORTS)}"
                )
            sortby = value
        elif name == "sortdirection":
            direction = php_str(value).upper()
            if direction not in ("ASC", "DESC"):
                raise InvalidParameter(
                    "Invalid value for sortdirection parameter\n                        "
                    f"(value: {direction}),allowed values are: ASC,DESC"
                )
            descending = direction == "DESC"

    site = call.site
    course = call.get_course(courseid)
    call.validate_context_wrapped(course)
    call.require_capability(
        "moodle/site:viewparticipants" if course.id == SITEID else "moodle/course:viewparticipants"
    )
    if withcapability:
        call.require_capability("moodle/role:review")
    my_groups = {
        g.id for g in site.groups.values() if g.courseid == course.id and call.user.id in g.members
    }
    if groupid and groupid not in my_groups:
        call.require_capability("moodle/site:accessallgroups")
    if onlyactive or onlysuspended:
        call.require_capability("moodle/course:enrolreview")
    if onlyactive and onlysuspended:
        raise coding_error(
            "Both onlyactive and onlysuspended are set, this is probably not what you want!"
        )

    enrolled = site.enrolments.get(course.id, {})
    ids = site.enrolled_order(course.id, sortby, descending)
    keep = _filter(
        call, course, enrolled, withcapability, groupid, onlyactive, onlysuspended, my_groups
    )
    if keep is not None:
        ids = [uid for uid in ids if keep(uid)]
    start = max(limitfrom, 0)
    ids = ids[start : start + limitnumber] if limitnumber > 0 else ids[start:]
    if not ids:
        return []
    wanted = check_fields(fields)
    viewer = Viewer(call)
    users = site.users
    # A user whose details the token user may not see is dropped after the paging, as
    # Moodle does: the page comes out short.
    details = (user_details(viewer, users[uid], wanted, course, enrolled[uid]) for uid in ids)
    return [d for d in details if d is not None]


def _filter(call, course, enrolled, withcapability, groupid, onlyactive, onlysuspended, my_groups):
    site, now = call.site, call.now
    tests = []
    if withcapability:
        tests.append(lambda uid: withcapability in ROLE_CAPABILITIES.get(enrolled[uid].roleid, ()))
    if groupid:
        members = site.groups[groupid].members if groupid in site.groups else set()
        tests.append(members.__contains__)
    elif course.groupmode == SEPARATEGROUPS and not call.has_capability(
        "moodle/site:accessallgroups"
    ):
        shared = set().union(*(site.groups[g].members for g in my_groups)) if my_groups else set()
        tests.append(shared.__contains__)
    if onlyactive:
        tests.append(lambda uid: site.is_active_enrolment(enrolled[uid], now))
    if onlysuspended:
        tests.append(lambda uid: not site.is_active_enrolment(enrolled[uid], now))
    if not tests:
        return None
    return lambda uid: all(t(uid) for t in tests)
