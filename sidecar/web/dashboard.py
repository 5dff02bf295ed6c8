"""Sign-in pages and who a request acts for (docs/http.md): `GET /login`, `POST /login`,
`POST /logout`, the signed-in page `GET /` and `GET /api/v1/whoami`.

`Dashboard.principal(request)` is what every page and `/api/v1` handler asks: the
bearer token's principal when `Authorization: Bearer` is sent, else the session
cookie's. A state-changing request (not GET/HEAD) on a session must carry the session's
CSRF token (form field `csrf` or header `X-CSRF-Token`), or it is refused with 403
before anything changes. Pages never echo a password and nothing here logs one.
"""

import hmac
import logging
import secrets

from jinja2 import Environment, PackageLoader, select_autoescape
from werkzeug.exceptions import HTTPException
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from sidecar import signin, uploads
from sidecar.access import Principal, token_principal
from sidecar.config import Config
from sidecar.db import store
from sidecar.sessions import Session, Sessions, cookie_key
from sidecar.web.api import Api
from sidecar.web.errors import Forbidden, PayloadTooLarge, Unauthorized, json_response
from sidecar.web.pages import Pages

log = logging.getLogger(__name__)

COOKIE = "offload_session"
LOGIN_COOKIE = "offload_login"
SAFE_METHODS = ("GET", "HEAD")
_MAX_FORM = 16 * 1024
#: the pages load only their own stylesheet and script (sidecar/web/static), never a CDN
_POLICY = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


