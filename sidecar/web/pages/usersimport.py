"""Users import on the send page (docs/dashboard.md#send): `moodle-offload users import
FILE` from the browser, with its checks and one confirm.

Uploading creates nothing: the file is staged (sidecar.uploads) and checked as the CLI
checks it (sidecar.userimport: every bad row by its line, addresses another account
holds, the company), then the preview says how many accounts will be created and how
many exist already, with the welcome email rendered for the first row (a placeholder
where the password goes). "Create and welcome" checks the file again, refuses when the
count to create changed since the preview (409, the new preview shown), creates the
accounts in Moodle, and commits their welcome job exactly as the CLI does; the daemon
delivers it, setting each password right before its email. A run stopped half way is
finished by confirming the same file again: accounts found by username are not created
twice and users welcomed already are not welcomed again.

Creating accounts and mailing passwords is for site administrators only.
"""

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from moodle_ws.client import RequestTally
from moodle_ws.types import NewUser
from sidecar import uploads, userimport, welcome
from sidecar.db import store
from sidecar.errors import Aborted, MoodleLacks
from sidecar.moodle import open_client
from sidecar.web.api import moodle_errors
from sidecar.web.errors import BadRequest, Forbidden, PayloadTooLarge
from sidecar.web.pages.send import _see, _staged

RULES = [
    Rule("/send/users", methods=["POST"], endpoint="page.users_import_upload"),
    Rule("/send/users/<token>", methods=["GET"], endpoint="page.users_import_preview"),
    Rule("/send/users/<token>", methods=["POST"], endpoint="page.users_import_commit"),
]


def _admin_only(ctx) -> None:
    if not ctx.principal.is_admin:
        raise Forbidden("only a site administrator may create accounts in Moodle")
    ctx.require_write()


def upload(ctx, request: Request) -> Response:
    _admin_only(ctx)
    file = request.files.get("file")
    if file is None or not file.filename:
        raise BadRequest("choose a CSV file to upload")
    company = (request.form.get("company") or "").strip()
    if company and (not company.isdigit() or int(company) < 1):
        raise BadRequest(f"company: an IOMAD company id, got {company[:40]!r}")
    try:
        staged = uploads.stage(
            uploads.root(), file.filename, file.stream, owner=ctx.principal.name,
            fields={"kind": "users", "company": int(company) if company else None},
        )  # fmt: skip
    except uploads.UploadTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from None
    return _see(f"/send/users/{staged.token}")


def preview(ctx, request: Request, token: str) -> Response:
    _admin_only(ctx)
    staged = _users_file(ctx, token)
    runtime = ctx.dashboard.api.runtime_for_runs("creating accounts needs")
    plan, sample = _plan(runtime, staged)
    return _page(ctx, staged, plan, sample)


def commit(ctx, request: Request, token: str) -> Response:
    """Create the previewed accounts, then commit their welcome, as `users import` does."""
    _admin_only(ctx)
    staged = _users_file(ctx, token)
    expected = (request.form.get("expected") or "").strip()
    if not expected.isdigit():
        raise BadRequest("expected: missing (confirm from the preview page)")
    runtime = ctx.dashboard.api.runtime_for_runs("creating accounts needs")
    from sidecar.temppasswords import Sealer

    Sealer.from_config(runtime.config)  # no accounts whose welcome could never be sent
    cfg = runtime.config
    with moodle_errors():
        plan, sample = _plan(runtime, staged)
        if len(plan.to_create) != int(expected):
            return _page(ctx, staged, plan, sample, changed_from=int(expected), status=409)
        client = open_client(cfg)
        try:
            userimport.create(client, plan, cfg.moodle.password_policy)
            pv = userimport.welcome_preview(runtime, client, plan, staged.path)
        finally:
            client.close()
        now = runtime.clock()
        job_id = None
        if pv.recipients:
            created = welcome.commit(pv, batch_size=cfg.offload.job_batch_size,
                                     sender=cfg.providers.local.from_, now=now)  # fmt: skip
            job_id = created.job_id
    with store.atomic():
        store.audit("users_import", now, job_id, file=staged.filename, created=len(plan.created),
                    existing=len(plan.existing), company=plan.companyid,
                    welcomed=len(pv.recipients), **ctx.by())  # fmt: skip
    staged.remove()
    return _see(f"/jobs/{job_id}" if job_id else "/jobs")


def _users_file(ctx, token: str) -> uploads.Staged:
    return _staged(ctx, token, kind="users")


def _plan(runtime, staged: uploads.Staged):
    """The file checked and planned against Moodle, and the first row's welcome rendered;
    a bad file is 400 naming its lines (the staged copy's path replaced by its name)."""
    try:
        rows = userimport.read_file(staged.path)
    except Aborted as exc:
        raise BadRequest(str(exc).replace(str(staged.path), staged.filename)) from None
    client = open_client(runtime.config)
    try:
        with moodle_errors():
            try:
                plan = userimport.plan(client, rows, staged.fields.get("company"))
            except MoodleLacks:
                raise  # 502, naming the function
            except Aborted as exc:  # addresses other accounts hold, no such company
                raise BadRequest(str(exc)) from None
            first = rows[0]
            user = NewUser(id=0, username=first.username, firstname=first.firstname,
                           lastname=first.lastname, email=first.email, auth=first.auth,
                           suspended=False, timecreated=0)  # fmt: skip
            info = welcome.site_vars(client, RequestTally())
            sample = welcome.sample(
                runtime.renderer, info, user, runtime.clock().date().isoformat()
            )
    finally:
        client.close()
    return plan, sample


def _page(ctx, staged, plan, sample, changed_from=None, status=200) -> Response:
    return ctx.render(
        "send_users_preview.html", status, title=f"Preview: {staged.filename}", nav="send",
        staged=staged, plan=plan, sample=sample, changed_from=changed_from,
        with_password=sum(r.auth in welcome.PASSWORD_AUTHS for r in plan.to_create),
    )  # fmt: skip


HANDLERS = {
    "users_import_upload": upload,
    "users_import_preview": preview,
    "users_import_commit": commit,
}
