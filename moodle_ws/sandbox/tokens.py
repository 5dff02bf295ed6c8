"""login/token.php: username + password + service shortname -> a token.

Its errors have the AJAX shape `{error, errorcode, stacktrace, debuginfo,
reproductionlink}` (HTTP 200). An existing valid token for the user and service is
reused; otherwise one is created if the user may (site admins only for the mobile
service), valid 12 weeks.
"""

import random
from typing import Any

from moodle_ws.sandbox.model import Token
from moodle_ws.sandbox.phpvalue import clean_param, php_int
from moodle_ws.sandbox.render import json_encode
from moodle_ws.sandbox.site import Site

MOBILE_SERVICE = "moodle_mobile_app"
TOKEN_DURATION = 12 * 7 * 86400
HEADERS = [
    ("Content-Type", "application/json; charset=utf-8"),
    ("Access-Control-Allow-Origin", "*"),
]


class TokenError(Exception):
    def __init__(self, errorcode: str, message: str):
        super().__init__(message)
        self.errorcode, self.message = errorcode, message


def _required(get: dict, post: dict, name: str, ptype: str) -> str:
    value = post.get(name, get.get(name))
    if value is None:
        raise TokenError("missingparam", f"A required parameter ({name}) was missing")
    if isinstance(value, dict):
        value = ""
    return clean_param(value, ptype)


def _issue(site: Site, userid: int, service) -> Token:
    now = site.now()
    mine = [t for t in site.tokens.values() if t.userid == userid and t.serviceid == service.id]
    for t in list(mine):
        if t.validuntil and t.validuntil < now:
            site.tokens.pop(t.token, None)
            mine.remove(t)
    if mine:
        return max(mine, key=lambda t: t.timecreated)
    official = service.shortname == MOBILE_SERVICE
    may = (official and site.has_capability(userid, "moodle/webservice:createmobiletoken")) or (
        userid not in site.siteadmins
        and site.has_capability(userid, "moodle/webservice:createtoken")
    )
    if not may:
        raise TokenError(
            "cannotcreatetoken",
            f"No permission to create web service token for the service {service.shortname}.",
        )
    rng = random.Random(f"{site.seed}:{len(site.tokens)}:{userid}:{service.id}")
    token = Token(
        token=f"{rng.getrandbits(128):032x}",
        userid=userid,
        serviceid=service.id,
        privatetoken="".join(
            rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
            for _ in range(64)
        ),
        validuntil=now + TOKEN_DURATION,
        timecreated=now,
    )
    site.tokens[token.token] = token
    return token


def _token(site: Site, get: dict, post: dict) -> dict[str, Any]:
    if not site.webservices_enabled:
        raise TokenError(
            "enablewsdescription", "Web services must be enabled in Advanced features."
        )
    check = post.get("appsitecheck", get.get("appsitecheck", 0))
    if php_int(check if not isinstance(check, dict) else 0):
        return {"appsitecheck": "ok"}
    username = _required(get, post, "username", "username")
    password = _required(get, post, "password", "raw")
    shortname = _required(get, post, "service", "alphanumext")
    username = username.strip().lower()
    uid = site.usernames.get(username)
    user = site.users.get(uid) if uid is not None else None
    if (
        user is None
        or user.deleted
        or user.suspended
        or user.auth == "nologin"
        or not user.password
        or user.password != password
    ):
        raise TokenError("invalidlogin", "Invalid login, please try again")
    if site.maintenance and not site.has_capability(user.id, "moodle/site:maintenanceaccess"):
        raise TokenError(
            "sitemaintenance", "The site is undergoing maintenance and is currently not available"
        )
    if not user.confirmed:
        raise TokenError("usernotconfirmed", f"Could not confirm {user.username}")
    service = next(
        (s for s in site.services.values() if s.shortname == shortname and s.enabled), None
    )
    if service is None:
        raise TokenError(
            "servicenotavailable",
            "Web service is not available. (It doesn't exist or might be disabled.)",
        )
    if service.restrictedusers:
        raise TokenError(
            "usernotallowed",
            "The user is not allowed for this service. First you need to allow this user on "
            f"the {service.shortname}'s allowed users administration page.",
        )
    with site.lock:
        token = _issue(site, user.id, service)
    private = token.privatetoken if site.https and user.id not in site.siteadmins else None
    return {"token": token.token, "privatetoken": private}


def token_php(site: Site, get: dict, post: dict) -> tuple[int, list[tuple[str, str]], str]:
    """Answer one login/token.php request (status, headers, body)."""
    try:
        body = json_encode(_token(site, get, post))
    except TokenError as exc:
        body = json_encode(
            {
                "error": exc.message,
                "errorcode": exc.errorcode,
                "stacktrace": None,
                "debuginfo": None,
                "reproductionlink": None,
            }
        )
    return 200, list(HEADERS), body
