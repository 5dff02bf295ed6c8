"""`Call`: what a function implementation sees (site, token user, external settings).

It also carries the helpers every Moodle external function leans on: get_course /
get_user with MUST_EXIST, validate_context, require_capability (with the capability's
display name), and util::format_string / format_text under the moodlewssetting* flags.
"""

import re
from dataclasses import dataclass
from html import escape

from moodle_ws.sandbox.exceptions import (
    MoodleException,
    missing_record,
    nopermissions,
    require_login,
)
from moodle_ws.sandbox.model import Course, User
from moodle_ws.sandbox.site import Site

SITEID = 1
_HTML_SPECIAL = re.compile("[<>&]")

# Capability display names (English lang strings) used in nopermissions messages. The
# IOMAD and companion ones are the sandbox's wording: the reference does not give them.
CAPABILITY_NAMES = {
    "moodle/course:viewparticipants": "View participants",
    "moodle/site:viewparticipants": "View site participants",
    "moodle/role:review": "Review permissions for others",
    "moodle/course:enrolreview": "Review course enrolments",
    "moodle/site:accessallgroups": "Access all groups",
    "moodle/course:view": "View courses without participation",
    "moodle/user:update": "Update user profiles",
    "moodle/user:create": "Create users",
    "moodle/site:sendmessage": "Send messages to any user",
    "report/progress:view": "View activity completion reports",
    "report/completion:view": "View course completion report",
    "block/iomad_company_admin:company_add": "Add a company",
    "block/iomad_company_admin:edit_all_departments": "Edit all departments",
    "block/iomad_company_admin:editusers": "Edit users",
    "block/iomad_company_admin:company_view_all": "View all companies",
    "block/iomad_company_admin:view_licenses": "View licenses",
    "block/iomad_company_admin:allocate_licenses": "Allocate licenses",
    "block/iomad_company_admin:company_course_users": "Assign users to courses",
    "block/iomad_company_admin:assign_company_manager": "Assign company managers",
    "local/report_users:clearentries": "Clear user report entries",
    "local/iomad:email_list": "List email templates",
    "local/iomad:email_templateset_list": "List email template sets",
    "local/manireports:manage": "Manage ManiReports",
}


@dataclass
class Settings:
    """external_settings, from moodlewssetting* (or tool_mobile's per-request setting*)."""

    raw: bool = False
    filter: bool = False
    fileurl: bool = True
    lang: str = ""


