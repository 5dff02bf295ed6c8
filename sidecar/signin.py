"""Checking a sign-in: local accounts first, then Moodle's login/token.php.

For Moodle, the username and password go to `login/token.php` for `dashboard.
moodle_service`; the token it answers asks `core_webservice_get_site_info` whether the
user is a site administrator, and is then dropped (never stored, logged or reused).
Nothing of the password is kept. Only site administrators are let in for now: IOMAD
company managers need the per-company pages of a later release (their companies would
come from `block_iomad_company_admin_get_user_companies`, then fill
`Principal.companies`).
"""

import logging
from dataclasses import dataclass, replace

from moodle_ws.client import ClientSettings, MoodleClient
from moodle_ws.errors import LoginError, MoodleError, MoodleUnavailable
from sidecar import access
from sidecar.access import Principal
from sidecar.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """`principal` on success; otherwise `status` (401 wrong credentials, 403 not an
    administrator, 503 Moodle unreachable) and what the form says."""

    principal: Principal | None = None
    status: int = 401
    message: str = "Wrong username or password."


WRONG = Outcome()
NOT_ADMIN = Outcome(
    status=403,
    message="This Moodle account is not a site administrator, so it cannot use this dashboard.",
)
UNREACHABLE = Outcome(
    status=503,
    message="Moodle cannot be reached to check the password. Try again in a moment, "
    "or sign in with a local account.",
)


def check(config: Config, username: str, password: str) -> Outcome:
    """Who `username` with `password` is; never raises for a refused sign-in."""
    if not username or not password:
        return WRONG
    if access.verify_account(username, password):
        return Outcome(Principal(username, "session", True, source="local"))
    service = config.dashboard.moodle_service
    if config.moodle is None or not service:
        return WRONG
    return _moodle(config, username, password, service)


def _moodle(config: Config, username: str, password: str, service: str) -> Outcome:
    m = config.moodle
    settings = ClientSettings(
        url=m.url, token="", timeout=m.timeout, verify_tls=m.verify_tls, attempts=1
    )
    client = MoodleClient(settings)
    try:
        try:
            token = client.login(username, password, service)["token"]
        except LoginError as exc:
            if exc.errorcode != "invalidlogin":  # the site, not the user: tell the admin
                log.warning("dashboard sign-in via Moodle service %s refused: %s", service, exc)
            return WRONG
        user_client = MoodleClient(replace(settings, token=token), session=client.session)
        info = user_client.call("core_webservice_get_site_info")
        del token, user_client  # used once, for this question only
    except MoodleUnavailable as exc:
        log.warning("dashboard sign-in: Moodle unreachable: %s", exc)
        return UNREACHABLE
    except MoodleError as exc:
        log.warning("dashboard sign-in: Moodle answered an error: %s", exc)
        return UNREACHABLE
    finally:
        client.close()
    if not isinstance(info, dict) or info.get("userissiteadmin") is not True:
        return NOT_ADMIN
    name = str(info.get("username") or username)
    return Outcome(Principal(name, "session", True, source="moodle"))
