"""The MoodleError tree: every failure of a web-service call, mapped by `errorcode`.

Moodle's exception class names changed in 4.5 (they moved into namespaces), so the
mapping is keyed on `errorcode` only. Each message says what an administrator does next.
Transient failures (`MoodleUnavailable` and its subclasses) are the only ones retried.
"""

import re
from collections.abc import Mapping
from typing import Any

SERVICES_PAGE = "Site administration > Server > Web services > External services"
TOKENS_PAGE = "Site administration > Server > Web services > Manage tokens"


class MoodleError(Exception):
    """Anything that went wrong talking to Moodle."""


class MoodleUnavailable(MoodleError):
    """Network error, timeout, HTTP 5xx or maintenance mode: retry later."""


class NotSent(MoodleUnavailable):
    """The connection failed before the request went out (refused, DNS, connect timeout):
    Moodle cannot have run the call, so even a write may be tried again."""


class WebServicesDisabled(MoodleError):
    """HTTP 403 with an empty body: web services or the REST protocol are off."""

    def __init__(self, url: str):
        super().__init__(
            f"{url}: web services or the REST protocol are disabled on this Moodle site: enable "
            "them under Site administration > Advanced features (Enable web services) and "
            "Site administration > Server > Web services > Manage protocols (REST)"
        )


class MoodleProtocolError(MoodleError):
    """The answer is not a Moodle web-service response (wrong URL, proxy page, XML)."""


class MoodleAPIError(MoodleError):
    """Moodle answered with its error JSON."""

    hint = ""

    def __init__(
        self,
        function: str,
        errorcode: str | None,
        message: str,
        debuginfo: str | None = None,
        *,
        hint: str | None = None,
    ):
        self.function = function
        self.errorcode = errorcode
        self.moodle_message = message
        self.debuginfo = debuginfo
        hint = self.hint if hint is None else hint
        text = f"{function}: {errorcode or 'error'}: {message}"
        if debuginfo:
            text += f" ({debuginfo})"
        if hint:
            text += f": {hint}"
        super().__init__(text)


class SiteMaintenance(MoodleAPIError, MoodleUnavailable):
    hint = "the site is in maintenance mode; the call is retried later"


class InvalidToken(MoodleAPIError):
    hint = f"Moodle does not know this token: set moodle.token to a token from {TOKENS_PAGE}"


class AccessDenied(MoodleAPIError):
    """`accessexception`: function not in the token's service, expired token, no rest:use."""


class FunctionNotInService(AccessDenied):
    pass


class FunctionNotInstalled(MoodleAPIError):
    pass


class TokenUserRefused(MoodleAPIError):
    hint = "the token's Moodle user is suspended, deleted, unconfirmed or cannot log in: fix it"


class MissingCapability(MoodleAPIError):
    def __init__(self, function, errorcode, message, debuginfo=None, *, capability: str = ""):
        self.capability = capability
        super().__init__(
            function, errorcode, message, debuginfo,
            hint=f"give the token's user the capability {capability} (a role at system level)",
        )  # fmt: skip


class CompletionNotEnabled(MoodleAPIError):
    pass


class NoCompletionCriteria(MoodleAPIError):
    pass


class NotEnrolled(MoodleAPIError):
    hint = "the user is not enrolled (or not tracked) in the course"


class CourseNotAccessible(MoodleAPIError):
    hint = "the token's user cannot enter the course: enrol it or give it moodle/course:view"


class RecordNotFound(MoodleAPIError):
    pass


class InvalidParameter(MoodleAPIError):
    hint = "the request does not match the function's parameters (an older Moodle, or our bug)"


class InvalidResponse(MoodleAPIError):
    hint = "Moodle's own answer failed its return description: check the plugin or data"


class ServerError(MoodleAPIError):
    """A PHP error that is not a Moodle exception (no errorcode): a server-side bug."""

    hint = "a PHP error inside Moodle: see the web server's error log"


# Display names Moodle puts in the `nopermissions` message, mapped to capability names.
CAPABILITY_NAMES = {
    "View participants": "moodle/course:viewparticipants",
    "View activity completion reports": "report/progress:view",
    "View course completion report": "report/completion:view",
    "Update user profiles": "moodle/user:update",
    "Create users": "moodle/user:create",
    "Send messages to any user": "moodle/site:sendmessage",
    "Review permissions for others": "moodle/role:review",
    "Review course enrolments": "moodle/course:enrolreview",
    "View courses without participation": "moodle/course:view",
}

