"""`user_get_user_details()`: one user as the token user may see them.

Shared by get_enrolled_users (with a course, optional field list) and get_users /
get_users_by_field (no course, every default field). Visibility rules follow user/lib.php
for a token user who is not a site admin: address and phones need admin, username and
the departmental fields and auth need moodle/user:viewalldetails, email needs identity or
moodle/course:useremail; the fields named in $CFG->hiddenuserfields (`Site.hiddenuserfields`:
description, country, city, suspended, firstaccess, lastaccess, mycourses) need
moodle/user:viewhiddendetails (moodle/course:viewhiddenuserfields with a course) or admin.
"""

from typing import Any

from moodle_ws.sandbox.context import SITEID, Call
from moodle_ws.sandbox.exceptions import MoodleException
from moodle_ws.sandbox.model import EDITINGTEACHER, ROLES, Course, Enrolment, User
from moodle_ws.sandbox.phpvalue import clean_param

DEFAULT_FIELDS = (
    "id",
    "username",
    "fullname",
    "firstname",
    "lastname",
    "email",
    "address",
    "phone1",
    "phone2",
    "department",
    "institution",
    "interests",
    "firstaccess",
    "lastaccess",
    "auth",
    "confirmed",
    "idnumber",
    "lang",
    "theme",
    "timezone",
    "mailformat",
    "description",
    "descriptionformat",
    "city",
    "country",
    "profileimageurlsmall",
    "profileimageurl",
    "customfields",
    "groups",
    "roles",
    "preferences",
    "enrolledcourses",
    "suspended",
    "lastcourseaccess",
    "trackforums",
    "initials",
)
_DEFAULT_SET = frozenset(DEFAULT_FIELDS)


def check_fields(fields: list[str]) -> frozenset[str]:
    """The requested fields plus id and fullname; raises invaliduserfield for a bad one."""
    if not fields:
        return _DEFAULT_SET
    for name in fields:
        if name not in _DEFAULT_SET:
            raise MoodleException("invaliduserfield", f"Invalid user field: {name}")
    return frozenset(fields) | {"id", "fullname"}


class Viewer:
    """The token user's relevant capabilities, looked up once per call."""

    def __init__(self, call: Call):
        has = call.has_capability
        self.call = call
        self.isadmin = call.user.id in call.site.siteadmins
        self.fullnames = has("moodle/site:viewfullnames")
        self.alldetails = has("moodle/user:viewalldetails")
        self.email = has("moodle/course:useremail") or has("moodle/site:viewuseridentity")
        self.details = has("moodle/user:viewdetails")
        self.hidden = has("moodle/user:viewhiddendetails")
        self.course_hidden = has("moodle/course:viewhiddenuserfields")

    def hidden_fields(self, course: Course | None) -> frozenset[str]:
        """$CFG->hiddenuserfields, unless the token user may see hidden fields: in a
        course by moodle/course:viewhiddenuserfields, else by moodle/user:viewhiddendetails."""
        if self.course_hidden if course is not None else self.hidden:
            return frozenset()
        return frozenset(self.call.site.hiddenuserfields)


def _initials(user: User) -> str:
    return (user.firstname[:1] + user.lastname[:1]).upper()


