"""The send page (docs/dashboard.md#send): `send csv` and the bulk tools (re-engagement,
certificates, licence and welcome emails) from the browser, with the CLI's preview and
confirm.

Uploading a CSV sends nothing: the file is staged (sidecar.uploads) and the page shows
what `moodle-offload send csv FILE` shows before it asks — valid and invalid rows with
their line numbers, rows already sent under the same key, addresses held back and why,
one rendered sample. Only "Send" on that preview commits the job, through the same
sidecar.sendcsv.commit as the CLI, under the same idempotency key (a file sent twice
mails nobody twice); the daemon then delivers it and the job's page shows it.

A CSV carries any address, so only site administrators may send one: a company manager
or a read-only principal gets 403. The tools (sidecar.web.toolsend) preview on a GET of
`/send/{tool}?fields` and commit on a POST of the fields the preview normalised, with the
count it showed: a changed preview is shown again (409), never sent unseen. A company
manager runs them for their own companies. See sidecar.web.pages for RULES/HANDLERS.
"""

from werkzeug.routing import Rule
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from sidecar import sendcsv, uploads
from sidecar.db import store
from sidecar.errors import Aborted, NotFound, TemplateError
from sidecar.web import sendform, toolsend
from sidecar.web.api import moodle_errors
from sidecar.web.errors import BadRequest, Forbidden, PayloadTooLarge, ServiceUnavailable
from sidecar.web.pages.schedules import reasons, warnings

_TOOL = "<any(reengagement, certificates, license, welcome):kind>"

RULES = [
    Rule("/send", methods=["GET"], endpoint="page.send"),
    Rule("/send/csv", methods=["POST"], endpoint="page.send_csv_upload"),
    Rule("/send/csv/<token>", methods=["GET"], endpoint="page.send_csv_preview"),
    Rule("/send/csv/<token>", methods=["POST"], endpoint="page.send_csv_commit"),
    Rule(f"/send/{_TOOL}", methods=["GET"], endpoint="page.send_tool_preview"),
    Rule(f"/send/{_TOOL}", methods=["POST"], endpoint="page.send_tool_commit"),
]


def _admin_only(ctx) -> None:
    if not ctx.principal.is_admin:
        raise Forbidden("only a site administrator may send to a CSV of addresses")
    ctx.require_write()


def send(ctx, request: Request) -> Response:
    ctx.require_write()
    kinds = [k for k in toolsend.KINDS if toolsend.allowed(ctx.principal, k)]
    if not ctx.principal.is_admin and not kinds:
        raise Forbidden("sending is for site administrators and company managers")
    return ctx.render(
        "send.html", title="Send", nav="send", form={}, kinds=kinds, titles=toolsend.TITLES,
        templates=_templates(ctx) if ctx.principal.is_admin else [],
    )  # fmt: skip


def tool_preview(ctx, request: Request, kind: str) -> Response:
    """What the tool would send, sending nothing; the confirm button under it."""
    ctx.require_write()
    fields = toolsend.normalise(kind, request.args, ctx.principal, ctx.now())
    runtime = ctx.dashboard.api.runtime_for_runs("sending needs")  # 503 without the daemon
    with moodle_errors():
        view = toolsend.preview(runtime, kind, fields)
    return _tool_page(ctx, view)


def tool_commit(ctx, request: Request, kind: str) -> Response:
    """Commit what the preview showed: the same fields, previewed again; when the count
    changed meanwhile, the new preview is shown (409) and nothing is sent."""
    ctx.require_write()
    fields = toolsend.normalise(kind, request.form, ctx.principal, ctx.now())
    expected = toolsend.expected_of(request.form)
    if expected is None:
        raise BadRequest("expected: missing (confirm from the preview page)")
    runtime = ctx.dashboard.api.runtime_for_runs("sending needs")
    with moodle_errors():
        view = toolsend.preview(runtime, kind, fields)
        if view.to_send != expected:
            return _tool_page(ctx, view, changed_from=expected, status=409)
        job_ids = toolsend.commit(runtime, view, expected, ctx.by())
    return _see(f"/jobs/{job_ids[0]}" if len(job_ids) == 1 else "/jobs")


