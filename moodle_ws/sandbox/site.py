"""`Site`: the sandbox Moodle's data, its knobs, request counters and fault injection.

Data lives in plain dicts keyed by id (see model.py for the records):

- `users`, `courses`, `activities` (by cmid), `categories` (id -> name), `groups`;
- `enrolments[courseid][userid]` -> Enrolment (role, status, course last access);
- `course_completions[courseid][userid]` -> timecompleted (only completed users);
- `cm_states[cmid][userid]` -> (state, timemodified), a course_modules_completion row;
- IOMAD: `companies`, `departments`, `company_users`, `licenses`, `allocations`, `tracks`;
- companion: `schedules`, `cloud_settings`; written back: `recorded_certificates`,
  `messages`, `emails`.

Knobs are plain attributes tests flip on a live site (see `Site.__init__`). Mutations
made by functions run under `site.lock`; tests that mutate while a server runs should use
the helper methods, which take it too.
"""

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from moodle_ws.sandbox.model import (
    Activity,
    Company,
    CompanyUser,
    Course,
    Department,
    Enrolment,
    Group,
    License,
    LicenseAllocation,
    ProfileField,
    Service,
    Token,
    Track,
    User,
)

CORE_VERSION = "2024100702"
CORE_RELEASE = "4.5.2 (Build: 20250210)"
COMPONENT_VERSIONS = {
    "tool_mobile": "2024100700",
    "block_iomad_company_admin": "2024100701",
    "local_iomad": "2026011200",
    "companion": "2025011500",
}

# What the token user may do by default: everything the functions check, except site
# config (so not an admin), maintenance access (so maintenance mode applies) and deleting
# anyone's messages.
DEFAULT_TOKEN_CAPABILITIES = frozenset(
    {
        "webservice/rest:use",
        "moodle/webservice:createtoken",
        "moodle/webservice:createmobiletoken",
        "moodle/course:view",
        "moodle/course:viewhiddencourses",
        "moodle/course:update",
        "moodle/course:viewparticipants",
        "moodle/site:viewparticipants",
        "moodle/role:review",
        "moodle/course:enrolreview",
        "moodle/site:accessallgroups",
        "moodle/site:viewfullnames",
        "moodle/site:viewuseridentity",
        "moodle/user:viewdetails",
        "moodle/user:viewhiddendetails",
        "moodle/course:viewhiddenuserfields",
        "moodle/user:viewalldetails",
        "moodle/course:useremail",
        "moodle/user:update",
        "moodle/user:create",
        "moodle/user:viewuseractivitiesreport",
        "moodle/site:sendmessage",
        "report/progress:view",
        "report/completion:view",
        "block/iomad_company_admin:company_add",
        "block/iomad_company_admin:edit_all_departments",
        "block/iomad_company_admin:editusers",
        "block/iomad_company_admin:company_view_all",
        "block/iomad_company_admin:view_licenses",
        "block/iomad_company_admin:allocate_licenses",
        "block/iomad_company_admin:company_course_users",
        "block/iomad_company_admin:assign_company_manager",
        "local/report_users:clearentries",
        "local/iomad:email_list",
        "local/iomad:email_templateset_list",
        "local/manireports:manage",
    }
)
# Authenticated users with mobile web services enabled.
DEFAULT_USER_CAPABILITIES = frozenset(
    {"moodle/webservice:createmobiletoken", "webservice/rest:use"}
)