# Capabilities each function needs, for when the display name is in another language.
FUNCTION_CAPABILITIES = {
    "core_enrol_get_enrolled_users": "moodle/course:viewparticipants",
    "core_completion_get_activities_completion_status": "report/progress:view",
    "core_completion_get_course_completion_status": "report/completion:view",
    "core_user_update_users": "moodle/user:update",
    "core_user_create_users": "moodle/user:create",
    "core_message_send_instant_messages": "moodle/site:sendmessage",
    "block_iomad_company_admin_get_companies": "block/iomad_company_admin:company_add",
    "block_iomad_company_admin_get_departments": "block/iomad_company_admin:edit_all_departments",
    "block_iomad_company_admin_get_department_users": "block/iomad_company_admin:editusers",
    "block_iomad_company_admin_get_license_info": "block/iomad_company_admin:view_licenses",
    "block_iomad_company_admin_get_license_from_id": "block/iomad_company_admin:allocate_licenses",
}

_PARENS = re.compile(r"\(([^()]*)\)\.?\s*$")


def _capability(function: str, message: str) -> str:
    m = _PARENS.search(message)
    shown = m.group(1) if m else ""
    name = CAPABILITY_NAMES.get(shown) or FUNCTION_CAPABILITIES.get(function)
    if name and shown and name != shown:
        return f"{name} ({shown})"
    return name or shown or "named in the message"


def error_from_body(
    function: str, body: Mapping[str, Any], params: Mapping[str, Any] | None = None
) -> MoodleAPIError:
    """The exception for one Moodle error JSON (outer, or inner from a batch call)."""
    code = body.get("errorcode")
    message = str(body.get("message") or "")
    debuginfo = body.get("debuginfo")
    params = params or {}
    args = (function, code, message, debuginfo)
    if code is None:
        return ServerError(function, None, message or str(body.get("exception")), debuginfo)
    if code == "invalidtoken":
        return InvalidToken(*args)
    if code == "accessexception":
        return FunctionNotInService(
            *args,
            hint=(
                f"add {function} to the external service of this token ({SERVICES_PAGE}); "
                "if it is there, the token may have expired or its user lacks webservice/rest:use"
            ),
        )
    if code == "invalidrecord" and "external_functions" in message:
        return FunctionNotInstalled(
            *args,
            hint=f"{function} is not on this Moodle site: install the plugin that provides it",
        )
    if code == "invalidrecordunknown":
        return RecordNotFound(
            *args,
            hint=f"{function} is not installed, or a course or user it names does not exist",
        )
    if code == "sitemaintenance":
        return SiteMaintenance(*args)
    if code.startswith("wsaccessuser") or code == "passwordisexpired":
        return TokenUserRefused(*args)
    if code == "nopermissions" or code == "required_capability_exception":
        return MissingCapability(*args, capability=_capability(function, message))
    if code == "cannotviewreport":
        course = params.get("courseid", "?")
        return CompletionNotEnabled(
            *args,
            hint=(
                f"enable completion tracking for course {course} (Site administration > "
                "Advanced features, and the course's settings), and give the token's user "
                "report/completion:view"
            ),
        )
    if code == "nocriteriaset":
        course = params.get("courseid", "?")
        return NoCompletionCriteria(
            *args, hint=f"set completion criteria for course {course} (Course completion settings)"
        )
    if code in ("usernotenroled", "notenroled"):
        return NotEnrolled(*args)
    if code in ("requireloginerror", "errorcoursecontextnotvalid"):
        return CourseNotAccessible(*args)
    if code in ("invalidrecord", "invalidrecordunknown", "invaliduser", "invalidcoursemodule"):
        return RecordNotFound(*args)
    if code == "invalidparameter":
        return InvalidParameter(*args)
    if code == "invalidresponse":
        return InvalidResponse(*args)
    return MoodleAPIError(*args)


class LoginError(MoodleError):
    """`login/token.php` refused: its own error shape, `{error, errorcode, ...}`."""

    HINTS = {
        "invalidlogin": "wrong username or password, or the account is locked",
        "servicenotavailable": "the service shortname is unknown or the service is disabled",
        "cannotcreatetoken": (
            f"this user may not create tokens here (site admins cannot): use {TOKENS_PAGE}"
        ),
        "usernotallowed": "the service is restricted and this user is not an authorised user",
        "enablewsdescription": "web services are disabled on the site",
        "missingparam": "username, password and service are all required",
    }

    def __init__(self, errorcode: str | None, message: str):
        self.errorcode = errorcode
        hint = self.HINTS.get(errorcode or "", "")
        super().__init__(f"login/token.php: {errorcode}: {message}" + (f": {hint}" if hint else ""))
