"""The dashboard's HTML pages (docs/dashboard.md): each area in its own module
(`overview`, `jobs`, `schedules`, `certificates`, `send`, `usersimport`), which declares `RULES`
(werkzeug Rules whose endpoint is `page.<name>`) and `HANDLERS` ({name: handler}). A handler is
`handler(ctx: PageContext, request, **route_args) -> Response`.

Every page needs a signed-in session (a bearer token is for the JSON API): without one,
a GET is redirected to /login and anything else gets 401. A POST needs the session's
CSRF token (checked by Dashboard.principal before the handler runs) and a principal that
is not read-only. Errors are HTML pages with the right status, not JSON. The pages read
through sidecar.ledgerview / sidecar.scheduleview with the principal's `Scope`, so a
company manager gets 404 for another company's job, as in the API.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from werkzeug.routing import Rule
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from sidecar.access import Principal
from sidecar.errors import Conflict, NotFound
from sidecar.ledgerview import Scope
from sidecar.web.errors import Forbidden, HTTPError
from sidecar.web.pages import certificates, jobs, overview, schedules, send, usersimport

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}

_AREAS = (overview, jobs, schedules, certificates, send, usersimport)

#: every page route; app.ROUTES includes them
RULES = [
    Rule("/static/<name>", methods=["GET"], endpoint="page.static"),
    *(rule for area in _AREAS for rule in area.RULES),
]
HANDLERS: dict[str, Callable[..., Response]] = {
    name: handler for area in _AREAS for name, handler in area.HANDLERS.items()
}


@dataclass
class PageContext:
    """What a page handler gets: who asks, what they may see, and the dashboard's parts."""

    dashboard: object  # sidecar.web.dashboard.Dashboard
    principal: Principal
    csrf: str

    @property
    def scope(self) -> Scope:
        return Scope.of(self.principal)

    @property
    def config(self):
        return self.dashboard.config

    @property
    def runtime(self):
        return self.dashboard.api.runtime

    @property
    def health(self):
        return self.dashboard.health

    def now(self):
        return self.dashboard.clock()

    def by(self) -> dict:
        """Who acts, for audit lines: {"name", "source", "via": "dashboard"}."""
        return {"name": self.principal.name, "source": self.principal.source, "via": "dashboard"}

    def require_write(self) -> None:
        if self.principal.read_only:
            raise Forbidden(f"{self.principal.name} is read-only: it cannot change anything")

    def render(self, template: str, status: int = 200, **context) -> Response:
        """`template` (under sidecar/web/templates) with the common context: principal,
        csrf, the active nav entry (`nav=`), the page title (`title=`)."""
        return self.dashboard.page(
            template, status, principal=self.principal, csrf=self.csrf, **context
        )


class Pages:
    """Dispatches `page.<name>` endpoints for one Dashboard."""

    def __init__(self, dashboard):
        self.dashboard = dashboard

    def handle(self, name: str, request: Request, args: dict) -> Response:
        if name == "static":
            return static(args["name"])
        session = self.dashboard.session_of(request)
        if session is None:
            if request.method in ("GET", "HEAD"):
                resp = redirect("/login", 303)
                resp.headers["Cache-Control"] = "no-store"
                return resp
            return self._error(401, "Signed out", "Your session has ended: sign in again.")
        try:
            if request.method not in ("GET", "HEAD"):
                self.dashboard.require_csrf(request, session.csrf)
            ctx = PageContext(self.dashboard, session.principal, session.csrf)
            if request.method not in ("GET", "HEAD"):
                ctx.require_write()
            return HANDLERS[name](ctx, request, **args)
        except NotFound as exc:
            return self._error(404, "Not found", str(exc), session)
        except Conflict as exc:
            return self._error(409, "Not possible now", str(exc), session)
        except HTTPError as exc:
            return self._error(exc.status, "Refused" if exc.status == 403 else "Error",
                               exc.message, session)  # fmt: skip

    def _error(self, status: int, title: str, message: str, session=None) -> Response:
        return self.dashboard.page(
            "error.html",
            status,
            title=title,
            message=message,
            principal=session.principal if session else None,
            csrf=session.csrf if session else "",
        )


def static(name: str) -> Response:
    """A file of sidecar/web/static: the pages' CSS and script, shipped in the package (no
    CDN: the dashboard works with no internet)."""
    path = STATIC_DIR / name
    kind = STATIC_TYPES.get(path.suffix)
    if kind is None or "/" in name or name.startswith(".") or not path.is_file():
        from sidecar.web.errors import NotFoundError

        raise NotFoundError(f"no such file: /static/{name}")
    resp = Response(path.read_bytes(), mimetype=kind)
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp
