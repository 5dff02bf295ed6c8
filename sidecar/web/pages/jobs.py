"""The jobs pages (docs/dashboard.md#jobs): the list with its filters, a job's page (counts,
progress chart, route, batches, history, recipients, what retention or purge-user erased),
its live progress fragment, and the retry, cancel and export actions. See sidecar.web.pages
for RULES/HANDLERS and PageContext.

Everything is read through sidecar.ledgerview with the principal's scope, and the actions
call what the JSON API's on_retry/on_cancel/on_export call (sidecar.jobs.retry_job,
cancel_job, sidecar.web.api.export_response): the pages and the API give the same answers.
"""

import json
from collections import Counter
from datetime import datetime, timedelta
from urllib.parse import urlencode

from werkzeug.routing import Rule
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from sidecar import activity, erasures, ledgerview
from sidecar import jobs as ledger
from sidecar.db.models import AuditLog
from sidecar.ledgerview import JobFilter
from sidecar.status import JOB_FINAL, JobStatus, RecipientStatus
from sidecar.web import charts, params
from sidecar.web.api import export_response
from sidecar.web.errors import BadRequest

RULES = [
    Rule("/jobs", methods=["GET"], endpoint="page.jobs"),
    Rule("/jobs/<job_id>", methods=["GET"], endpoint="page.job"),
    Rule("/jobs/<job_id>/progress", methods=["GET"], endpoint="page.job_progress"),
    Rule("/jobs/<job_id>/retry", methods=["POST"], endpoint="page.job_retry"),
    Rule("/jobs/<job_id>/cancel", methods=["POST"], endpoint="page.job_cancel"),
    Rule("/jobs/<job_id>/export.csv", methods=["GET"], endpoint="page.job_export"),
]

JOBS_PER_PAGE = 25
RECIPIENTS_PER_PAGE = 50
#: the status filter's "running now": the statuses of a job that is not finished
RUNNING = tuple(s.value for s in JobStatus if s not in JOB_FINAL)
JOB_STATUSES = tuple(s.value for s in JobStatus)
RECIPIENT_STATUSES = tuple(s.value for s in RecipientStatus)
#: the types the type field suggests: those the daemon and the CLI create (a job created
#: through the callback API may have another; the field takes any)
JOB_TYPES = ("certificate", "send_csv", "send_license", "send_reengagement", "send_reminder")
#: the job page's live part refreshes this often (seconds) while the job runs
REFRESH_SECONDS = 3
#: the job's audit lines shown as its history (newest last)
HISTORY_LINES = 200


# --- the list --------------------------------------------------------------------------------


def job_list(ctx, request: Request) -> Response:
    """`GET /jobs`: newest first, filtered by the GET form's fields, 25 to a page."""
    a = request.args
    form = {name: (a.get(name) or "").strip()[:64]
            for name in ("status", "type", "course", "company", "from", "to")}  # fmt: skip
    try:
        f = _job_filter(a)
        after = params.decode_cursor(a, "jobs", (str, str))
    except BadRequest as exc:
        return _render(ctx, "jobs.html", 400, title="Jobs", nav="jobs", form=form, jobs=[],
                       error=exc.message, next_url=None, first_url=None,
                       **_choices(ctx))  # fmt: skip
    page = ledgerview.list_jobs(ctx.scope, f, after, JOBS_PER_PAGE)
    kept = {k: v for k, v in form.items() if v}
    cursor = params.encode_cursor("jobs", page.next_key)
    return _render(
        ctx,
        "jobs.html",
        title="Jobs",
        nav="jobs",
        form=form,
        jobs=page.items,
        error=None,
        next_url=_url("/jobs", **kept, cursor=cursor) if cursor else None,
        first_url=_url("/jobs", **kept) if after is not None else None,
        **_choices(ctx),
    )


