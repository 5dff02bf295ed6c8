"""The server.php pipeline, in Moodle's order (webservice_rest_server::run).

parse (reserved parameters out) -> authenticate the token (invalidtoken, expired,
maintenance, user state, webservice/rest:use) -> function name present and registered ->
function in the token's service -> validate_parameters -> execute -> clean_returnvalue.
Maintenance sits where webservice_server::authenticate_user() raises it: right after the
token lookup, for users without moodle/site:maintenanceaccess.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from moodle_ws.sandbox.context import Call, Settings
from moodle_ws.sandbox.exceptions import (
    InvalidParameter,
    MoodleException,
    PHPError,
    SandboxThrowable,
    access_exception,
    missing_record,
)
from moodle_ws.sandbox.model import Token, User
from moodle_ws.sandbox.phpvalue import clean_param, php_empty, php_str
from moodle_ws.sandbox.site import Site
from moodle_ws.sandbox.spec import FunctionSpec, Node, companion_specs, core_specs, iomad_specs
from moodle_ws.sandbox.validate import clean_returnvalue, validate_parameters

Impl = Callable[..., Any]

NOT_ALLOWED = """Access to the function {}() is not allowed.
                     There could be multiple reasons for this:
                     1. The service linked to the user token does not contain the function.
                     2. The service is user-restricted and the user is not listed.
                     3. The service is IP-restricted and the user IP is not listed.
                     4. The service is time-restricted and the time has expired.
                     5. The token is time-restricted and the time has expired.
                     6. The service requires a specific capability which the user does not have.
                     7. The function is called with username/password (no user token is sent)
                     and none of the services has the function to allow the user.
                     These settings can be found in Administration > Site administration
                     > Server > Web services > External services and Manage tokens."""

USER_STATE = {
    "wsaccessuserdeleted": "deleted",
    "wsaccessuserunconfirmed": "unconfirmed",
    "wsaccessusersuspended": "suspended",
    "wsaccessuserexpired": "password expired",
    "wsaccessusernologin": "nologin authentication",
}


# Registered on a real site but not implemented here: they exist so that calling them
# without having them in the service gives accessexception, not invalidrecord.
OTHER_CORE = (
    "core_user_delete_users",
    "core_user_get_course_user_profiles",
    "core_enrol_get_users_courses",
    "core_course_get_categories",
    "core_group_get_course_groups",
    "core_message_get_messages",
    "core_completion_update_activity_completion_status_manually",
    "core_completion_mark_course_self_completed",
    "mod_assign_get_assignments",
)
OTHER_IOMAD = tuple(
    "block_iomad_company_admin_" + n
    for n in (
        "create_companies",
        "edit_companies",
        "get_company_courses",
        "move_users",
        "unassign_users",
        "enrol_users",
        "check_token",
        "create_licenses",
        "edit_licenses",
        "delete_licenses",
    )
)


@dataclass(frozen=True)
class Registered:
    """A row of external_functions; `spec` None: registered but not implemented here."""

    spec: FunctionSpec | None
    impl: Impl | None
    version: str


def registered(site: Site) -> dict[str, Registered]:
    """The functions in the site's external_functions table, given its knobs."""
    from moodle_ws.sandbox import impl  # the implementations import this module's helpers

    key = (
        site.iomad_installed,
        site.companion_installed,
        site.companion_prefix,
        site.update_users_warnings,
    )
    cache = site._registry
    if cache and cache[0] == key:
        return cache[1]
    from moodle_ws.sandbox.site import COMPONENT_VERSIONS, CORE_VERSION

    out: dict[str, Registered] = {}
    for name, spec in core_specs().items():
        if name == "core_user_update_users" and not site.update_users_warnings:
            spec = replace(spec, returns=None)  # Moodle < 4.0 returned nothing
        out[name] = Registered(
            spec, impl.CORE[name], COMPONENT_VERSIONS.get(spec.component, CORE_VERSION)
        )
    out.update((name, Registered(None, None, CORE_VERSION)) for name in OTHER_CORE)
    if site.iomad_installed:
        for name, spec in iomad_specs().items():
            out[name] = Registered(spec, impl.IOMAD[name], COMPONENT_VERSIONS[spec.component])
        iomad_version = COMPONENT_VERSIONS["block_iomad_company_admin"]
        out.update((name, Registered(None, None, iomad_version)) for name in OTHER_IOMAD)
    if site.companion_installed:
        prefix = site.companion_prefix
        for name, spec in companion_specs(prefix).items():
            short = name[len(prefix) + 1 :]
            out[name] = Registered(spec, impl.COMPANION[short], COMPONENT_VERSIONS["companion"])
    site._registry = (key, out)
    return out


