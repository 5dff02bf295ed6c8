"""The sandbox site's records: Moodle and IOMAD tables as small mutable dataclasses.

Field names follow the Moodle columns so the functions read like the PHP they mirror.
Times are epoch seconds; flags that Moodle stores as ints stay ints.
"""

from dataclasses import dataclass, field

STUDENT, TEACHER, EDITINGTEACHER, MANAGER = 5, 4, 3, 1
ROLES = {
    MANAGER: ("manager", 1),
    EDITINGTEACHER: ("editingteacher", 3),
    TEACHER: ("teacher", 4),
    STUDENT: ("student", 5),
}

# Capabilities each course role grants in its course (enough for withcapability and
# completion tracking: only students are "tracked users").
ROLE_CAPABILITIES = {
    STUDENT: frozenset(
        {
            "moodle/course:isincompletionreports",
            "mod/assign:submit",
            "mod/quiz:attempt",
            "moodle/course:viewparticipants",
        }
    ),
    TEACHER: frozenset(
        {
            "moodle/course:viewparticipants",
            "moodle/grade:viewall",
            "report/progress:view",
            "report/completion:view",
        }
    ),
    EDITINGTEACHER: frozenset(
        {
            "moodle/course:update",
            "moodle/course:viewparticipants",
            "moodle/grade:viewall",
            "report/progress:view",
            "report/completion:view",
            "moodle/course:enrolreview",
            "moodle/site:accessallgroups",
        }
    ),
    MANAGER: frozenset(
        {"moodle/course:update", "moodle/course:view", "moodle/course:viewparticipants"}
    ),
}

# completion states (lib/completionlib.php)
INCOMPLETE, COMPLETE, COMPLETE_PASS, COMPLETE_FAIL = 0, 1, 2, 3
# activity completion tracking
TRACKING_NONE, TRACKING_MANUAL, TRACKING_AUTOMATIC = 0, 1, 2


@dataclass(slots=True)
class User:
    id: int
    username: str
    password: str
    firstname: str
    lastname: str
    email: str
    auth: str = "manual"
    confirmed: int = 1
    suspended: int = 0
    deleted: int = 0
    idnumber: str = ""
    institution: str = ""
    department: str = ""
    phone1: str = ""
    phone2: str = ""
    address: str = ""
    city: str = ""
    country: str = ""
    lang: str = "en"
    calendartype: str = "gregorian"
    theme: str = ""
    timezone: str = "99"
    mailformat: int = 1
    maildisplay: int = 2
    trackforums: int = 0
    description: str = ""
    descriptionformat: int = 1
    firstaccess: int = 0
    lastaccess: int = 0
    timecreated: int = 0
    timemodified: int = 0
    policyagreed: int = 0
    interests: str = ""
    middlename: str = ""
    alternatename: str = ""
    firstnamephonetic: str = ""
    lastnamephonetic: str = ""
    customfields: dict[str, str] = field(default_factory=dict)  # profile field shortname -> value
    preferences: dict[str, str] = field(default_factory=dict)

    @property
    def fullname(self) -> str:
        """fullname() with the default display: 'firstname lastname'."""
        return f"{self.firstname} {self.lastname}"


@dataclass(frozen=True, slots=True)
class ProfileField:
    shortname: str
    name: str
    datatype: str = "text"


@dataclass(slots=True)
class Activity:
    """A course module; `id` is the cmid."""

    id: int
    course: int
    modname: str
    instance: int
    name: str
    section: int
    completion: int = TRACKING_AUTOMATIC
    rules: tuple[str, ...] = ("completionview",)
    visible: int = 1
    contextid: int = 0
    valueused: bool = False
    added: int = 0


@dataclass(slots=True)
class Section:
    id: int
    section: int
    name: str
    summary: str = ""
    visible: int = 1
    cmids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Enrolment:
    roleid: int = STUDENT
    status: int = 0  # 0 active, 1 suspended (user_enrolments.status)
    timestart: int = 0
    timeend: int = 0
    lastaccess: int = 0  # user_lastaccess.timeaccess for this course, 0 never


