"""The JSON API under `/api/v1` (docs/api.md): jobs, their recipients and batches, retry,
cancel and export; schedules, their dry run, run now and runs; certificates and revoking
them; and `openapi.json`, its description (sidecar.web.openapi).

Who may do what: no credentials, 401; a read-only token on a state-changing call, or a
session without its CSRF token, 403 before anything changes; a principal limited to some
IOMAD companies gets 404 for a job, schedule or certificate of another company, exactly
as for one that does not exist. Every change writes an audit line naming who asked.
The reads go through sidecar.ledgerview and sidecar.scheduleview, which the dashboard's
pages share.
"""

import csv
import io
import json
from collections.abc import Callable, Iterator
from zoneinfo import ZoneInfo

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from moodle_ws.errors import MoodleError, MoodleUnavailable
from sidecar import certificates, ledgerview, scheduleview
from sidecar import jobs as ledger
from sidecar.access import Principal
from sidecar.db import store
from sidecar.errors import Aborted, ConfigError, Conflict, MoodleLacks, NotFound, SidecarError
from sidecar.ledgerview import CertificateFilter, JobFilter, Scope
from sidecar.status import JobStatus, RecipientStatus
from sidecar.web import params
from sidecar.web.errors import (
    BadGateway,
    BadRequest,
    ConflictError,
    Forbidden,
    HTTPError,
    NotFoundError,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    json_response,
)

PREFIX = "/api/v1"


def _rule(path: str, method: str, name: str) -> Rule:
    return Rule(PREFIX + path, methods=[method], endpoint=f"api.{name}")


#: every /api/v1 route but whoami (sidecar.web.dashboard); app.ROUTES includes them
RULES = [
    _rule("/openapi.json", "GET", "openapi"),
    _rule("/jobs", "GET", "jobs"),
    _rule("/jobs/<job_id>", "GET", "job"),
    _rule("/jobs/<job_id>/recipients", "GET", "recipients"),
    _rule("/jobs/<job_id>/retry", "POST", "retry"),
    _rule("/jobs/<job_id>/cancel", "POST", "cancel"),
    _rule("/jobs/<job_id>/export", "GET", "export"),
    _rule("/schedules", "GET", "schedules"),
    _rule("/schedules/<schedule_id>", "GET", "schedule"),
    _rule("/schedules/<schedule_id>/dry-run", "GET", "dry_run"),
    _rule("/schedules/<schedule_id>/run", "POST", "run"),
    _rule("/schedules/<schedule_id>/runs", "GET", "runs"),
    _rule("/certificates", "GET", "certificates"),
    _rule("/certificates/<code>/revoke", "POST", "revoke"),
    _rule("/send/csv", "POST", "send_csv"),
    _rule("/send/<any(reengagement, certificates, license, welcome):kind>", "POST", "send_tool"),
    _rule("/certificates/courses/<int:course>.zip", "GET", "certificates_zip"),
    _rule("/health", "GET", "health"),
    _rule("/activity", "GET", "activity"),
    _rule("/users/<int:userid>/purge", "POST", "purge_user"),
]

_NEEDS_WRITE = {"retry", "cancel", "run", "revoke", "purge_user"}
_PAGE = {"cursor", "limit"}