class Call:
    """One function execution on behalf of the token user."""

    def __init__(self, site: Site, user: User, serviceid: int, token: str, settings: Settings):
        self.site = site
        self.user = user
        self.serviceid = serviceid
        self.token = token
        self.settings = settings
        self.now = site.now()
        self.wwwroot = site.wwwroot

    @property
    def lang(self) -> str:
        """The call's language: moodlewssettinglang, else the user's."""
        return self.settings.lang or self.user.lang or "en"

    # --- access -------------------------------------------------------------
    def has_capability(self, capability: str) -> bool:
        """True if the token user holds `capability` (site admins hold all)."""
        return self.site.has_capability(self.user.id, capability)

    def require_capability(self, capability: str) -> None:
        """Raises nopermissions naming the capability as Moodle's English strings do."""
        if not self.has_capability(capability):
            raise nopermissions(CAPABILITY_NAMES.get(capability, capability))

    def get_course(self, courseid: object) -> Course:
        """`get_course()`: MUST_EXIST -> invalidrecord (table course)."""
        course = self.site.courses.get(courseid) if isinstance(courseid, int) else None
        if course is None:
            raise missing_record("course", "id = ?", [courseid])
        return course

    def get_user(self, userid: object) -> User:
        """`core_user::get_user(MUST_EXIST)` + `require_active_user()`."""
        if isinstance(userid, int) and userid in (-10, -20):  # noreply / support users
            raise MoodleException("invaliduser", "Invalid user")
        user = self.site.users.get(userid) if isinstance(userid, int) else None
        if user is None:
            raise missing_record("user", "id = ?", [userid])
        if user.deleted:
            raise MoodleException(
                "userdeleted", "This user account has been deleted", module="moodle"
            )
        if not user.confirmed:
            raise MoodleException(
                "usernotconfirmed", f"Could not confirm {user.username}", module="moodle"
            )
        if user.id == self.site.guest_id:
            raise MoodleException("guestsarenotallowed", "The guest user is not allowed to do this")
        return user

    def can_enter(self, course: Course) -> str | None:
        """None if require_login() lets the token user into `course`, else why not."""
        if course.id == SITEID:
            return None
        if not course.visible and not self.has_capability("moodle/course:viewhiddencourses"):
            return "Course is hidden"
        if self.has_capability("moodle/course:view"):
            return None
        e = self.site.enrolments.get(course.id, {}).get(self.user.id)
        if e is not None and self.site.is_active_enrolment(e, self.now):
            return None
        return "Not enrolled"

    def require_password_changed(self) -> None:
        """require_login()'s forced-change check: a user whose `auth_forcepasswordchange`
        preference is set (a temporary password) gets `forcepasswordchangenotice` from any
        function that validates a context, until the password is changed."""
        if self.user.preferences.get("auth_forcepasswordchange") == "1":
            if self.user.auth in ("manual", "email"):
                raise MoodleException(
                    "forcepasswordchangenotice", "You must change your password to proceed."
                )
            raise MoodleException(
                "nopasswordchangeforced",
                "You cannot proceed without changing your password, however there is no "
                "available page for changing it. Please contact your Moodle Administrator.",
                module="auth",
            )

    def validate_context(self, course: Course) -> None:
        """`external_api::validate_context(course context)`: raises requireloginerror."""
        self.require_password_changed()
        reason = self.can_enter(course)
        if reason:
            raise require_login(reason)

    def validate_context_wrapped(self, course: Course) -> None:
        """validate_context re-thrown as errorcoursecontextnotvalid (enrol, course functions)."""
        reason = self.can_enter(course)
        if reason:
            raise MoodleException(
                "errorcoursecontextnotvalid",
                f"You cannot execute functions in the course context (course id:{course.id}). "
                "The context error message was: Course or activity not accessible.",
                module="webservice",
            )

    # --- text ---------------------------------------------------------------
    def format_string(self, text: str) -> str:
        """`util::format_string`: raw as-is; else filtered, tags stripped, & escaped."""
        if self.settings.raw or not _HTML_SPECIAL.search(text):
            return text
        if self.settings.filter:
            text = multilang(text, self.lang)
        text = re.sub(r"<[^>]*>", "", text).replace("<", "&lt;").replace(">", "&gt;")
        return re.sub(r"&(?!#?[a-zA-Z0-9]+;)", "&amp;", text)

    def format_text(self, text: str, fmt: int) -> tuple[str, int]:
        """`util::format_text`: the text as HTML (format 1) unless moodlewssettingraw."""
        if self.settings.fileurl:
            text = text.replace("@@PLUGINFILE@@", f"{self.wwwroot}/webservice/pluginfile.php")
        if self.settings.raw:
            return text, fmt
        if self.settings.filter:
            text = multilang(text, self.lang)
        if fmt == 1 or fmt == 4:
            return text, 1
        if fmt == 2:
            text = escape(text, quote=False)
        return f'<div class="text_to_html">{text.replace(chr(10), "<br />")}</div>', 1

    def user_picture(self, user: User, small: bool = False) -> str:
        """The user's picture URL (f1, or f2 for `small`), as theme/image.php serves it."""
        size = "f2" if small else "f1"
        return f"{self.wwwroot}/theme/image.php/boost/core/1717430000/u/{size}"


_SPAN = re.compile(
    r'<span(?=[^>]*class="multilang")[^>]*lang="([a-zA-Z0-9_-]+)"[^>]*>(.*?)</span>', re.S
)


def multilang(text: str, lang: str) -> str:
    """The multilang filter: keep the span in `lang` (else the first) of each run."""
    if "multilang" not in text:
        return text
    spans = list(_SPAN.finditer(text))
    if not spans:
        return text
    chosen = next((m for m in spans if m.group(1) == lang), spans[0])
    return text[: spans[0].start()] + chosen.group(2) + text[spans[-1].end() :]