def _tool_page(ctx, view: toolsend.View, changed_from: int | None = None, status: int = 200):
    return ctx.render(
        "send_tool_preview.html", status, title=f"Preview: {view.title}", nav="send",
        v=view, c=view.counts or {}, reasons=reasons, warnings=warnings,
        changed_from=changed_from, tool_title=toolsend.TITLES[view.kind],
    )  # fmt: skip


def upload(ctx, request: Request) -> Response:
    _admin_only(ctx)
    form = request.form
    file = request.files.get("file")
    if file is None or not file.filename:
        raise BadRequest("choose a CSV file to upload")
    message = sendform.message_of(form, _templates(ctx))
    try:
        staged = uploads.stage(
            uploads.root(),
            file.filename,
            file.stream,
            owner=ctx.principal.name,
            fields={
                **sendform.fields_of(message),
                "skip_invalid": sendform.flag(form, "skip_invalid"),
            },
        )
    except uploads.UploadTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from None
    return _see(f"/send/csv/{staged.token}")


def preview(ctx, request: Request, token: str) -> Response:
    _admin_only(ctx)
    staged = _staged(ctx, token)
    runtime = _runtime(ctx)
    pv = _preview(runtime, staged)
    return ctx.render(
        "send_csv_preview.html",
        title=f"Preview: {staged.filename}",
        nav="send",
        pv=pv,
        staged=staged,
        skip_invalid=staged.fields["skip_invalid"],
        problems=pv.problems[: sendform.PROBLEMS_SHOWN],
        sendable=bool(pv.data.rows) and (not pv.problems or staged.fields["skip_invalid"]),
    )


def commit(ctx, request: Request, token: str) -> Response:
    """Commit the previewed file: the same checks run again on the staged file, so what is
    sent is what the preview showed; then the staged copy is removed."""
    _admin_only(ctx)
    staged = _staged(ctx, token)
    runtime = _runtime(ctx)
    pv = _preview(runtime, staged)
    cfg = runtime.config
    try:
        created = sendcsv.commit(
            pv,
            skip_invalid=staged.fields["skip_invalid"],
            batch_size=cfg.offload.job_batch_size,
            sender=cfg.providers.local.from_,
            now=runtime.clock(),
        )
    except Aborted as exc:
        raise BadRequest(str(exc).replace(str(staged.path), staged.filename)) from None
    with store.atomic():
        store.audit("csv_send", runtime.clock(), created.job_id, file=staged.filename,
                    pending=created.pending, key=pv.key, **ctx.by())  # fmt: skip
    staged.remove()
    return _see(f"/jobs/{created.job_id}")


def _preview(runtime, staged: uploads.Staged) -> sendcsv.CsvPreview:
    try:
        return sendcsv.preview(staged.path, sendform.message_from(staged.fields), runtime.renderer)
    except (Aborted, TemplateError) as exc:
        raise BadRequest(str(exc).replace(str(staged.path), staged.filename)) from None


def _staged(ctx, token: str, kind: str | None = None) -> uploads.Staged:
    """The principal's staged upload `token` of `kind` (None: a CSV send); else NotFound."""
    staged = uploads.find(uploads.root(), token, owner=ctx.principal.name)
    if staged is None or staged.fields.get("kind") != kind:
        raise NotFound("no such upload: it was sent already, has expired, or is another's")
    return staged


def _templates(ctx) -> list[str]:
    """The email templates an admin may pick (not the certificate's, nor partials)."""
    renderer = _runtime(ctx).renderer
    return renderer.email_templates()


def _runtime(ctx):
    """The daemon's runtime (its renderer, config and clock); 503 without the daemon."""
    if ctx.dashboard.api.runtime is None:
        raise ServiceUnavailable("sending needs the daemon (moodle-offload run)")
    return ctx.dashboard.api.runtime


def _see(location: str) -> Response:
    resp = redirect(location, 303)
    resp.headers["Cache-Control"] = "no-store"
    return resp


HANDLERS = {
    "send": send,
    "send_csv_upload": upload,
    "send_csv_preview": preview,
    "send_csv_commit": commit,
    "send_tool_preview": tool_preview,
    "send_tool_commit": tool_commit,
}
