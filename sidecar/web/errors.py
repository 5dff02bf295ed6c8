"""HTTP errors: each carries its status; `render` is the one place they become responses.

Every error response has the same shape: JSON `{"error": "<message>", "status": <int>}`.
"""

import json

from werkzeug.wrappers import Response


class HTTPError(Exception):
    """An error answered to the client; `status` is the HTTP status code."""

    status = 500
    default_message = "internal server error"

    def __init__(self, message: str | None = None, *, status: int | None = None):
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        if status is not None:
            self.status = status


class BadRequest(HTTPError):
    status = 400
    default_message = "bad request"


class Unauthorized(HTTPError):
    status = 401
    default_message = "unauthorized"


class Forbidden(HTTPError):
    status = 403
    default_message = "forbidden"


class NotFoundError(HTTPError):
    status = 404
    default_message = "not found"


class MethodNotAllowed(HTTPError):
    status = 405
    default_message = "method not allowed"

    def __init__(self, message: str | None = None, *, allowed: tuple[str, ...] = ()):
        super().__init__(message)
        self.allowed = allowed


class ConflictError(HTTPError):
    status = 409
    default_message = "conflict"


class DuplicateCallback(HTTPError):
    status = 409
    default_message = "callback already applied"


class PayloadTooLarge(HTTPError):
    status = 413
    default_message = "request body too large"


class BadGateway(HTTPError):
    status = 502
    default_message = "bad gateway"


class ServiceUnavailable(HTTPError):
    status = 503
    default_message = "service unavailable"


def json_response(payload: object, status: int = 200) -> Response:
    """A compact JSON response (UTF-8) with `status`."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
    return Response(body, status=status, mimetype="application/json")


def render(exc: HTTPError) -> Response:
    """The one JSON rendering of an HTTP error: `{"error": message, "status": code}`."""
    resp = json_response({"error": exc.message, "status": exc.status}, exc.status)
    allowed = getattr(exc, "allowed", ())
    if allowed:
        resp.headers["Allow"] = ", ".join(allowed)
    return resp