class Dashboard:
    """The sign-in flow and the JSON API over one Config; `clock` gives naive UTC.
    `runtime` (the daemon's sidecar.runtime.Runtime) lets the API dry-run and run
    schedules; without it those two answer 503."""

    def __init__(self, config: Config, clock, runtime=None, health=None):
        self.config = config
        self.clock = clock
        self.api = Api(self, runtime)
        self.pages = Pages(self)
        self._health = health
        key = cookie_key(config.security.encryption_key.get_secret_value())
        self.sessions = Sessions(key, config.dashboard, clock)
        self.secure = config.server.public_url.startswith("https://")
        self.templates = Environment(
            loader=PackageLoader("sidecar.web", "templates"),
            autoescape=select_autoescape(["html"]),
        )

    @property
    def health(self):
        """The sidecar.health.Health collector (its checks cached `dashboard.health_interval`);
        made on first use over the database the ledger is bound to, when none was given."""
        if self._health is None:
            from sidecar.db.models import database
            from sidecar.health import Health

            self._health = Health(self.config, database.obj, clock=self.clock)
        return self._health

    # --- who is asking ---------------------------------------------------------------------

    def principal(self, request: Request) -> Principal | None:
        """Who `request` acts for; None without (valid) credentials. Raises Forbidden for
        a state-changing request on a session without its CSRF token."""
        auth = request.headers.get("Authorization")
        if auth is not None:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "bearer":
                return None
            return token_principal(value.strip(), self.clock())
        session = self.sessions.read(request.cookies.get(COOKIE))
        if session is None:
            return None
        if request.method not in SAFE_METHODS:
            self.require_csrf(request, session.csrf)
        return session.principal

    def require_csrf(self, request: Request, expected: str) -> None:
        """Raises Forbidden unless the request carries `expected` (form field or header)."""
        sent = request.headers.get("X-CSRF-Token") or _form(request).get("csrf") or ""
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise Forbidden("missing or wrong CSRF token: reload the page and try again")

    # --- pages -----------------------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        """The request's signed-in session (cookie), or None."""
        return self.sessions.read(request.cookies.get(COOKIE))

    def login_form(self, request: Request) -> Response:
        """The form, signed in or not (to sign in as someone else)."""
        return self._login_page(200, "", "")

    def login(self, request: Request) -> Response:
        form = _form(request)
        value = self.sessions.unsign(request.cookies.get(LOGIN_COOKIE), "login")
        sent = form.get("csrf", "")
        if value is None or not hmac.compare_digest(sent.encode(), value.encode()):
            return self._login_page(
                403, "", "The sign-in form had expired. It is fresh now: sign in again."
            )
        username = form.get("username", "").strip()[:191]
        password = form.get("password", "")
        address = (request.remote_addr or "")[:64]
        now = self.clock()
        wait = self.sessions.retry_after(address, username)
        if wait:
            store.audit("login_throttled", now, username=username, address=address)
            resp = self._login_page(
                429, username, f"Too many failed sign-ins. Try again in {_minutes(wait)}.", value
            )
            resp.headers["Retry-After"] = str(wait)
            return resp
        outcome = signin.check(self.config, username, password)
        del password
        if outcome.principal is None:
            if outcome.status == 401:
                self.sessions.record_failure(address, username)
                store.audit("login_failed", now, username=username, address=address)
            elif outcome.status == 403:
                store.audit("login_refused", now, username=username, address=address)
            return self._login_page(outcome.status, username, outcome.message, value)
        return self._signed_in(request, outcome.principal, username, address)

    def _signed_in(self, request, principal: Principal, username: str, address: str) -> Response:
        self.sessions.end(request.cookies.get(COOKIE))  # never keep a cookie from before
        self.sessions.purge()
        self.sessions.clear_failures(username)
        session: Session = self.sessions.create(principal, address)
        store.audit(
            "login", self.clock(), name=principal.name, source=principal.source, address=address
        )
        log.info("dashboard: %s signed in (%s) from %s", principal.name, principal.source, address)
        resp = _no_store(redirect("/", 303))
        self._set_cookie(resp, COOKIE, session.cookie)
        resp.delete_cookie(
            LOGIN_COOKIE, path="/", secure=self.secure, httponly=True, samesite="Strict"
        )
        return resp

    def logout(self, request: Request) -> Response:
        session = self.sessions.read(request.cookies.get(COOKIE))
        resp = _no_store(redirect("/login", 303))
        if session is not None:
            self.require_csrf(request, session.csrf)
            self.sessions.end(request.cookies.get(COOKIE))
            address = (request.remote_addr or "")[:64]
            store.audit("logout", self.clock(), name=session.principal.name, address=address)
        resp.delete_cookie(COOKIE, path="/", secure=self.secure, httponly=True, samesite="Strict")
        return resp

    def whoami(self, request: Request) -> Response:
        principal = self.principal(request)
        if principal is None:
            raise Unauthorized("sign in, or send Authorization: Bearer <token>")
        resp = json_response(principal.as_json(), 200)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    # --- rendering -------------------------------------------------------------------------

    def _login_page(self, status: int, username: str, message: str, value: str = "") -> Response:
        value = value or secrets.token_urlsafe(32)
        resp = self.page(
            "login.html",
            status,
            title="Sign in",
            username=username,
            message=message,
            csrf=value,
            moodle=bool(self.config.moodle and self.config.dashboard.moodle_service),
            managers=bool(self.config.dashboard.company_managers),
        )
        self._set_cookie(resp, LOGIN_COOKIE, self.sessions.sign(value, "login"))
        return resp

    def page(self, template: str, status: int, **context) -> Response:
        html = self.templates.get_template(template).render(**context)
        resp = Response(html, status=status, mimetype="text/html")
        resp.headers["Content-Security-Policy"] = _POLICY
        resp.headers["Referrer-Policy"] = "no-referrer"
        return _no_store(resp)

    def _set_cookie(self, resp: Response, name: str, value: str) -> None:
        resp.set_cookie(name, value, path="/", secure=self.secure, httponly=True, samesite="Strict")


def _form(request: Request) -> dict[str, str]:
    """The urlencoded/multipart fields of a small form; {} for any other body."""
    if request.mimetype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return {}
    # A form's fields are small; an upload's file (the send page) may be up to its limit.
    request.max_form_memory_size = _MAX_FORM
    request.max_content_length = (
        uploads.MAX_BYTES + _MAX_FORM if request.mimetype == "multipart/form-data" else _MAX_FORM
    )
    try:
        return request.form.to_dict()
    except HTTPException as exc:
        limit = request.max_content_length
        raise PayloadTooLarge(f"a form is at most {limit} bytes") from exc


def _no_store(resp: Response) -> Response:
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _minutes(seconds: int) -> str:
    minutes = -(-seconds // 60)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"
