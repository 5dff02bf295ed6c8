"""The HTTP app served by `run` (docs/http.md): callback, health, certificates, verify,
unsubscribe, and (with `[dashboard] enabled`) sign-in and the JSON API.

A plain Werkzeug WSGI app. Every error is JSON `{"error", "status"}` rendered by
`sidecar.web.errors.render`, except the human-facing pages (`/verify/<code>`,
`/unsubscribe/<token>`). The app never logs request bodies, signatures or tokens.
"""

import logging
from collections.abc import Callable, Iterable
from html import escape
from typing import Any, Protocol

from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as RouteMethodNotAllowed
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from sidecar.callbacks import CallbackRejected
from sidecar.unsubscribe import DESCRIPTIONS
from sidecar.web import api, pages
from sidecar.web.dashboard import Dashboard
from sidecar.web.errors import (
    BadRequest,
    HTTPError,
    MethodNotAllowed,
    NotFoundError,
    PayloadTooLarge,
    json_response,
    render,
)

log = logging.getLogger(__name__)

_READ_CHUNK = 64 * 1024
_MAX_CODE_LEN = 128

WSGIApp = Callable[[dict, Callable[..., Any]], Iterable[bytes]]

ROUTES = Map(
    [
        Rule("/callback", methods=["POST"], endpoint="callback"),
        Rule("/healthz", methods=["GET"], endpoint="healthz"),
        Rule("/metrics", methods=["GET"], endpoint="metrics"),
        Rule("/certificates/<code>", methods=["GET"], endpoint="certificate"),
        Rule("/verify/<code>", methods=["GET"], endpoint="verify"),
        Rule("/unsubscribe/<token>", methods=["GET", "POST"], endpoint="unsubscribe"),
        Rule("/login", methods=["GET"], endpoint="login_form"),
        Rule("/login", methods=["POST"], endpoint="login"),
        Rule("/logout", methods=["POST"], endpoint="logout"),
        Rule("/api/v1/whoami", methods=["GET"], endpoint="whoami"),
        *api.RULES,
        *pages.RULES,
    ],
    strict_slashes=False,
    merge_slashes=False,
)

_NOT_FOUND_PAGE = (
    "<!doctype html><meta charset=utf-8><title>Certificate not found</title>"
    "<h1>Certificate not found</h1><p>No certificate has the code {code}. "
    "Check the code printed on the certificate.</p>"
)


#: a one-click POST is `List-Unsubscribe=One-Click` (RFC 8058); anything much longer is not
_MAX_UNSUBSCRIBE_BODY = 4096
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_PAGE = (
    "<!doctype html><html lang=en><meta charset=utf-8>"
    "<meta name=viewport content='width=device-width,initial-scale=1'>"
    "<meta name=robots content=noindex><title>{title}</title>"
    "<body style='font-family:Arial,Helvetica,sans-serif;max-width:36em;margin:3em auto;"
    "padding:0 1em;color:#1f2937'><h1 style='font-size:1.4em'>{title}</h1>{body}</body></html>"
)
_UNSUBSCRIBE_FORM = (
    "<p>Stop receiving {what}? Certificates and emails about your account still reach you.</p>"
    "<form method=post><input type=hidden name=List-Unsubscribe value=One-Click>"
    "<input type=hidden name=via value=page>"
    "<button type=submit style='font-size:1em;padding:.5em 1.2em'>Unsubscribe</button></form>"
)

_PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
)


class Unsubscriber(Protocol):
    """What `/unsubscribe/<token>` needs (sidecar.unsubscribe.UnsubscribeService)."""

    def read(self, token: str) -> tuple[int, str] | None: ...

    def record(self, userid: int, kind: str, source: str) -> bool: ...