class Api:
    """The `/api/v1` handlers over one Dashboard (who is asking, the config, the clock).
    `runtime` (sidecar.runtime.Runtime) is what a dry run and a run now need: Moodle, the
    renderer and the providers; without it they answer 503."""

    def __init__(self, dashboard, runtime=None):
        self.dashboard = dashboard
        self.runtime = runtime

    @property
    def config(self):
        return self.dashboard.config

    def handle(self, name: str, request: Request, args: dict) -> Response:
        handler: Callable[..., Response] = getattr(self, f"on_{name}")
        if name == "openapi":
            return handler(request)
        principal = self.dashboard.principal(request)  # 403 here: a session without CSRF
        if principal is None:
            raise Unauthorized("sign in, or send Authorization: Bearer <token>")
        if name in _NEEDS_WRITE and principal.read_only:
            raise Forbidden(f"{principal.name} is a read-only token: it cannot change anything")
        try:
            return handler(request, principal, Scope.of(principal), **args)
        except NotFound as exc:
            raise NotFoundError(str(exc)) from None
        except Conflict as exc:
            raise ConflictError(str(exc)) from None

    def _by(self, principal: Principal) -> dict:
        return {"name": principal.name, "source": principal.source, "via": "api"}

    # --- jobs ------------------------------------------------------------------------------

    def on_jobs(self, request: Request, principal, scope: Scope) -> Response:
        a = request.args
        params.known(a, _PAGE | {"status", "type", "course", "company", "since", "until"})
        f = JobFilter(
            statuses=tuple(params.choices_of(a, "status", {s.value for s in JobStatus})),
            type=params.text_of(a, "type", 32),
            course=params.int_of(a, "course"),
            company=params.int_of(a, "company"),
            since=params.time_of(a, "since"),
            until=params.time_of(a, "until"),
        )
        after = params.decode_cursor(a, "jobs", (str, str))
        page = ledgerview.list_jobs(scope, f, after, params.limit_of(a))
        return _page(page, "jobs")

    def on_job(self, request: Request, principal, scope: Scope, job_id: str) -> Response:
        params.known(request.args, set())
        return _json(ledgerview.job_detail(scope, job_id))

    def on_recipients(self, request: Request, principal, scope: Scope, job_id: str) -> Response:
        a = request.args
        params.known(a, _PAGE | {"status", "q"})
        page = ledgerview.recipients(
            scope,
            job_id,
            statuses=params.choices_of(a, "status", {s.value for s in RecipientStatus}),
            search=params.text_of(a, "q", 254) or "",
            after=params.decode_cursor(a, "recipients", (int,)),
            limit=params.limit_of(a),
        )
        return _page(page, "recipients")

    def on_retry(self, request: Request, principal, scope: Scope, job_id: str) -> Response:
        job = ledgerview.get_job(scope, job_id)
        n = ledger.retry_job(job.id, self.dashboard.clock(), by=self._by(principal))
        return _json({"job_id": job.id, "requeued": n, "message": f"{n} recipients re-queued"})

    def on_cancel(self, request: Request, principal, scope: Scope, job_id: str) -> Response:
        job = ledgerview.get_job(scope, job_id)
        n = ledger.cancel_job(job.id, self.dashboard.clock(), by=self._by(principal))
        return _json({"job_id": job.id, "cancelled": n,
                      "message": f"job cancelled; {n} recipients will not be sent"})  # fmt: skip

    def on_export(self, request: Request, principal, scope: Scope, job_id: str) -> Response:
        params.known(request.args, set())
        return export_response(ledgerview.get_job(scope, job_id))

    # --- schedules -------------------------------------------------------------------------

    def _schedule(self, request: Request, scope: Scope, schedule_id: str, extra=frozenset()):
        params.known(request.args, {"source"} | set(extra))
        try:
            number = int(schedule_id)
        except ValueError:
            raise BadRequest(
                f"schedule id: must be a whole number, got {schedule_id[:40]!r}"
            ) from None
        source = params.choice_of(request.args, "source", {"moodle", "file"})
        return scheduleview.get_schedule(scope, number, source)

    def _tz(self) -> ZoneInfo:
        return ZoneInfo(self.config.schedules.timezone)

    def on_schedules(self, request: Request, principal, scope: Scope) -> Response:
        params.known(request.args, {"all"})
        every = params.choice_of(request.args, "all", {"true", "false"}) == "true"
        items = scheduleview.list_schedules(scope, self.dashboard.clock(), self._tz(), every)
        return _json({"items": items, "next_cursor": None})

    def on_schedule(self, request, principal, scope: Scope, schedule_id: str) -> Response:
        record = self._schedule(request, scope, schedule_id)
        return _json(scheduleview.schedule_json(record, self.dashboard.clock(), self._tz()))

    def on_runs(self, request, principal, scope: Scope, schedule_id: str) -> Response:
        record = self._schedule(request, scope, schedule_id, _PAGE)
        after = params.decode_cursor(request.args, "runs", (str, int))
        return _page(scheduleview.list_runs(record, after, params.limit_of(request.args)), "runs")

    def runtime_for_runs(self, what: str = "dry runs and runs need"):
        """The daemon's runtime for what reads Moodle: a dry run, a run now, a tool (pages
        use it too); 503 without the daemon or [moodle]."""
        if self.runtime is None:
            raise ServiceUnavailable(f"{what} the daemon (moodle-offload run)")
        if self.config.moodle is None:
            raise ServiceUnavailable(f"[moodle] is not configured: {what} Moodle")
        return self.runtime

    def on_dry_run(self, request, principal, scope: Scope, schedule_id: str) -> Response:
        record = self._schedule(request, scope, schedule_id, {"reissue"})
        reissue = params.choice_of(request.args, "reissue", {"true", "false"}) == "true"
        runtime = self.runtime_for_runs()
        with moodle_errors():
            outcome = scheduleview.dry_run(runtime, record, reissue=reissue)
        return _json(scheduleview.preview_json(record, outcome))

    def on_run(self, request, principal, scope: Scope, schedule_id: str) -> Response:
        record = self._schedule(request, scope, schedule_id)
        runtime = self.runtime_for_runs()
        with moodle_errors():
            outcome = scheduleview.run_now(runtime, record, **self._by(principal))
        return _json(scheduleview.outcome_json(record, outcome))

    # --- certificates ----------------------------------------------------------------------

    def on_certificates(self, request: Request, principal, scope: Scope) -> Response:
        a = request.args
        params.known(a, _PAGE | {"userid", "code", "course", "learner"})
        f = CertificateFilter(
            userid=params.int_of(a, "userid"),
            code=params.text_of(a, "code", 32),
            course=params.int_of(a, "course"),
            learner=params.text_of(a, "learner", 191),
        )
        after = params.decode_cursor(a, "certificates", (str, str))
        page = ledgerview.list_certificates(
            scope, f, self.config.server.public_url, after, params.limit_of(a)
        )
        return _page(page, "certificates")

    def on_revoke(self, request: Request, principal, scope: Scope, code: str) -> Response:
        """`reason` (required, as on the dashboard) from the query or a JSON body."""
        params.known(request.args, {"reason"})
        cert = ledgerview.get_certificate(scope, code)
        try:
            reason = certificates.clean_reason(request.args.get("reason") or _body_reason(request))
        except Aborted as exc:
            raise BadRequest(str(exc)) from None
        by = self._by(principal)
        if not certificates.revoke(cert.code, self.dashboard.clock(), reason=reason, **by):
            raise ConflictError(f"certificate {cert.code} is already revoked")
        cert = ledgerview.get_certificate(scope, cert.code)
        return _json(ledgerview.certificate_json(cert, self.config.server.public_url))

    # --- send tools ------------------------------------------------------------------------

    def on_send_csv(self, request: Request, principal, scope: Scope) -> Response:
        """`send csv` over HTTP: the preview (200), or with `confirm=true` the job (201).
        Site-wide principals only: a CSV carries any address."""
        from sidecar import sendcsv, uploads
        from sidecar.web import sendform

        params.known(request.args, set())
        if not principal.is_admin:
            raise Forbidden("only a site-wide principal may send to a CSV of addresses")
        form, file = request.form, request.files.get("file")
        confirm = sendform.flag(form, "confirm")
        if confirm and principal.read_only:
            raise Forbidden(f"{principal.name} is a read-only token: it cannot send")
        if file is None or not file.filename:
            raise BadRequest("file: a multipart/form-data field with the CSV is required")
        if self.runtime is None:
            raise ServiceUnavailable("sending needs the daemon (moodle-offload run)")
        rt = self.runtime
        message = sendform.message_of(form, rt.renderer.email_templates())
        skip_invalid = sendform.flag(form, "skip_invalid")
        try:
            staged = uploads.stage(uploads.root(), file.filename, file.stream,
                                   owner=principal.name, fields={})  # fmt: skip
        except uploads.UploadTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        try:
            try:
                pv = sendcsv.preview(staged.path, message, rt.renderer)
            except SidecarError as exc:  # Aborted (no rows), TemplateError
                raise BadRequest(str(exc).replace(str(staged.path), staged.filename)) from None
            out = sendform.preview_json(pv, staged.filename)
            if not confirm:
                return _json({**out, "job": None})
            if pv.problems and not skip_invalid:
                raise BadRequest(
                    f"{len(pv.problems)} invalid rows (see invalid_rows of the "
                    "preview): nothing sent; fix the file or send skip_invalid=true"
                )
            try:
                created = sendcsv.commit(pv, skip_invalid=skip_invalid, now=rt.clock(),
                                         batch_size=rt.config.offload.job_batch_size,
                                         sender=rt.config.providers.local.from_)  # fmt: skip
            except SidecarError as exc:
                raise BadRequest(str(exc).replace(str(staged.path), staged.filename)) from None
            audit = dict(file=staged.filename, pending=created.pending, key=pv.key)
            store.audit("csv_send", rt.clock(), created.job_id, **audit, **self._by(principal))
            job = {"job_id": created.job_id, "pending": created.pending,
                   "skipped_duplicate": created.skipped_duplicate,
                   "suppressed": created.suppressed}  # fmt: skip
            return _json({**out, "job": job}, 201)
        finally:
            staged.remove()

    def on_send_tool(self, request: Request, principal, scope: Scope, kind: str) -> Response:
        """A bulk tool over HTTP (sidecar.web.toolsend): a JSON object of the tool's fields;
        the preview (200), or with `"confirm": true` the jobs (201). With `expected` (the
        preview's `to_send`), a preview that changed since is 409 and nothing is sent."""
        from sidecar.web import toolsend

        params.known(request.args, set())
        body = request.get_json(silent=True) if request.content_length else {}
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object of the tool's fields")
        unknown = set(body) - toolsend.FIELDS[kind] - {"confirm", "expected"}
        if unknown:
            raise BadRequest(f"{sorted(unknown)[0]}: not a field of {kind}")
        confirm = body.get("confirm") is True
        if confirm and principal.read_only:
            raise Forbidden(f"{principal.name} is a read-only token: it cannot send")
        fields = toolsend.normalise(kind, body, principal, self.dashboard.clock())
        expected = toolsend.expected_of(body)
        rt = self.runtime_for_runs("sending needs")
        with moodle_errors():
            view = toolsend.preview(rt, kind, fields)
            if not confirm:
                return _json({"preview": view.json(), "jobs": []})
            job_ids = toolsend.commit(rt, view, expected, self._by(principal))
        return _json({"preview": view.json(), "jobs": job_ids}, 201)

    def on_certificates_zip(self, request: Request, principal, scope: Scope, course: int):
        """The course's certificates that `scope` sees in one ZIP, streamed."""
        params.known(request.args, {"since"})
        since = params.time_of(request.args, "since")
        return zip_response(self.dashboard, self.runtime, scope, course, since,
                            **self._by(principal))  # fmt: skip

    # --- privacy ---------------------------------------------------------------------------

    def on_purge_user(self, request: Request, principal, scope: Scope, userid: int) -> Response:
        """Erase what the sidecar holds about one user (sidecar.privacy), for a Moodle
        privacy provider; site-wide principals only. `include_suppression=true` also deletes
        their suppression and unsubscribe entries. Idempotent: 200 with what was deleted
        (`nothing_left` true when there was nothing)."""
        from sidecar import privacy

        params.known(request.args, {"include_suppression"})
        flag = params.choice_of(request.args, "include_suppression", {"true", "false"})
        if not principal.is_admin:
            raise Forbidden("only a site-wide principal may purge a user")
        if userid < 1:
            raise BadRequest("userid: a Moodle user id, 1 or more")
        if self.runtime is None:
            raise ServiceUnavailable("purging needs the daemon's runtime")
        by = self._by(principal)
        report = privacy.purge(
            self.config, self.runtime, userid, include_suppression=flag == "true", by=by
        )
        return _json(report.as_json())  # `problems` non-empty: call again later

    # --- the description -------------------------------------------------------------------

    # --- health and activity ---------------------------------------------------------------

    def on_health(self, request: Request, principal, scope: Scope) -> Response:
        """Each moving part (sidecar.health), cached `dashboard.health_interval`;
        `fresh=true` (site-wide principals only) checks again now."""
        params.known(request.args, {"fresh"})
        fresh = params.choice_of(request.args, "fresh", {"true", "false"}) == "true"
        if fresh and not principal.is_admin:
            raise Forbidden("fresh=true is for principals that see every company")
        return _json(self.dashboard.health.as_json(fresh=fresh))

    def on_activity(self, request: Request, principal, scope: Scope) -> Response:
        """Recipients sent and failed per hour, the principal's companies only."""
        from sidecar import activity

        params.known(request.args, {"hours"})
        hours = params.int_of(request.args, "hours")
        hours = 168 if hours is None else hours
        if not 1 <= hours <= 24 * 31:
            raise BadRequest(f"hours: must be 1 to {24 * 31}, got {hours}")
        companies = None if scope.companies is None else tuple(sorted(scope.companies))
        rows = activity.hourly(self.dashboard.clock(), hours, companies)
        items = [{"hour": _z(h.start), "sent": h.sent, "failed": h.failed} for h in rows]
        return _json({"hours": hours, "sent": sum(h.sent for h in rows),
                      "failed": sum(h.failed for h in rows), "items": items})  # fmt: skip

    def on_openapi(self, request: Request) -> Response:
        from sidecar.web.openapi import DOCUMENT

        return json_response(DOCUMENT, 200)


