"""The overview, `GET /`: what runs now, what failed, the state of each moving part.
See sidecar.web.pages for RULES/HANDLERS and PageContext."""

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

RULES = [Rule("/", methods=["GET"], endpoint="page.overview")]


def overview(ctx, request: Request) -> Response:
    return ctx.render("overview.html", title="Overview", nav="overview")


HANDLERS = {"overview": overview}