@dataclass(slots=True)
class Course:
    id: int
    category: int
    shortname: str
    fullname: str
    idnumber: str = ""
    summary: str = ""
    summaryformat: int = 1
    format: str = "topics"
    startdate: int = 0
    enddate: int = 0
    visible: int = 1
    enablecompletion: int = 1
    completionnotify: int = 0
    showgrades: int = 1
    newsitems: int = 5
    maxbytes: int = 0
    showreports: int = 0
    groupmode: int = 0
    groupmodeforce: int = 0
    defaultgroupingid: int = 0
    lang: str = ""
    theme: str = ""
    marker: int = 0
    legacyfiles: int = 0
    calendartype: str = ""
    timecreated: int = 0
    timemodified: int = 0
    requested: int = 0
    cacherev: int = 0
    sortorder: int = 0
    showactivitydates: bool | None = True
    showcompletionconditions: bool | None = True
    contextid: int = 0
    aggregation: int = 1  # 1 ALL, 2 ANY
    criteria: list[int] = field(default_factory=list)  # cmids of activity criteria
    formatoptions: dict[str, object] = field(default_factory=dict)
    customfields: list[tuple[str, str, str, str]] = field(default_factory=list)
    enrolmethods: list[str] = field(default_factory=lambda: ["manual"])
    contacts: list[int] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)


@dataclass(slots=True)
class Group:
    id: int
    courseid: int
    name: str
    description: str = ""
    descriptionformat: int = 1
    members: set[int] = field(default_factory=set)


@dataclass(slots=True)
class Service:
    id: int
    shortname: str
    name: str
    functions: set[str]
    enabled: int = 1
    restrictedusers: int = 0
    downloadfiles: int = 0
    uploadfiles: int = 0


@dataclass(slots=True)
class Token:
    token: str
    userid: int
    serviceid: int
    privatetoken: str
    validuntil: int = 0  # 0 = never expires
    timecreated: int = 0


@dataclass(slots=True)
class Company:
    id: int
    name: str
    shortname: str
    code: str
    city: str
    country: str
    address: str = ""
    postcode: str = ""
    region: str = ""
    maildisplay: int = 2
    mailformat: int = 1
    maildigest: int = 0
    autosubscribe: int = 1
    trackforums: int = 0
    htmleditor: int = 1
    screenreader: int = 0
    timezone: str = "99"
    lang: str = "en"
    suspended: int = 0
    ecommerce: int = 0
    parentid: int = 0
    customcss: str = ""
    validto: int | None = None
    suspendafter: int = 0
    companyterminated: int = 0
    theme: str = "iomadboost"
    hostname: str = ""
    maxusers: int = 0
    maincolor: str = ""
    headingcolor: str = ""
    linkcolor: str = ""
    custom1: str = ""
    custom2: str = ""
    custom3: str = ""


@dataclass(slots=True)
class Department:
    id: int
    name: str
    shortname: str
    company: int
    parent: int


@dataclass(slots=True)
class CompanyUser:
    userid: int
    companyid: int
    departmentid: int
    managertype: int = 0


@dataclass(slots=True)
class License:
    id: int
    name: str
    allocation: int
    validlength: int
    startdate: int
    expirydate: int
    companyid: int
    courses: list[int]
    parentid: int = 0
    type: int = 0
    program: int = 0
    reference: str = ""
    instant: int = 0


@dataclass(slots=True)
class LicenseAllocation:
    licenseid: int
    userid: int
    licensecourseid: int
    issuedate: int
    isusing: int = 0


@dataclass(slots=True)
class Track:
    """local_iomad_tracks: one completion record of a user in a course."""

    id: int
    userid: int
    courseid: int
    timecompleted: int
    licenseid: int = 0
