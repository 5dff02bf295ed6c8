"""The certificates page (docs/dashboard.md#certificates): how many each course issued,
finding one by learner (name, address or user id) or by code, each with its download and
verify links; and revoking one, with a reason, after which `/verify/{code}` says revoked
and the download link answers 410 Gone.

It reads through sidecar.ledgerview and revokes with sidecar.certificates.revoke, as the
API's `on_certificates` and `on_revoke` do, so a company manager sees only the
certificates of their companies' jobs and gets 404 for another's. See sidecar.web.pages
for RULES/HANDLERS and PageContext.
"""

from urllib.parse import urlencode

from werkzeug.routing import Rule
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from sidecar import certificates as issued
from sidecar import ledgerview
from sidecar.errors import Aborted, Conflict, NotFound
from sidecar.ledgerview import CertificateFilter
from sidecar.web import params
from sidecar.web.errors import BadRequest

RULES = [
    Rule("/certificates", methods=["GET"], endpoint="page.certificates"),
    Rule("/certificates/<code>/revoke", methods=["POST"], endpoint="page.certificate_revoke"),
    Rule(
        "/certificates/courses/<int:course>.zip", methods=["GET"], endpoint="page.certificates_zip"
    ),  # fmt: skip
]

PER_PAGE = 50


def certificates(ctx, request: Request) -> Response:
    a = request.args
    params.known(a, {"learner", "code", "course", "cursor", "revoked"})
    learner = params.text_of(a, "learner", 254)
    f = CertificateFilter(
        userid=int(learner) if learner and learner.strip().isdigit() else None,
        learner=None if learner is None or learner.strip().isdigit() else learner,
        code=params.text_of(a, "code", 32),
        course=params.int_of(a, "course"),
    )
    after = params.decode_cursor(a, "certificates", (str, str))
    page = ledgerview.list_certificates(ctx.scope, f, "", after, PER_PAGE)
    nxt = params.encode_cursor("certificates", page.next_key)
    query = {"learner": learner, "code": f.code, "course": f.course}
    query = {k: v for k, v in query.items() if v is not None}
    revoked = _revoked(ctx, a.get("revoked", ""))
    return ctx.render(
        "certificates.html",
        title="Certificates",
        nav="certificates",
        courses=ledgerview.certificates_per_course(ctx.scope),
        items=page.items,
        learners=ledgerview.learners_of(page.items),
        searched=bool(query) or after is not None,
        query=query,
        more=f"/certificates?{urlencode({**query, 'cursor': nxt})}" if nxt else None,
        revoked=revoked,
        back=f"/certificates?{urlencode(query)}" if query else "/certificates",
    )


def _revoked(ctx, code: str) -> dict | None:
    """The certificate just revoked (`?revoked=CODE`), when the viewer sees it and it is
    revoked: the notice is read from the ledger, not from the link."""
    if not code:
        return None
    try:
        cert = ledgerview.get_certificate(ctx.scope, code)
    except NotFound:
        return None
    return ledgerview.certificate_json(cert, "") if cert.revoked_at else None


def revoke(ctx, request: Request, code: str) -> Response:
    """Revoke with a reason (1 to 500 characters): audited `certificate_revoked` with who
    and why; 409 when it was revoked already."""
    cert = ledgerview.get_certificate(ctx.scope, code)
    from sidecar.web.dashboard import _form  # the dashboard imports the pages

    try:
        reason = issued.clean_reason(_form(request).get("reason", ""))
    except Aborted as exc:
        raise BadRequest(str(exc)) from None
    if not issued.revoke(cert.code, ctx.now(), reason=reason, **ctx.by()):
        raise Conflict(f"certificate {cert.code} is already revoked")
    resp = redirect(f"/certificates?{urlencode({'code': cert.code, 'revoked': cert.code})}", 303)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def course_zip(ctx, request: Request, course: int) -> Response:
    """`GET /certificates/courses/{course}.zip[?since=DATE]`: the API's ZIP, streamed (a
    download changes nothing: no CSRF token, read-only viewers may have it)."""
    from sidecar.web.api import zip_response

    params.known(request.args, {"since"})
    since = params.time_of(request.args, "since")
    return zip_response(ctx.dashboard, ctx.runtime, ctx.scope, course, since, **ctx.by())


HANDLERS = {"certificates": certificates, "certificate_revoke": revoke,
            "certificates_zip": course_zip}  # fmt: skip
