"""core_user_get_users and core_user_get_users_by_field (user/externallib.php)."""

import re
from typing import Any

from moodle_ws.sandbox.context import Call
from moodle_ws.sandbox.exceptions import InvalidParameter, coding_error, no_string
from moodle_ws.sandbox.impl.userdetails import Viewer, user_details
from moodle_ws.sandbox.phpvalue import clean_param, php_loose_eq, php_str

# core_user::get_property_type()
PROPERTY_TYPES = {
    "id": "int",
    "idnumber": "raw",
    "username": "username",
    "email": "raw_trimmed",
    "auth": "auth",
    "firstname": "notags",
    "lastname": "notags",
}


def sql_like(pattern: str) -> re.Pattern:
    """SQL LIKE (case-insensitive): % any run, _ one character, backslash escapes."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z", re.I | re.S)


def unsupported_key(key: str) -> dict[str, str]:
    """The invalidfieldparameter warning for a criteria key the function ignores."""
    return {
        "item": key,
        "warningcode": "invalidfieldparameter",
        "message": f"The search key '{key}' is not supported, "
        "look at the web service documentation",
    }


def key_once(used: set, key: str) -> None:
    """Raise keyalreadyset the second time a criteria key is seen."""
    if key in used:
        raise no_string("keyalreadyset", debuginfo=f"The key {key} can only be sent once")
    used.add(key)


def get_users(call: Call, criteria: list[dict]) -> dict[str, Any]:
    """core_user_get_users: AND of criteria, deleted users excluded, id order."""
    warnings: list[dict] = []
    used: set[str] = set()
    tests = []
    searched: list[str] = []
    for c in criteria:
        key = c["key"]
        key_once(used, key)
        if key not in PROPERTY_TYPES:
            warnings.append(unsupported_key(key))
            continue
        searched.append(key)
        value = clean_param(c["value"], PROPERTY_TYPES[key])
        if key in ("email", "firstname", "lastname"):
            rx = sql_like(php_str(value))
            tests.append(lambda u, k=key, rx=rx: rx.match(getattr(u, k)) is not None)
        else:
            tests.append(lambda u, k=key, v=value: php_loose_eq(php_str(getattr(u, k)), v))
    viewer = Viewer(call)
    users = []
    for user in sorted(call.site.users.values(), key=lambda u: u.id):
        if user.deleted or not all(t(user) for t in tests):
            continue
        details = user_details(viewer, user)
        # Returned only if every searched field is visible (and non-empty) to the caller.
        if details is not None and all(details.get(k) for k in searched):
            users.append(details)
    return {"users": users, "warnings": warnings}


def get_users_by_field(call: Call, field: str, values: list) -> list[dict]:
    """core_user_get_users_by_field: id order, unknown values missing."""
    if field not in ("id", "idnumber", "username", "email"):
        raise coding_error(
            "invalid field parameter",
            f"The search field '{field}' is not supported, look at the web service documentation",
        )
    ptype = PROPERTY_TYPES[field]
    cleaned = []
    for value in values:
        c = clean_param(value, ptype)
        if not php_loose_eq(value, c):
            raise InvalidParameter(
                f"The field '{field}' value is invalid: {php_str(value)}"
                f"(cleaned value: {php_str(c)})"
            )
        cleaned.append(c)
    site = call.site
    if field == "id":
        found = [site.users[i] for i in set(cleaned) if i in site.users]
    elif field == "username":
        found = [site.users[site.usernames[n]] for n in set(cleaned) if n in site.usernames]
    else:
        wanted = {php_str(v) for v in cleaned}
        found = [u for u in site.users.values() if getattr(u, field) in wanted]
    viewer = Viewer(call)
    out = []
    for user in sorted(found, key=lambda u: u.id):
        details = user_details(viewer, user)
        if details is not None and details.get(field):
            out.append(details)
    return out
