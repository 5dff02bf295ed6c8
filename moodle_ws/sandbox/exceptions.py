"""The exceptions a sandbox function raises, carrying what Moodle puts on the wire.

Each has the PHP class name (4.5+ namespaced, and the 4.4 alias), `errorcode`, the
module (for the docs link of tool_mobile's inner errors), the English message and the
debuginfo Moodle would show with debugging on. `PHPError` is a plain PHP Throwable:
no errorcode, no debuginfo.
"""

from typing import Any

from moodle_ws.sandbox.phpvalue import var_export_list

# Class names that Moodle 4.5 moved into namespaces: new name -> pre-4.5 name.
LEGACY_CLASS = {
    "core\\exception\\moodle_exception": "moodle_exception",
    "core\\exception\\invalid_parameter_exception": "invalid_parameter_exception",
    "core\\exception\\invalid_response_exception": "invalid_response_exception",
    "core\\exception\\required_capability_exception": "required_capability_exception",
    "core\\exception\\require_login_exception": "require_login_exception",
    "core\\exception\\coding_exception": "coding_exception",
}

MOODLE = "core\\exception\\moodle_exception"


class SandboxThrowable(Exception):
    """Anything the REST server's exception handler turns into an error body."""

    exception_class = "Error"
    errorcode: str | None = None
    module = "error"
    debuginfo: str | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class PHPError(SandboxThrowable):
    """A PHP `Error`/`TypeError`: the body has `exception` and `message` only."""

    def __init__(self, message: str, exception_class: str = "Error"):
        super().__init__(message)
        self.exception_class = exception_class


class MoodleException(SandboxThrowable):
    """A `moodle_exception` (or subclass) with its errorcode, module and debuginfo."""

    def __init__(
        self,
        errorcode: str,
        message: str,
        *,
        module: str = "error",
        debuginfo: str | None = None,
        exception_class: str = MOODLE,
    ):
        super().__init__(message)
        self.errorcode = errorcode
        self.module = module
        self.debuginfo = debuginfo
        self.exception_class = exception_class


class InvalidParameter(MoodleException):
    """`invalid_parameter_exception`: the detail lives in debuginfo only."""

    MESSAGE = "Invalid parameter value detected"

    def __init__(self, debuginfo: str):
        super().__init__(
            "invalidparameter",
            self.MESSAGE,
            module="debug",
            debuginfo=debuginfo,
            exception_class="core\\exception\\invalid_parameter_exception",
        )


class InvalidResponse(MoodleException):
    """`invalid_response_exception`: the function's answer broke its declaration."""

    MESSAGE = "Invalid response value detected"

    def __init__(self, debuginfo: str):
        super().__init__(
            "invalidresponse",
            self.MESSAGE,
            module="debug",
            debuginfo=debuginfo,
            exception_class="core\\exception\\invalid_response_exception",
        )


def access_exception(debuginfo: str) -> MoodleException:
    """`webservice_access_exception` (its class name was never namespaced)."""
    return MoodleException(
        "accessexception",
        "Access control exception",
        module="webservice",
        debuginfo=debuginfo,
        exception_class="webservice_access_exception",
    )


def missing_record(table: str, where: str, params: list[Any]) -> MoodleException:
    """`dml_missing_record_exception` for a MUST_EXIST get_record on `table`."""
    code = {"user": "invaliduser", "course_modules": "invalidcoursemodule"}.get(
        table, "invalidrecord"
    )
    message = (
        "Invalid user"
        if code == "invaliduser"
        else (f"Can't find data record in database table {table}.")
    )
    sql = f"SELECT * FROM {{{table}}} WHERE {where}"
    return MoodleException(
        code,
        message,
        debuginfo=f"{sql}\n[{var_export_list(params)}]",
        exception_class="dml_missing_record_exception",
    )


def nopermissions(capability_name: str) -> MoodleException:
    """`required_capability_exception`: the capability's display name, no debuginfo."""
    return MoodleException(
        "nopermissions",
        f"Sorry, but you do not currently have permissions to do that ({capability_name}).",
        exception_class="core\\exception\\required_capability_exception",
    )


def require_login(debuginfo: str) -> MoodleException:
    """`require_login_exception` ('Not enrolled', 'Course is hidden', ...)."""
    return MoodleException(
        "requireloginerror",
        "Course or activity not accessible.",
        debuginfo=debuginfo,
        exception_class="core\\exception\\require_login_exception",
    )


def coding_error(hint: str, debuginfo: str | None = None) -> MoodleException:
    """`coding_exception`: 'Coding error detected, ...' plus the hint."""
    return MoodleException(
        "codingerror",
        f"Coding error detected, it must be fixed by a programmer: {hint}",
        module="debug",
        debuginfo=debuginfo,
        exception_class="core\\exception\\coding_exception",
    )


def no_string(
    errorcode: str, module: str = "error", debuginfo: str | None = None
) -> MoodleException:
    """A moodle_exception whose errorcode has no language string: message is 'module/code'."""
    return MoodleException(errorcode, f"{module}/{errorcode}", module=module, debuginfo=debuginfo)
