"""Frozen records for what Moodle returns, built from its JSON.

Fields Moodle may leave out (visibility, version, privileges) are optional here too, so a
record never invents a value: `None` means Moodle did not say.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _int(v: Any) -> int | None:
    return None if v is None or v == "" else int(v)


@dataclass(frozen=True)
class SiteInfo:
    sitename: str
    siteurl: str
    username: str
    fullname: str
    userid: int
    release: str | None
    version: str | None
    lang: str | None
    functions: Mapping[str, str]  # name -> version, the functions of the token's service

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "SiteInfo":
        return cls(
            sitename=str(d.get("sitename") or ""),
            siteurl=str(d.get("siteurl") or ""),
            username=str(d.get("username") or ""),
            fullname=str(d.get("fullname") or ""),
            userid=int(d["userid"]),
            release=d.get("release"),
            version=d.get("version"),
            lang=d.get("lang"),
            functions={f["name"]: str(f.get("version") or "") for f in d.get("functions") or ()},
        )

    def has(self, function: str) -> bool:
        return function in self.functions


@dataclass(frozen=True)
class EnrolledUser:
    id: int
    fullname: str
    firstname: str | None = None
    lastname: str | None = None
    email: str | None = None
    firstaccess: int | None = None
    lastaccess: int | None = None
    lastcourseaccess: int | None = None  # 3.6+; absent on older sites
    idnumber: str | None = None
    lang: str | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "EnrolledUser":
        return cls(
            id=int(d["id"]),
            fullname=str(d.get("fullname") or ""),
            firstname=d.get("firstname"),
            lastname=d.get("lastname"),
            email=d.get("email"),
            firstaccess=_int(d.get("firstaccess")),
            lastaccess=_int(d.get("lastaccess")),
            lastcourseaccess=_int(d.get("lastcourseaccess")),
            idnumber=None if d.get("idnumber") is None else str(d["idnumber"]),
            lang=d.get("lang"),
        )


@dataclass(frozen=True)
class User:
    id: int
    username: str | None
    firstname: str | None
    lastname: str | None
    fullname: str
    email: str | None
    suspended: bool | None
    confirmed: bool | None
    auth: str | None
    lang: str | None
    timezone: str | None
    firstaccess: int | None
    lastaccess: int | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "User":
        return cls(
            id=int(d["id"]),
            username=d.get("username"),
            firstname=d.get("firstname"),
            lastname=d.get("lastname"),
            fullname=str(d.get("fullname") or ""),
            email=d.get("email"),
            suspended=d.get("suspended"),
            confirmed=d.get("confirmed"),
            auth=d.get("auth"),
            lang=d.get("lang"),
            timezone=d.get("timezone"),
            firstaccess=_int(d.get("firstaccess")),
            lastaccess=_int(d.get("lastaccess")),
        )


@dataclass(frozen=True)
class Course:
    id: int
    shortname: str
    fullname: str
    displayname: str
    categoryid: int | None
    format: str | None  # absent when only the public fields could be seen
    visible: int | None
    enablecompletion: int | None
    startdate: int | None
    enddate: int | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Course":
        return cls(
            id=int(d["id"]),
            shortname=str(d.get("shortname") or ""),
            fullname=str(d.get("fullname") or ""),
            displayname=str(d.get("displayname") or d.get("fullname") or ""),
            categoryid=_int(d.get("categoryid")),
            format=d.get("format"),
            visible=_int(d.get("visible")),
            enablecompletion=_int(d.get("enablecompletion")),
            startdate=_int(d.get("startdate")),
            enddate=_int(d.get("enddate")),
        )

    @property
    def is_accessible(self) -> bool:
        """False when Moodle gave only public fields: the token user cannot enter it."""
        return self.format is not None


@dataclass(frozen=True)
class Criterion:
    type: int  # 1 self, 2 date, 3 unenrol, 4 activity, 5 duration, 6 grade, 7 role, 8 course
    title: str
    status: str
    complete: bool
    timecompleted: int | None


@dataclass(frozen=True)
class CourseCompletionStatus:
    courseid: int
    userid: int
    completed: bool
    aggregation: int  # 1 all criteria, 2 any
    criteria: tuple[Criterion, ...]

    @classmethod
    def from_json(
        cls, courseid: int, userid: int, d: Mapping[str, Any]
    ) -> "CourseCompletionStatus":
        s = d["completionstatus"]
        return cls(
            courseid=courseid,
            userid=userid,
            completed=bool(s["completed"]),
            aggregation=int(s.get("aggregation") or 1),
            criteria=tuple(
                Criterion(
                    type=int(c["type"]),
                    title=str(c.get("title") or ""),
                    status=str(c.get("status") or ""),
                    complete=bool(c.get("complete")),
                    timecompleted=_int(c.get("timecompleted")),
                )
                for c in s.get("completions") or ()
            ),
        )

    @property
    def timecompleted(self) -> int | None:
        """When the course was completed, from its criteria (Moodle gives no course time)."""
        if not self.completed:
            return None
        times = [c.timecompleted for c in self.criteria if c.complete and c.timecompleted]
        if not times:
            return 0
        return max(times) if self.aggregation == 1 else min(times)


@dataclass(frozen=True)
class ActivityStatus:
    cmid: int
    modname: str
    instance: int
    state: int  # 0 incomplete, 1 complete, 2 complete-pass, 3 complete-fail
    timecompleted: int  # 0 when not completed
    tracking: int  # 0 none, 1 manual, 2 automatic

    @property
    def is_complete(self) -> bool:
        """Moodle counts complete-fail (3) as completed too."""
        return self.state in (1, 2, 3)


@dataclass(frozen=True)
class ActivitiesCompletion:
    courseid: int
    userid: int
    statuses: tuple[ActivityStatus, ...]

    @classmethod
    def from_json(cls, courseid: int, userid: int, d: Mapping[str, Any]) -> "ActivitiesCompletion":
        return cls(
            courseid=courseid,
            userid=userid,
            statuses=tuple(
                ActivityStatus(
                    cmid=int(s["cmid"]),
                    modname=str(s.get("modname") or ""),
                    instance=int(s.get("instance") or 0),
                    state=int(s.get("state") or 0),
                    timecompleted=int(s.get("timecompleted") or 0),
                    tracking=int(s.get("tracking") or 0),
                )
                for s in d.get("statuses") or ()
            ),
        )


@dataclass(frozen=True)
class AccountState:
    """Whether Moodle mails an account: what `email_to_user()` looks at."""

    suspended: bool
    auth: str


@dataclass(frozen=True)
class CourseCompletions:
    """Completion of a whole course: who completed it, and each activity's state per user.

    `requests` is how many HTTP requests Moodle served to produce it; `method` says how:
    `companion` (one bulk call), `batch` (tool_mobile_call_external_functions) or
    `per_user`. `untracked` are users Moodle does not track in the course.
    """

    courseid: int
    completed: Mapping[int, int]  # userid -> timecompleted
    activity_states: Mapping[int, Mapping[int, int]]  # cmid -> userid -> state (absent: 0)
    method: str
    requests: int
    untracked: frozenset[int] = field(default_factory=frozenset)
    # From the companion's optional `unmailable`: the course's participants whose account
    # is suspended or nologin, every other one being mailable. None: not given.
    unmailable: Mapping[int, AccountState] | None = None

    def is_completed(self, userid: int) -> bool:
        return userid in self.completed

    def activity_state(self, cmid: int, userid: int) -> int:
        return self.activity_states.get(cmid, {}).get(userid, 0)


@dataclass(frozen=True)
class MessageResult:
    msgid: int  # -1 when Moodle refused this message
    clientmsgid: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.msgid != -1


@dataclass(frozen=True)
class Warning:
    item: str | None
    itemid: int | None
    warningcode: str
    message: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Warning":
        return cls(d.get("item"), _int(d.get("itemid")), str(d["warningcode"]), str(d["message"]))


@dataclass(frozen=True)
class Company:
    id: int
    name: str
    shortname: str
    suspended: bool
    timezone: str | None
    lang: str | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Company":
        return cls(
            id=int(d["id"]),
            name=str(d.get("name") or ""),
            shortname=str(d.get("shortname") or ""),
            suspended=bool(int(d.get("suspended") or 0)),
            timezone=d.get("timezone"),
            lang=d.get("lang"),
        )


@dataclass(frozen=True)
class Department:
    id: int
    name: str
    shortname: str
    company: int
    parent: int  # 0: the company's top department


@dataclass(frozen=True)
class UserCompany:
    """A company a user belongs to (block_iomad_company_admin_get_user_companies), with the
    departments they are in. Says nothing of their role there: IOMAD's web services never
    return managertype."""

    id: int
    name: str
    departments: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class CompanyUser:
    id: int
    firstname: str
    lastname: str
    email: str
    companyid: int
    departmentid: int


@dataclass(frozen=True)
class License:
    id: int
    name: str
    allocation: int
    validlength: int
    expirydate: int
    used: int
    companyid: int
    parentid: int
    courses: tuple[tuple[int, str], ...] = ()  # (id, fullname), from get_license_from_id
    startdate: int | None = None  # from get_license_from_id only

    @property
    def free(self) -> int:
        return max(self.allocation - self.used, 0)


@dataclass(frozen=True)
class LicenseAllocation:
    """One row of IOMAD's companylicense_users: a seat on a licence for one course."""

    licenseid: int
    userid: int
    licensecourseid: int
    issuedate: int
    isusing: bool
    companyid: int


@dataclass(frozen=True)
class CloudSetting:
    companyid: int
    enabled: bool
    email_provider: str | None  # AWS | CLOUDFLARE | SYSTEM; None: not set
    threshold: int | None  # None: not set


@dataclass(frozen=True)
class NewUser:
    """A user account as `{prefix}_get_new_users` (or a lookup by id) gives it."""

    id: int
    username: str
    firstname: str
    lastname: str
    email: str
    auth: str
    suspended: bool
    timecreated: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "NewUser":
        return cls(
            id=int(d["id"]),
            username=str(d.get("username") or ""),
            firstname=str(d.get("firstname") or ""),
            lastname=str(d.get("lastname") or ""),
            email=str(d.get("email") or ""),
            auth=str(d.get("auth") or "manual"),
            suspended=bool(int(d.get("suspended") or 0)),
            timecreated=int(d.get("timecreated") or 0),
        )