def _body_reason(request: Request) -> str | None:
    """`reason` of a small JSON object body, or None."""
    if request.mimetype != "application/json":
        return None
    from sidecar.web.app import read_body

    try:
        body = json.loads(read_body(request, 8192) or b"{}")
    except ValueError:
        raise BadRequest('the body is not JSON: send {"reason": "..."}') from None
    reason = body.get("reason") if isinstance(body, dict) else None
    return reason if isinstance(reason, str) else None


def _z(at) -> str:
    return at.isoformat(timespec="seconds") + "Z"


def _json(payload: object, status: int = 200) -> Response:
    resp = json_response(payload, status)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _page(page: ledgerview.Page, kind: str) -> Response:
    return _json({"items": page.items, "next_cursor": params.encode_cursor(kind, page.next_key)})


def export_response(job) -> Response:
    """The job's recipients as a streamed CSV download (the CLI's `jobs export` columns):
    what `GET /api/v1/jobs/{id}/export` and the dashboard's export link answer."""
    resp = Response(_csv(job.id), mimetype="text/csv")
    resp.headers["Content-Disposition"] = f'attachment; filename="job-{job.id}.csv"'
    resp.headers["Cache-Control"] = "no-store"
    return resp


def zip_response(dashboard, runtime, scope: Scope, course: int, since, **by) -> Response:
    """Every issued, valid certificate of the course that `scope` sees, as a streamed ZIP
    (sidecar.certzip): what `GET /api/v1/certificates/courses/{course}.zip` and the
    dashboard's button answer. 404 when there is none (or none the caller may see).
    Audited `certificates_zipped` with who asked."""
    from pathlib import Path

    from sidecar import certzip
    from sidecar.db import store

    entries = certzip.select(course, since, scope)
    if not entries:
        raise NotFound(f"course {course} has no issued, valid certificate"
                       + (f" since {since:%Y-%m-%d %H:%M}" if since else ""))  # fmt: skip
    config = dashboard.config
    stores = certzip.cloud_stores(config, runtime)
    open_pdf = certzip.opener(Path(config.providers.local.certificate_dir), stores)
    store.audit("certificates_zipped", dashboard.clock(), None, course=course,
                since=since, certificates=len(entries), **by)  # fmt: skip
    resp = Response(certzip.stream(entries, open_pdf), mimetype="application/zip")
    name = f"course-{course}-certificates" + (f"-since-{since:%Y-%m-%d}" if since else "")
    resp.headers["Content-Disposition"] = f'attachment; filename="{name}.zip"'
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _csv(job_id: str) -> Iterator[bytes]:
    """The CLI's `jobs export` CSV, streamed a row at a time."""
    buf = io.StringIO()
    writer = csv.writer(buf)

    def flush() -> bytes:
        data = buf.getvalue().encode("utf-8")
        buf.seek(0)
        buf.truncate()
        return data

    writer.writerow(ledger.EXPORT_COLUMNS)
    yield flush()
    for n, row in enumerate(ledger.export_rows(job_id), 1):
        writer.writerow(["" if v is None else v for v in row])
        if n % 500 == 0:
            yield flush()
    yield flush()


class moodle_errors:  # noqa: N801 - used as `with moodle_errors():`
    """Moodle down: 503; Moodle refusing: 502; a configuration or ledger reason: 409."""

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if exc is None or isinstance(exc, HTTPError):
            return False
        if isinstance(exc, MoodleUnavailable):
            raise ServiceUnavailable(f"Moodle could not be reached: {exc}") from None
        if isinstance(exc, MoodleError):
            raise BadGateway(f"Moodle refused: {exc}") from None
        if isinstance(exc, MoodleLacks):
            raise BadGateway(str(exc)) from None
        if isinstance(exc, ConfigError):
            raise ServiceUnavailable(str(exc)) from None
        if isinstance(exc, SidecarError):
            raise ConflictError(str(exc)) from None
        return False