def authenticate(site: Site, token_value: Any) -> tuple[Token, User]:
    """webservice_server::authenticate_user() for a permanent token."""
    token = site.tokens.get(token_value) if isinstance(token_value, str) else None
    if token is None:
        raise MoodleException(
            "invalidtoken", "Invalid token - token not found", module="webservice"
        )
    if token.validuntil and token.validuntil < site.now():
        with site.lock:
            site.tokens.pop(token.token, None)
        raise access_exception(
            "Invalid token - token expired - check validuntil time for the token"
        )
    user = site.users.get(token.userid)
    if user is None:
        raise missing_record("user", "id = ?", [token.userid])
    if site.maintenance and not site.has_capability(user.id, "moodle/site:maintenanceaccess"):
        raise MoodleException(
            "sitemaintenance",
            "The site is undergoing maintenance and is currently not available",
            module="admin",
        )
    state = None
    if user.deleted:
        state = "wsaccessuserdeleted"
    elif not user.confirmed:
        state = "wsaccessuserunconfirmed"
    elif user.suspended:
        state = "wsaccessusersuspended"
    elif user.id in site.password_expired_users:
        state = "wsaccessuserexpired"
    elif user.auth == "nologin":
        state = "wsaccessusernologin"
    if state:
        raise MoodleException(
            state,
            f"Refused web service access for {USER_STATE[state]} username: {user.username}",
            module="webservice",
        )
    if not site.has_capability(user.id, "webservice/rest:use"):
        raise access_exception(
            "You are not allowed to use the rest protocol (missing capability: webservice/rest:use)"
        )
    return token, user


def load_function(site: Site, name: Any, token: Token, user: User) -> Registered:
    """webservice_server::load_function_info(): present, registered, in the service."""
    if php_empty(name):
        raise InvalidParameter("Missing function name")
    name = php_str(name)
    reg = registered(site).get(name)
    if reg is None:
        raise missing_record("external_functions", "name = ?", [name])
    service = site.services.get(token.serviceid)
    if service is None or not service.enabled or name not in service.functions:
        raise access_exception(NOT_ALLOWED.format(name))
    if reg.spec is None:
        raise not_implemented(name)
    return reg


def not_implemented(name: str) -> PHPError:
    """The PHP Error a registered function the sandbox does not implement raises."""
    return PHPError(f"Call to undefined method sandbox::{name}() (not implemented by the sandbox)")


def execute(call: Call, reg: Registered, params: Any) -> Any:
    """validate_parameters, run, clean_returnvalue; returns the cleaned value."""
    assert reg.spec is not None and reg.impl is not None
    args = validate_parameters(reg.spec.parameters, params)
    with call.site.lock:
        result = reg.impl(call, **args)
    returns: Node | None = reg.spec.returns
    return None if returns is None else clean_returnvalue(returns, result)


def read_settings(get: dict, post: dict) -> Settings:
    """set_web_service_call_settings(): moodlewssetting* via optional_param, then removed."""
    values: dict[str, Any] = {}
    for name, ptype, default in (
        ("raw", "bool", False),
        ("fileurl", "bool", True),
        ("filter", "bool", False),
        ("lang", "lang", ""),
        ("timezone", "timezone", ""),
    ):
        key = "moodlewssetting" + name
        raw = post.get(key, get.get(key))
        get.pop(key, None)
        post.pop(key, None)
        if raw is None or isinstance(raw, dict):
            values[name] = default
        else:
            cleaned = clean_param(raw, ptype)
            values[name] = bool(cleaned) if ptype == "bool" else cleaned
    return Settings(
        raw=values["raw"], filter=values["filter"], fileurl=values["fileurl"], lang=values["lang"]
    )


@dataclass
class Outcome:
    """What server.php answers: the format, and either a cleaned value or an error."""

    fmt: str
    returns: Node | None = None
    value: Any = None
    error: SandboxThrowable | None = None


def serve(site: Site, params: dict, settings: Settings) -> Outcome:
    """Run one server.php request whose merged GET+POST (settings already out) is `params`."""
    fmt_raw = params.pop("moodlewsrestformat", None)
    fmt = fmt_raw if fmt_raw in ("json", "xml") else "xml"
    token_value = params.pop("wstoken", None)
    function = params.pop("wsfunction", None)
    try:
        token, user = authenticate(site, token_value)
        reg = load_function(site, function, token, user)
        call = Call(site, user, token.serviceid, token.token, settings)
        return Outcome(fmt, reg.spec.returns if reg.spec else None, execute(call, reg, params))
    except SandboxThrowable as exc:
        return Outcome(fmt, error=exc)
