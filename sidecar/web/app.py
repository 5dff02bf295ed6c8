"""The HTTP app served by `run` (docs/http.md): callback, health, certificates, verify.

A plain Werkzeug WSGI app. Every error is JSON `{"error", "status"}` rendered by
`sidecar.web.errors.render`, except the human-facing `/verify/<code>` page. The app
never logs request bodies or signatures.
"""

import logging
from collections.abc import Callable, Iterable
from html import escape
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as RouteMethodNotAllowed
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from sidecar.callbacks import CallbackRejected
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
        Rule("/certificates/<code>", methods=["GET"], endpoint="certificate"),
        Rule("/verify/<code>", methods=["GET"], endpoint="verify"),
    ],
    strict_slashes=False,
    merge_slashes=False,
)

_NOT_FOUND_PAGE = (
    "<!doctype html><meta charset=utf-8><title>Certificate not found</title>"
    "<h1>Certificate not found</h1><p>No certificate has the code {code}. "
    "Check the code printed on the certificate.</p>"
)


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


class OffloadApp:
    """The WSGI callable built by `make_app`; `max_body` tells the server the body cap."""

    def __init__(
        self,
        handle_callback: Callable[[bytes, str | None], dict],
        health: Callable[[], tuple[bool, dict]],
        max_body: int,
        certificate: Callable[[str], Response | None] | None,
        verify_page: Callable[[str], str | None] | None,
    ):
        self.handle_callback = handle_callback
        self.health = health
        self.max_body = max_body
        self.certificate = certificate
        self.verify_page = verify_page

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
            return getattr(self, f"on_{endpoint}")(request, **args)
        except HTTPError as exc:
            return render(exc)
        except CallbackRejected as exc:
            return render(HTTPError(exc.reason, status=exc.status))
        except Exception:  # noqa: BLE001 - request boundary: log once, answer 500
            log.exception("unhandled error answering %s %s", request.method, request.path)
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

    def on_certificate(self, request: Request, code: str) -> Response:
        found = self.certificate(code) if self.certificate and len(code) <= _MAX_CODE_LEN else None
        if found is None:
            raise NotFoundError("no certificate with this code (unknown or revoked)")
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


def make_app(
    *,
    handle_callback: Callable[[bytes, str | None], dict],
    health: Callable[[], tuple[bool, dict]],
    max_body: int = 1_048_576,
    certificate: Callable[[str], Response | None] | None = None,
    verify_page: Callable[[str], str | None] | None = None,
) -> OffloadApp:
    """The WSGI app; `handle_callback` raises CallbackRejected to refuse a callback.

    Raises ValueError for a non-positive `max_body`.
    """
    if max_body <= 0:
        raise ValueError(f"max_body must be positive, got {max_body}")
    return OffloadApp(handle_callback, health, max_body, certificate, verify_page)
