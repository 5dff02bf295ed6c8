"""Checking a sign-in: local accounts first, then Moodle's login/token.php.

For Moodle, the username and password go to `login/token.php` for `dashboard.
moodle_service`; the token it answers asks `core_webservice_get_site_info` who the user
is (userid, username, userissiteadmin), and is then dropped (never stored, logged or
reused). Nothing of the password is kept.

- A site administrator sees everything.
- An IOMAD company manager sees only their companies. IOMAD knows who manages what from
  its table company_users (managertype 1 company manager, 2 department manager), but none
  of its web-service functions returns managertype: get_department_users answers id,
  names, email, companyid and departmentid; get_user_companies answers the user's
  companies and departments; get_companies and get_departments know nothing of users
  (read in iomad/iomad: blocks/iomad_company_admin/externallib.php and db/services.php).
  Their roles (companymanager, departmentmanager) are assigned in IOMAD's company context,
  which no core function lists either. So the daemon cannot learn from Moodle alone who is
  a manager, and it does not guess: being in a company also holds for every learner.
  The site's administrator names them, `dashboard.company_managers` (Moodle usernames),
  and IOMAD says which companies: one `block_iomad_company_admin_get_user_companies`
  call with the daemon's own token for the signed-in userid. That is one request per
  sign-in, whatever the number of companies (the other way, get_departments then
  get_department_users over every department, reads every company's users: 2 requests
  and the whole site's membership, or 1 + 2 x companies for a per-company walk, 1,001 on a
  500-company site). A manager of a parent company is also in its child companies (IOMAD
  adds them there), so they see those too, as IOMAD shows them. A department manager
  named there sees their whole company: the dashboard's unit is the company.
- Anyone else is refused (403); a named manager who belongs to no company too.
"""

import logging
from dataclasses import dataclass, replace

from moodle_ws import iomad
from moodle_ws.client import ClientSettings, MoodleClient
from moodle_ws.errors import LoginError, MoodleError, MoodleUnavailable
from sidecar import access, moodle
from sidecar.access import Principal
from sidecar.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """`principal` on success; otherwise `status` (401 wrong credentials, 403 neither a site
    administrator nor a company manager, 503 Moodle unreachable) and what the form says."""

    principal: Principal | None = None
    status: int = 401
    message: str = "Wrong username or password."


WRONG = Outcome()
NOT_ADMIN = Outcome(
    status=403,
    message="This Moodle account is not a site administrator nor a company manager named in "
    "the daemon's [dashboard] company_managers, so it cannot use this dashboard.",
)
NO_COMPANY = Outcome(
    status=403,
    message="This Moodle account is named as a company manager but belongs to no IOMAD "
    "company, so there is nothing for it to see.",
)
UNREACHABLE = Outcome(
    status=503,
    message="Moodle cannot be reached to check the password. Try again in a moment, "
    "or sign in with a local account.",
)
NO_COMPANIES_ANSWER = Outcome(
    status=503,
    message="Moodle could not say which companies this account manages. Try again in a "
    "moment; if it persists, the daemon's log says why.",
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
    if not isinstance(info, dict):
        return NOT_ADMIN
    name = str(info.get("username") or username)
    if info.get("userissiteadmin") is True:
        return Outcome(Principal(name, "session", True, source="moodle"))
    if name.lower() not in config.dashboard.company_managers:
        return NOT_ADMIN
    return _manager(config, name, info.get("userid"))


def _manager(config: Config, name: str, userid) -> Outcome:
    """A named company manager: their companies, asked with the daemon's own token."""
    if not isinstance(userid, int) or userid <= 0:
        return NOT_ADMIN
    # one try, as for the password: someone waits at the form, a retry is theirs to make
    client = MoodleClient(replace(moodle.client_settings(config.moodle), attempts=1))
    try:
        found = iomad.user_companies(client, userid)
    except MoodleUnavailable as exc:
        log.warning("dashboard sign-in: Moodle unreachable: %s", exc)
        return UNREACHABLE
    except MoodleError as exc:
        log.warning("dashboard sign-in of company manager %s: no companies: %s", name, exc)
        return NO_COMPANIES_ANSWER
    finally:
        client.close()
    companies = tuple(sorted({c.id for c in found}))
    if not companies:
        return NO_COMPANY
    return Outcome(Principal(name, "session", False, companies=companies, source="moodle"))