def _job_filter(a) -> JobFilter:
    """The list's filter from the form: dates are whole days (UTC), `to` included."""
    status = params.choice_of(a, "status", {"running", *JOB_STATUSES})
    statuses = RUNNING if status == "running" else ((status,) if status else ())
    until = params.time_of(a, "to")
    return JobFilter(
        statuses=statuses,
        type=params.text_of(a, "type", 32),
        course=params.int_of(a, "course"),
        company=params.int_of(a, "company"),
        since=params.time_of(a, "from"),
        until=None if until is None else until + timedelta(days=1),
    )


def _choices(ctx) -> dict:
    companies = None if ctx.principal.is_admin else sorted(ctx.principal.companies)
    return {"statuses": JOB_STATUSES, "types": JOB_TYPES, "companies": companies}


# --- one job ---------------------------------------------------------------------------------


def job_page(ctx, request: Request, job_id: str) -> Response:
    """`GET /jobs/{id}`: the job, its live progress, batches, history and recipients
    (searched, filtered by status and paginated on the server)."""
    job = ledgerview.job_detail(ctx.scope, job_id)
    a = request.args
    form = {"q": (a.get("q") or "").strip()[:254], "status": a.get("status") or ""}
    error = None
    try:
        statuses = params.choices_of(a, "status", set(RECIPIENT_STATUSES))
        search = params.text_of(a, "q", 254) or ""
        after = params.decode_cursor(a, "recipients", (int,))
    except BadRequest as exc:
        error, statuses, search, after = exc.message, [], "", None
    page = ledgerview.recipients(ctx.scope, job["id"], statuses=statuses, search=search,
                                 after=after, limit=RECIPIENTS_PER_PAGE)  # fmt: skip
    history = _history(job["id"])
    kept = {k: v for k, v in form.items() if v}
    cursor = params.encode_cursor("recipients", page.next_key)
    base = f"/jobs/{job['id']}"
    return _render(
        ctx,
        "job.html",
        400 if error else 200,
        title=f"Job {job['id'][:8]}",
        nav="jobs",
        job=job,
        live=_live(ctx, job),
        batch_counts=dict(sorted(Counter(b["status"] for b in job["batches"]).items())),
        history=history,
        by_user=_by_user(history),
        recipients=page.items,
        form=form,
        error=error,
        statuses=RECIPIENT_STATUSES,
        notice=_notice(ctx, a.get("notice")),
        erased_what=erasures.words(job["erased"]["what"]) if job["erased"] else "",
        can_retry=_can_retry(job),
        can_cancel=job["status"] not in JOB_FINAL,
        next_url=_url(base, **kept, cursor=cursor) + "#recipients" if cursor else None,
        first_url=_url(base, **kept) + "#recipients" if after is not None else None,
        per_page=RECIPIENTS_PER_PAGE,
        refresh_every=REFRESH_SECONDS,
    )


def job_progress(ctx, request: Request, job_id: str) -> Response:
    """`GET /jobs/{id}/progress`: the live part of the job page alone (counts, bar, chart),
    for the page's data-refresh; once the job is finished it says so (data-final), and the
    page's script stops asking."""
    job = ledgerview.job_detail(ctx.scope, job_id)
    return _render(ctx, "job_progress.html", job=job, live=_live(ctx, job), fragment=True)


def _live(ctx, job: dict) -> dict:
    points = activity.job_progress(job["id"], now=ctx.now())
    total = job["progress"]["recipients"] or job["total"]
    return {
        "final": job["status"] in JOB_FINAL,
        "chart": charts.progress_chart(points, total),
        "counts": job["counts"],
        "progress": job["progress"],
    }


#: a job whose failed recipients sidecar.jobs.retry_job can re-queue (a finished one that
#: failed, or one still at work); a cancelled one never
RETRYABLE = {JobStatus.PARTIAL_FAILURE, JobStatus.FAILED, JobStatus.PROCESSING, JobStatus.QUEUED}


def _can_retry(job: dict) -> bool:
    """Also never one whose addresses retention erased (sidecar.jobs.retry_job refuses)."""
    return job["status"] in RETRYABLE and job["progress"]["failed"] > 0 and not job["erased"]