class Site:
    """One fake Moodle site. Build it with `generate_site(SiteSpec(...))`."""

    def __init__(self, now: int, seed: int = 0):
        self.lock = threading.RLock()
        self.seed = seed
        self.base_now = now
        self._started = time.monotonic()
        # Clock of the running site: the seeded `now`, moving forward in real time, so
        # tokens and enrolment windows do not depend on the day the tests run.
        self.clock: Callable[[], float] = lambda: self.base_now + (time.monotonic() - self._started)
        self.wwwroot = "http://127.0.0.1"
        self.sitename = "Sandbox Academy"

        # --- knobs --------------------------------------------------------------
        self.webservices_enabled = True  # Advanced features > web services (token.php too)
        self.protocol_enabled = True  # REST protocol: off -> HTTP 403, empty body
        self.maintenance = False  # for users without moodle/site:maintenanceaccess
        self.debug: bool | str = False  # True: debuginfo (NORMAL); "developer": also in message
        self.messaging = True  # $CFG->messaging
        self.completion_enabled = True  # $CFG->enablecompletion
        self.max_input_vars = 1000  # PHP max_input_vars, per source (GET, POST)
        self.iomad_installed = True
        self.companion_installed = True
        self.companion_prefix = "local_manireports"
        # get_course_completions answers `unmailable` (False: an older plugin without it)
        self.companion_unmailable = True
        self.legacy_exception_names = False  # True: Moodle <= 4.4 class names
        self.https = False  # token.php hands out privatetoken only on https sites
        self.update_users_warnings = True  # False: Moodle < 4.0 (returns null, aborts)
        self.password_policy = True
        self.allow_accounts_same_email = False
        self.iomad_unallocate_broken = True  # the stored IOMAD code calls delete_record()
        self.iomad_user_companies_broken = False  # the $comany typo of some IOMAD builds
        self.password_expired_users: set[int] = set()  # auth password expiry reached
        # $CFG->hiddenuserfields: profile fields left out of user details for a token user
        # without moodle/user:viewhiddendetails, e.g. {"suspended", "lastaccess"}
        self.hiddenuserfields: set[str] = set()
        self.db_family = "pgsql"  # names the DB class in PHP errors
        self.latency = 0.0  # seconds added to every request
        self.latency_by_function: dict[str, float] = {}

        # --- data -----------------------------------------------------------------
        self.users: dict[int, User] = {}
        self.usernames: dict[str, int] = {}
        self.siteadmins: set[int] = set()
        self.guest_id = 1
        self.user_capabilities: dict[int, set[str]] = {}
        self.profile_fields: list[ProfileField] = []
        self.categories: dict[int, str] = {}
        self.courses: dict[int, Course] = {}
        self.activities: dict[int, Activity] = {}
        self.groups: dict[int, Group] = {}
        self.enrolments: dict[int, dict[int, Enrolment]] = {}
        self.course_completions: dict[int, dict[int, int]] = {}
        self.cm_states: dict[int, dict[int, tuple[int, int]]] = {}
        self.services: dict[int, Service] = {}
        self.tokens: dict[str, Token] = {}
        self.companies: dict[int, Company] = {}
        self.departments: dict[int, Department] = {}
        self.company_users: list[CompanyUser] = []
        self.licenses: dict[int, License] = {}
        self.allocations: list[LicenseAllocation] = []
        self.tracks: dict[int, Track] = {}
        self.schedules: list[dict[str, Any]] = []
        self.cloud_settings: list[dict[str, Any]] = []
        self.email_template_disabled: dict[tuple, int] = {}
        self.recorded_certificates: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.emails: list[dict[str, Any]] = []  # mail Moodle would have sent (new passwords)
        self.conversations: dict[frozenset, int] = {}
        self.next_ids: Counter = Counter()

        # --- what seed.py fills in -------------------------------------------------
        self.token = ""
        self.token_user_id = 0
        self.service_id = 0
        self.login_user = ("manager", "password")
        self.login_service = "offload_service"
        self.main_course_id = 0
        self.course_completion_disabled_id = 0
        self.course_no_criteria_id = 0
        self.learner_ids: list[int] = []
        self.teacher_ids: list[int] = []
        self.deleted_user_id = 0
        self.outsider_user_id = 0

        # --- counters, faults, caches -------------------------------------------
        self._count_lock = threading.Lock()
        self.request_count = 0
        self.requests_by_function: Counter = Counter()
        self.bytes_served = 0  # response bodies, every request
        self.bytes_by_function: Counter = Counter()
        self.inner_requests_by_function: Counter = Counter()
        self._faults: dict[str, list[int | str]] = {}
        self.version = 0  # bumped when enrolments or user names change
        self._order_cache: dict[tuple, tuple[int, list[int]]] = {}
        self._registry: tuple | None = None  # dispatch.registered()'s cache

    # Aliases: names other code may reach for first.
    @property
    def completion_disabled_course_id(self) -> int:
        """Alias of `course_completion_disabled_id`."""
        return self.course_completion_disabled_id

    @property
    def no_criteria_course_id(self) -> int:
        """Alias of `course_no_criteria_id`."""
        return self.course_no_criteria_id

    # --- time and ids -----------------------------------------------------------
    def now(self) -> int:
        """The site's time (epoch seconds)."""
        return int(self.clock())

    def new_id(self, table: str) -> int:
        """The next id of `table` (ids continue after the seeded ones)."""
        self.next_ids[table] += 1
        return self.next_ids[table]

    # --- the token and its service ----------------------------------------------
    @property
    def token_user(self) -> User:
        """The main token's user (the `manager`)."""
        return self.users[self.token_user_id]

    @property
    def service(self) -> Service:
        """The main token's external service."""
        return self.services[self.service_id]

    @property
    def capabilities(self) -> set[str]:
        """The token user's capabilities (mutable: discard one to get nopermissions)."""
        return self.user_capabilities.setdefault(self.token_user_id, set())

    def has_capability(self, userid: int, capability: str) -> bool:
        """True if `userid` holds `capability` (admins hold every one)."""
        if userid in self.siteadmins:
            return True
        caps = self.user_capabilities.get(userid)
        return capability in (caps if caps is not None else DEFAULT_USER_CAPABILITIES)

    def remove_function(self, name: str) -> None:
        """Take `name` out of the main token's service (calls then get accessexception)."""
        with self.lock:
            self.service.functions.discard(name)

    def add_function(self, name: str) -> None:
        """Put `name` (back) into the main token's service."""
        with self.lock:
            self.service.functions.add(name)

    def set_companion_prefix(self, prefix: str) -> None:
        """Re-register the companion functions under `prefix`, keeping them in the service."""
        from moodle_ws.sandbox.spec import companion_raw

        with self.lock:
            old = self.companion_prefix
            for short in companion_raw():
                for service in self.services.values():
                    if f"{old}_{short}" in service.functions:
                        service.functions.discard(f"{old}_{short}")
                        service.functions.add(f"{prefix}_{short}")
            self.companion_prefix = prefix

    def expire_token(self, token: str | None = None) -> None:
        """Make `token` (default: the main one) past its validuntil."""
        with self.lock:
            self.tokens[token or self.token].validuntil = self.now() - 60

    # --- completion data --------------------------------------------------------
    def set_course_completion(self, courseid: int, userid: int, timecompleted: int | None) -> None:
        """Mark `userid` complete in `courseid` at `timecompleted`, or not complete (None)."""
        with self.lock:
            done = self.course_completions.setdefault(courseid, {})
            if timecompleted is None:
                done.pop(userid, None)
            else:
                done[userid] = int(timecompleted)

    def set_activity_state(
        self, cmid: int, userid: int, state: int, timemodified: int | None = None
    ):
        """Set a user's completion state (0-3) of activity `cmid`; 0 removes the row."""
        with self.lock:
            rows = self.cm_states.setdefault(cmid, {})
            if state == 0:
                rows.pop(userid, None)
            else:
                rows[userid] = (int(state), int(timemodified or self.now()))

    def enrol(self, courseid: int, userid: int, enrolment: Enrolment | None = None) -> None:
        """Enrol (or re-enrol) a user in a course."""
        with self.lock:
            self.enrolments.setdefault(courseid, {})[userid] = enrolment or Enrolment(
                timestart=self.now() - 86400
            )
            self.version += 1

    def unenrol(self, courseid: int, userid: int) -> None:
        """Remove a user's enrolment from a course."""
        with self.lock:
            self.enrolments.get(courseid, {}).pop(userid, None)
            self.version += 1

    def is_active_enrolment(self, e: Enrolment, now: int) -> bool:
        """Active status and inside its time window (get_enrolled_sql onlyactive)."""
        return e.status == 0 and e.timestart <= now and (e.timeend == 0 or e.timeend > now)

    # --- users ------------------------------------------------------------------
    def add_user(self, user: User) -> User:
        """Store `user` and index its username."""
        with self.lock:
            self.users[user.id] = user
            self.usernames[user.username] = user.id
            self.version += 1
            return user

    def user_by_email(self, email: str, exclude: int = 0) -> User | None:
        """A non-deleted user with this email (case-insensitive), other than `exclude`."""
        low = email.lower()
        for u in self.users.values():
            if u.email.lower() == low and u.id != exclude and not u.deleted:
                return u
        return None

    # --- ordered enrolled users (cached: paging 50,000 learners stays O(page)) ---
    def enrolled_order(self, courseid: int, sortby: str, descending: bool) -> list[int]:
        """User ids enrolled in `courseid` in the order get_enrolled_users' SQL gives."""
        key = (courseid, sortby, descending)
        cached = self._order_cache.get(key)
        if cached and cached[0] == self.version:
            return cached[1]
        users = self.users
        ids = [uid for uid in self.enrolments.get(courseid, {}) if not users[uid].deleted]
        if sortby == "id":
            ids.sort(reverse=descending)
        elif sortby == "siteorder":
            # users_order_by_sql(): "lastname, firstname, id" + direction: only id flips.
            ids.sort(reverse=descending)
            ids.sort(key=lambda u: (users[u].lastname.casefold(), users[u].firstname.casefold()))
        else:
            ids.sort(key=lambda u: (getattr(users[u], sortby).casefold(), u), reverse=descending)
        self._order_cache[key] = (self.version, ids)
        return ids

    # --- counting and faults ----------------------------------------------------
    def count_request(self, function: str | None) -> None:
        """Count one HTTP request (and its wsfunction, if any)."""
        with self._count_lock:
            self.request_count += 1
            if function:
                self.requests_by_function[function] += 1

    def count_bytes(self, function: str | None, n: int) -> None:
        """Count `n` bytes of response body (to `function`'s request, if any)."""
        with self._count_lock:
            self.bytes_served += n
            if function:
                self.bytes_by_function[function] += n

    def count_inner(self, function: str) -> None:
        """Count one inner call of a tool_mobile batch."""
        with self._count_lock:
            self.inner_requests_by_function[function] += 1

    def reset_counts(self) -> None:
        """Zero every request counter."""
        with self._count_lock:
            self.request_count = 0
            self.requests_by_function.clear()
            self.bytes_served = 0
            self.bytes_by_function.clear()
            self.inner_requests_by_function.clear()

    def fail_next(self, function: str, n: int = 1, status: int | str = 503) -> None:
        """The next `n` requests for `function` fail before Moodle sees them.

        `status` is an HTTP status (500, 502, 503, 504...) answered with an HTML body, or
        "reset" to close the connection without an answer. `function` is a wsfunction,
        "*" for any server.php request, or "login/token.php".
        """
        if status != "reset" and not isinstance(status, int):
            raise ValueError(f"fail_next status must be an HTTP status or 'reset', not {status!r}")
        with self._count_lock:
            self._faults.setdefault(function, []).extend([status] * n)

    def take_fault(self, function: str | None) -> int | str | None:
        """The pending fault for `function` (or '*'), consumed; None if none."""
        with self._count_lock:
            for key in (function or "", "*"):
                pending = self._faults.get(key)
                if pending:
                    return pending.pop(0)
        return None

    def clear_faults(self) -> None:
        """Forget every pending fault."""
        with self._count_lock:
            self._faults.clear()

    # --- small lookups used by several functions -------------------------------
    def course_activities(self, courseid: int) -> list[Activity]:
        """The course's modules in section order."""
        course = self.courses[courseid]
        return [self.activities[cmid] for s in course.sections for cmid in s.cmids]

    def user_company_rows(self, userid: int) -> list[CompanyUser]:
        """The user's company_users rows."""
        return [cu for cu in self.company_users if cu.userid == userid]

    def department_rows(self, departmentid: int) -> list[CompanyUser]:
        """The company_users rows directly in `departmentid`."""
        return [cu for cu in self.company_users if cu.departmentid == departmentid]

    def license_used(self, licenseid: int) -> int:
        """Seats allocated on licence `licenseid`."""
        return sum(1 for a in self.allocations if a.licenseid == licenseid)