def read_body(request: Request, max_body: int) -> bytes:
    """The request body, at most `max_body` bytes; raises PayloadTooLarge past that.

    Content-Length is checked first; the limit is enforced again while reading, so a
    chunked body or one whose length header lies is capped all the same.
    """
    length = request.content_length
    if length is not None and length > max_body:
        raise PayloadTooLarge(f"request body of {length} bytes is over the limit of {max_body}")
    stream = request.stream
    chunks: list[bytes] = []
    total = 0
    while total <= max_body:
        chunk = stream.read(min(_READ_CHUNK, max_body + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > max_body:
        raise PayloadTooLarge(f"request body is over the limit of {max_body} bytes")
    return b"".join(chunks)


class MetricsSource(Protocol):
    """What `/metrics` needs (sidecar.metrics.MetricsEndpoint)."""

    def authorised(self, authorization: str | None) -> bool: ...

    def render(self) -> bytes: ...


class OffloadApp:
    """The WSGI callable built by `make_app`; `max_body` tells the server the body cap."""

    def __init__(
        self,
        handle_callback: Callable[[bytes, str | None], dict],
        health: Callable[[], tuple[bool, dict]],
        max_body: int,
        certificate: Callable[[str], Response | None] | None,
        verify_page: Callable[[str], str | None] | None,
        unsubscribe: Unsubscriber | None = None,
        dashboard: Dashboard | None = None,
        metrics: MetricsSource | None = None,
    ):
        self.dashboard = dashboard
        self.metrics = metrics
        self.handle_callback = handle_callback
        self.health = health
        self.max_body = max_body
        self.certificate = certificate
        self.verify_page = verify_page
        self.unsubscribe = unsubscribe

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        """Route `request` and turn every failure into its one JSON error response."""
        adapter = ROUTES.bind_to_environ(request.environ)
        try:
            try:
                endpoint, args = adapter.match()
            except RouteMethodNotAllowed as exc:
                allowed = tuple(sorted(exc.valid_methods or ()))
                raise MethodNotAllowed(
                    f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}",
                    allowed=allowed,
                ) from None
            except HTTPException:
                raise NotFoundError(f"no such path: {request.path}") from None
            if endpoint.startswith("api."):
                return self._dashboard().api.handle(endpoint[4:], request, args)
            if endpoint.startswith("page."):
                return self._dashboard().pages.handle(endpoint[5:], request, args)
            return getattr(self, f"on_{endpoint}")(request, **args)
        except HTTPError as exc:
            return render(exc)
        except CallbackRejected as exc:
            return render(HTTPError(exc.reason, status=exc.status))
        except Exception:  # noqa: BLE001 - request boundary: log once, answer 500
            path = "/unsubscribe/..." if request.path.startswith("/unsubscribe/") else request.path
            log.exception("unhandled error answering %s %s", request.method, path)
            return render(HTTPError("internal server error; see the sidecar log"))

    def on_callback(self, request: Request) -> Response:
        if request.mimetype != "application/json":
            raise BadRequest(
                f"Content-Type must be application/json, got {request.mimetype or 'none'!r}"[:200]
            )
        raw = read_body(request, self.max_body)
        result = self.handle_callback(raw, request.headers.get("X-Signature"))
        return json_response(result, 200)

    def on_healthz(self, request: Request) -> Response:
        ok, state = self.health()
        resp = json_response({"ok": ok, **state}, 200 if ok else 503)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def on_metrics(self, request: Request) -> Response:
        """Prometheus text format; 401 without the bearer token when `[metrics] token` is set."""
        if self.metrics is None:
            raise NotFoundError("metrics are not served here")
        if not self.metrics.authorised(request.headers.get("Authorization")):
            resp = render(HTTPError("a bearer token is required ([metrics] token)", status=401))
            resp.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return resp
        from sidecar.metrics import CONTENT_TYPE

        resp = Response(self.metrics.render(), status=200, content_type=CONTENT_TYPE)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def on_certificate(self, request: Request, code: str) -> Response:
        found = self.certificate(code) if self.certificate and len(code) <= _MAX_CODE_LEN else None
        if found is None:
            raise NotFoundError("no certificate with this code")
        return found

    def on_verify(self, request: Request, code: str) -> Response:
        page = self.verify_page(code) if self.verify_page and len(code) <= _MAX_CODE_LEN else None
        if page is None:
            return Response(
                _NOT_FOUND_PAGE.format(code=escape(code[:_MAX_CODE_LEN])),
                status=404,
                mimetype="text/html",
            )
        return Response(page, status=200, mimetype="text/html")

    def _dashboard(self) -> Dashboard:
        if self.dashboard is None:
            raise NotFoundError("the dashboard is off: set [dashboard] enabled = true")
        return self.dashboard

    def on_login_form(self, request: Request) -> Response:
        return self._dashboard().login_form(request)

    def on_login(self, request: Request) -> Response:
        return self._dashboard().login(request)

    def on_logout(self, request: Request) -> Response:
        return self._dashboard().logout(request)

    def on_whoami(self, request: Request) -> Response:
        return self._dashboard().whoami(request)

    def on_unsubscribe(self, request: Request, token: str) -> Response:
        """GET: a page with one button (changes nothing: mail scanners follow links).
        POST `List-Unsubscribe=One-Click` (RFC 8058; the button sends the same): records
        the opt-out at once, idempotent. The signed token is the whole authorisation, so
        no login and no CSRF token. A forged or altered token: 400, nothing changes."""
        if self.unsubscribe is None:  # off: a learner with an old link reads this
            return _page(
                "Unsubscribing is handled by the site",
                "<p>This address does not take unsubscribe requests. To stop these emails, "
                "use the unsubscribe link in a recent email or contact the site's "
                "administrator.</p>",
                404,
            )
        found = self.unsubscribe.read(token)
        if found is None:
            return _page(
                "This unsubscribe link is not valid",
                "<p>The link may have been cut short: open the whole link from the email, or "
                "ask the site's administrator to unsubscribe you.</p>",
                400,
            )
        userid, kind = found
        what = escape(DESCRIPTIONS.get(kind, kind))
        if request.method != "POST":  # GET, or HEAD (werkzeug routes it with GET)
            return _page("Unsubscribe", _UNSUBSCRIBE_FORM.format(what=what), 200)
        fields = _unsubscribe_fields(request)
        if fields.get("List-Unsubscribe") != "One-Click":
            return _page(
                "Nothing was changed",
                "<p>An unsubscribe request carries List-Unsubscribe=One-Click.</p>",
                400,
            )
        source = "page" if fields.get("via") == "page" else "one-click"
        self.unsubscribe.record(userid, kind, source)
        return _page(
            "You are unsubscribed",
            f"<p>You will receive no more {what}. Certificates and emails about your account "
            "still reach you.</p>",
            200,
        )


def _unsubscribe_fields(request: Request) -> dict[str, str]:
    """The fields of an unsubscribe POST, names and values stripped of surrounding space.

    RFC 8058 names the body `List-Unsubscribe=One-Click`, sent urlencoded or as
    multipart/form-data; a body without a Content-Type (or text/plain) counts when it is
    exactly that line. Raises PayloadTooLarge past _MAX_UNSUBSCRIBE_BODY bytes.
    """
    cap = _MAX_UNSUBSCRIBE_BODY
    if request.mimetype in _FORM_TYPES:
        request.max_content_length = cap
        try:
            return {name.strip(): value.strip() for name, value in request.form.items()}
        except HTTPException as exc:  # a body over the cap
            raise PayloadTooLarge(f"an unsubscribe request is at most {cap} bytes") from exc
    if request.mimetype in ("", "text/plain"):
        text = read_body(request, cap).decode("utf-8", "replace").strip()
        name, _, value = text.partition("=")
        return {name: value} if text == "List-Unsubscribe=One-Click" else {}
    return {}


def _page(title: str, body: str, status: int) -> Response:
    resp = Response(_PAGE.format(title=title, body=body), status=status, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Content-Security-Policy"] = _PAGE_POLICY
    return resp


def certificate_gone(code: str, revoked_at) -> Response:
    """What `/certificates/{code}` answers for a revoked certificate: 410 Gone, a small
    page saying so and linking to the verification page (which gives the reason)."""
    code = escape(code)
    return _page(
        "Certificate revoked",
        f"<p>Certificate {code} was revoked on {revoked_at:%Y-%m-%d}: it can no longer be "
        f"downloaded.</p><p>Its <a href='/verify/{code}'>verification page</a> says why.</p>",
        410,
    )


def make_app(
    *,
    handle_callback: Callable[[bytes, str | None], dict],
    health: Callable[[], tuple[bool, dict]],
    max_body: int = 1_048_576,
    certificate: Callable[[str], Response | None] | None = None,
    verify_page: Callable[[str], str | None] | None = None,
    unsubscribe: Unsubscriber | None = None,
    dashboard: Dashboard | None = None,
    metrics: MetricsSource | None = None,
) -> OffloadApp:
    """The WSGI app; `handle_callback` raises CallbackRejected to refuse a callback.
    Without `unsubscribe`, `/unsubscribe/<token>` answers 404 with a page saying that the
    site handles unsubscribing (the feature is off). Without `dashboard`, the sign-in
    pages and `/api/v1/...` answer 404; without `metrics`, `/metrics` does.

    Raises ValueError for a non-positive `max_body`.
    """
    if max_body <= 0:
        raise ValueError(f"max_body must be positive, got {max_body}")
    return OffloadApp(
        handle_callback,
        health,
        max_body,
        certificate,
        verify_page,
        unsubscribe,
        dashboard,
        metrics,
    )