def _history(job_id: str) -> list[dict]:
    """The job's audit lines, oldest first: created, retried, cancelled (and by whom),
    bounces and complaints of its recipients."""
    rows = (
        AuditLog.select(AuditLog.at, AuditLog.event, AuditLog.detail)
        .where(AuditLog.job_id == job_id)
        .order_by(AuditLog.id.desc())
        .limit(HISTORY_LINES)
        .tuples()
    )
    out = []
    for at, event, detail in reversed(list(rows)):
        try:
            data = json.loads(detail or "{}")
        except ValueError:
            data = {}
        out.append({"at": at, "event": event, "detail": data if isinstance(data, dict) else {}})
    return out


def _by_user(history: list[dict]) -> dict[int, list[dict]]:
    """The audit lines that name one recipient (a bounce, a complaint), by userid."""
    out: dict[int, list[dict]] = {}
    for line in history:
        userid = line["detail"].get("userid")
        try:
            out.setdefault(int(userid), []).append(line)
        except (TypeError, ValueError):
            continue
    return out


# --- actions ---------------------------------------------------------------------------------


def job_retry(ctx, request: Request, job_id: str) -> Response:
    """`POST /jobs/{id}/retry`: re-queue the failed recipients (sidecar.jobs.retry_job, as
    the API's retry), audited with who asked; back to the job page with a notice."""
    job = ledgerview.get_job(ctx.scope, job_id)
    n = ledger.retry_job(job.id, ctx.now(), by=ctx.by())
    return _back(ctx, job.id, f"retried:{n}")


def job_cancel(ctx, request: Request, job_id: str) -> Response:
    """`POST /jobs/{id}/cancel`: cancel what is not delivered yet (sidecar.jobs.cancel_job,
    as the API's cancel), audited with who asked; back to the job page with a notice."""
    job = ledgerview.get_job(ctx.scope, job_id)
    n = ledger.cancel_job(job.id, ctx.now(), by=ctx.by())
    return _back(ctx, job.id, f"cancelled:{n}")


def job_export(ctx, request: Request, job_id: str) -> Response:
    """`GET /jobs/{id}/export.csv`: the API's export, streamed."""
    return export_response(ledgerview.get_job(ctx.scope, job_id))


def _back(ctx, job_id: str, what: str) -> Response:
    """A 303 to the job page; the notice is signed so a link cannot make one up."""
    signed = ctx.dashboard.sessions.sign(what, "notice")
    return redirect(_url(f"/jobs/{job_id}", notice=signed), 303)


def _notice(ctx, signed: str | None) -> str | None:
    what = ctx.dashboard.sessions.unsign(signed, "notice") if signed else None
    if what is None:
        return None
    action, _, n = what.partition(":")
    count = int(n) if n.isdigit() else 0
    people = "1 recipient" if count == 1 else f"{count:,} recipients"
    if action == "retried":
        return f"Retry asked: {people} re-queued; they will be sent again."
    if action == "cancelled":
        return f"Job cancelled: {people} will not be sent."
    return None


def _url(path: str, **query) -> str:
    query = {k: v for k, v in query.items() if v not in (None, "")}
    return f"{path}?{urlencode(query)}" if query else path


def fmt_time(value) -> str:
    """'2025-11-18 12:00 UTC' for a naive UTC datetime or the API's ISO text; '' for None."""
    if not value:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.rstrip("Z"))
    return f"{value:%Y-%m-%d %H:%M} UTC"


def percent(part: int, whole: int) -> str:
    """A width for the progress bar: '12.5%'."""
    return f"{(100 * part / whole) if whole else 0:.1f}%"


def _render(ctx, template: str, status: int = 200, **context) -> Response:
    return ctx.render(template, status, fmt=fmt_time, pct=percent, **context)


HANDLERS = {
    "jobs": job_list,
    "job": job_page,
    "job_progress": job_progress,
    "job_retry": job_retry,
    "job_cancel": job_cancel,
    "job_export": job_export,
}