def user_details(
    viewer: Viewer,
    user: User,
    fields: frozenset[str] = _DEFAULT_SET,
    course: Course | None = None,
    enrolment: Enrolment | None = None,
) -> dict[str, Any] | None:
    """The details array for `user` (keys in any order: the cleaner orders them), or None
    when the token user may not see the user's details at all (no moodle/user:viewdetails,
    and the user is neither the token user nor a course contact): the caller leaves them out."""
    call = viewer.call
    current = user.id == call.user.id
    if not (current or viewer.details or _is_course_contact(call, user.id)):
        return None
    d: dict[str, Any] = {"id": user.id}
    if "username" in fields and (current or viewer.alldetails):
        d["username"] = user.username
    if viewer.isadmin or viewer.fullnames:
        if "firstname" in fields:
            d["firstname"] = user.firstname
        if "lastname" in fields:
            d["lastname"] = user.lastname
    d["fullname"] = user.fullname
    if "initials" in fields:
        d["initials"] = _initials(user)
    if "customfields" in fields:
        custom = [
            {
                "name": f.name,
                "value": user.customfields[f.shortname],
                "displayvalue": user.customfields[f.shortname],
                "type": f.datatype,
                "shortname": f.shortname,
            }
            for f in call.site.profile_fields
            if user.customfields.get(f.shortname)
        ]
        if custom:
            d["customfields"] = custom
    if "profileimageurl" in fields:
        d["profileimageurl"] = call.user_picture(user)
    if "profileimageurlsmall" in fields:
        d["profileimageurlsmall"] = call.user_picture(user, small=True)
    if viewer.isadmin:
        for name in ("address", "phone1", "phone2"):
            if getattr(user, name) and name in fields:
                d[name] = getattr(user, name)
    hidden = viewer.hidden_fields(course)  # empty for an admin, who holds every capability
    if "description" in fields and "description" not in hidden:
        d["description"], d["descriptionformat"] = call.format_text(
            user.description, user.descriptionformat
        )
    for name in ("country", "city"):
        if name in fields and getattr(user, name) and name not in hidden:
            d[name] = getattr(user, name)
    if "timezone" in fields and user.timezone:
        d["timezone"] = user.timezone
    if "suspended" in fields and "suspended" not in hidden:
        d["suspended"] = bool(user.suspended)
    if "firstaccess" in fields and "firstaccess" not in hidden:
        d["firstaccess"] = user.firstaccess or 0
    if "lastaccess" in fields and "lastaccess" not in hidden:
        d["lastaccess"] = user.lastaccess or 0
    if "lastcourseaccess" in fields:
        d["lastcourseaccess"] = enrolment.lastaccess if enrolment else 0
    if "email" in fields and (current or viewer.email or user.maildisplay == 1):
        d["email"] = user.email
    if "interests" in fields and user.interests:
        d["interests"] = user.interests
    if current or viewer.alldetails:
        if "idnumber" in fields and user.idnumber:
            d["idnumber"] = user.idnumber
        if "institution" in fields and user.institution:
            d["institution"] = user.institution
        if "department" in fields:
            d["department"] = user.department
    if course is not None:
        _course_fields(call, d, user, fields, course, enrolment)
    if "enrolledcourses" in fields and "mycourses" not in hidden:
        mine = _enrolled_courses(call, user.id)
        if mine:
            d["enrolledcourses"] = mine
    if "preferences" in fields and current:
        d["preferences"] = [{"name": k, "value": v} for k, v in user.preferences.items()]
    if current or viewer.alldetails:
        for name in ("auth", "confirmed", "lang", "theme", "mailformat", "trackforums"):
            if name in fields:
                d[name] = getattr(user, name)
    if "lang" in d:
        d["lang"] = clean_param(d["lang"], "lang")
    if "theme" in d:
        d["theme"] = clean_param(d["theme"], "theme")
    return d


def _is_course_contact(call: Call, userid: int) -> bool:
    """has_coursecontact_role(): an editing teacher somewhere ($CFG->coursecontact's default)."""
    return any(
        (e := enrolled.get(userid)) is not None and e.roleid == EDITINGTEACHER
        for enrolled in call.site.enrolments.values()
    )


def _course_fields(
    call: Call, d: dict, user: User, fields: frozenset, course: Course, enrolment: Enrolment | None
) -> None:
    if "roles" in fields:
        roles = []
        if enrolment is not None:
            shortname, _ = ROLES[enrolment.roleid]
            roles.append(
                {"roleid": enrolment.roleid, "name": "", "shortname": shortname, "sortorder": 0}
            )
        d["roles"] = roles
    if "groups" in fields:
        groups = [
            {
                "id": g.id,
                "name": call.format_string(g.name),
                "description": call.format_text(g.description, g.descriptionformat)[0],
                "descriptionformat": call.format_text(g.description, g.descriptionformat)[1],
            }
            for g in call.site.groups.values()
            if g.courseid == course.id and user.id in g.members
        ]
        if groups:
            d["groups"] = groups


def _enrolled_courses(call: Call, userid: int) -> list[dict]:
    site = call.site
    out = []
    for cid, enrolled in site.enrolments.items():
        e = enrolled.get(userid)
        if e is None or cid == SITEID or not site.is_active_enrolment(e, call.now):
            continue
        c = site.courses[cid]
        out.append(
            {
                "id": c.id,
                "fullname": call.format_string(c.fullname),
                "shortname": call.format_string(c.shortname),
            }
        )
    return out
