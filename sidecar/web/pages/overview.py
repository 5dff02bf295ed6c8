"""The overview, `GET /`: what runs now, what failed, the state of each moving part, and
mail per hour over the last 7 days; `GET /fragments/running` is the running-jobs block
alone, which the page's script fetches every few seconds so the bars move without a
reload (docs/dashboard.md). See sidecar.web.pages for RULES/HANDLERS and PageContext.

Everything is read through the principal's `Scope`: a company manager sees only the jobs,
failures, stuck jobs and mail of their companies. The jobs come from
`ledgerview.list_jobs` (what `/api/v1/jobs` answers), the chart from `activity.hourly`
(what `/api/v1/activity` answers), the parts from `Health.parts()` (`/api/v1/health`).

A dashboard left open polls the running jobs every 2 seconds, and many may be open: each
part of the page is kept a short while per scope (`TTL`), so ten pollers cost the database
what one does.
"""

import re
import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup
from peewee import fn
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from sidecar import activity, ledgerview
from sidecar.db.models import Job, Recipient
from sidecar.health import OK, WARN, Part, overall, stuck_jobs
from sidecar.ledgerview import JobFilter, Scope
from sidecar.status import RECIPIENT_FAILED, JobStatus, RecipientStatus
from sidecar.web import charts

RULES = [
    Rule("/", methods=["GET"], endpoint="page.overview"),
    Rule("/fragments/running", methods=["GET"], endpoint="page.overview_running"),
]

#: a job is running while it has one of these statuses
RUNNING = tuple(
    s.value
    for s in (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.RETRY_PENDING)
)
#: running jobs shown at most (the jobs page lists them all)
RUNNING_SHOWN = 20
RECENT_SHOWN = 10
TOP_ERRORS = 5
#: distinct error texts read at most to find the most common errors
ERROR_GROUPS = 2000
#: an address in an error (a server names the recipient): errors alike but for it count as one
_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>@]+>?")
#: the rate of a running job is what it settled in this last stretch
RATE_WINDOW = timedelta(minutes=5)
FAILED = tuple(sorted(s.value for s in RECIPIENT_FAILED))
SENT = RecipientStatus.SENT.value
#: seconds each part of the page is kept per scope
TTL = {"running": 2.0, "recent": 5.0, "failures": 10.0, "stuck": 10.0, "hourly": 60.0}
#: seconds between two refreshes of the running jobs in an open page
REFRESH_EVERY = 2


# --- the handlers ----------------------------------------------------------------------------


def overview(ctx, request: Request) -> Response:
    now = ctx.now()
    scope = ctx.scope
    parts = _parts(ctx)
    hours = _cached(ctx, "hourly", lambda: _hourly(scope, now))
    return ctx.render(
        "overview.html",
        title="Overview",
        nav="overview",
        running=_cached(ctx, "running", lambda: running_jobs(scope, now)),
        recent=_cached(ctx, "recent", lambda: recent_jobs(scope)),
        failures=_cached(ctx, "failures", lambda: failures(scope, now)),
        parts=parts,
        state=overall(parts),
        chart=Markup(hours["svg"]),
        week=hours,
        refresh_every=REFRESH_EVERY,
    )


def overview_running(ctx, request: Request) -> Response:
    """The running-jobs block only: an HTML fragment (no layout) for app.js."""
    now = ctx.now()
    running = _cached(ctx, "running", lambda: running_jobs(ctx.scope, now))
    return ctx.render("overview_running.html", running=running)


HANDLERS = {"overview": overview, "overview_running": overview_running}


# --- what the page shows ---------------------------------------------------------------------


def running_jobs(scope: Scope, now: datetime) -> dict:
    """{"jobs": [...], "more": bool}: the running jobs, newest first, each with its counts
    (sent, failed, pending of total, as percentages too), its rate per minute over the
    last RATE_WINDOW and the time left at that rate."""
    page = ledgerview.list_jobs(scope, JobFilter(statuses=RUNNING), None, RUNNING_SHOWN)
    jobs = page.items
    settled = _settled_since([j["id"] for j in jobs], now - RATE_WINDOW)
    out = []
    for j in jobs:
        p = j["progress"]
        total = p["recipients"] or j["total"] or 0
        pending = p["open"] if p["recipients"] else total
        other = max(p["done"] - p["sent"] - p["failed"], 0)  # suppressed, skipped, cancelled
        created = _parse(j["created_at"])
        window = min(RATE_WINDOW, max(now - created, timedelta(seconds=1)))
        rate = settled.get(j["id"], 0) / (window.total_seconds() / 60)
        left = None if not rate or not p["open"] else p["open"] / rate * 60
        out.append(
            {
                **j,
                "short": j["id"][:8],
                "total_n": total,
                "sent": p["sent"],
                "failed": p["failed"],
                "other": other,
                "pending": pending,
                "pct_sent": _pct(p["sent"], total),
                "pct_failed": _pct(p["failed"], total),
                "pct_other": _pct(other, total),
                "pct_done": round(100 * p["done"] / total) if total else 0,
                "rate": rate,
                "rate_text": _rate(rate),
                "left_text": _left(left, p["open"]),
                "created_text": _when(created),
            }
        )
    return {"jobs": out, "more": page.next_key is not None}


def _settled_since(job_ids: list[str], since: datetime) -> dict[str, int]:
    """{job_id: recipients sent or failed since `since`}: two range reads of the (status,
    timesent, updated_at, job) index, whatever the size of the jobs."""
    if not job_ids:
        return {}
    out: dict[str, int] = {}
    for column, statuses in ((Recipient.timesent, (SENT,)), (Recipient.updated_at, FAILED)):
        query = (
            Recipient.select(Recipient.job, fn.COUNT(Recipient.id))
            .where(Recipient.status.in_(statuses), column >= since, Recipient.job.in_(job_ids))
            .group_by(Recipient.job)
            .tuples()
        )
        for job_id, n in query:
            out[job_id] = out.get(job_id, 0) + int(n)
    return out


def recent_jobs(scope: Scope) -> list[dict]:
    """The last RECENT_SHOWN jobs created, whatever their status."""
    jobs = ledgerview.list_jobs(scope, JobFilter(), None, RECENT_SHOWN).items
    out = []
    for j in jobs:
        p = j["progress"]
        finished = _parse(j["finished_at"]) if j["finished_at"] else None
        out.append({**j, "short": j["id"][:8], "created_text": _when(_parse(j["created_at"])),
                    "finished_text": _when(finished) if finished else ""})  # fmt: skip
        out[-1]["summary"] = f"{p['sent']:,} sent, {p['failed']:,} failed of {p['recipients']:,}"
    return out


def failures(scope: Scope, now: datetime) -> dict:
    """Recipients failed in the last 24 hours (their `updated_at`): how many, in how many
    jobs, and the most common errors with their counts."""
    since = now - timedelta(hours=24)
    where = [Recipient.status.in_(FAILED), Recipient.updated_at >= since]
    if scope.companies is not None:
        mine = Job.select(Job.id).where(Job.tenant_id.in_(sorted(scope.companies) or [-1]))
        where.append(Recipient.job.in_(mine))
    count, jobs = (
        Recipient.select(fn.COUNT(Recipient.id), fn.COUNT(Recipient.job.distinct()))
        .where(*where)
        .tuples()
        .get()
    )
    errors: list[dict[str, Any]] = []
    if count:
        n = fn.COUNT(Recipient.id)
        query = (
            Recipient.select(Recipient.last_error, n)
            .where(*where)
            .group_by(Recipient.last_error)
            .order_by(n.desc())
            .limit(ERROR_GROUPS)
            .tuples()
        )
        alike: dict[str, int] = {}
        for error, c in query:
            key = _error_kind(error)
            alike[key] = alike.get(key, 0) + int(c)
        top = sorted(alike.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ERRORS]
        errors = [{"error": e, "count": c} for e, c in top]
    return {"count": int(count or 0), "jobs": int(jobs or 0), "errors": errors, "since": since}


def _error_kind(error: str | None) -> str:
    """An error with any address in it replaced by <address>: "550 5.1.1 <ana@x.org>: User
    unknown" and "550 5.1.1 <bo@y.org>: User unknown" are one error."""
    if not error:
        return "(no error recorded)"
    return _ADDRESS.sub("<address>", error.strip())[:300]


def _hourly(scope: Scope, now: datetime) -> dict:
    companies = None if scope.companies is None else tuple(sorted(scope.companies))
    hours = activity.hourly(now, 168, companies)
    return {
        "svg": charts.hourly_chart(hours),
        "sent": sum(h.sent for h in hours),
        "failed": sum(h.failed for h in hours),
    }


def _parts(ctx) -> list[Part]:
    """Each moving part (Health caches its checks); for a company manager the stuck jobs
    are theirs only."""
    parts = ctx.health.parts()
    if ctx.scope.companies is None:
        return parts
    return [
        _cached(ctx, "stuck", lambda p=p: _scoped_stuck(ctx, p)) if p.name == "stuck jobs" else p
        for p in parts
    ]


def _scoped_stuck(ctx, part: Part) -> Part:
    """The stuck-jobs part counting only the jobs of the viewer's companies."""
    if part.state not in (OK, WARN):
        return part
    health = ctx.health
    now = ctx.now()
    rows = stuck_jobs(now - health.stuck_after)
    companies = sorted(ctx.scope.companies or ()) or [-1]
    ids = [r["id"] for r in rows]
    mine: set[str] = set()
    if ids:
        query = Job.select(Job.id).where(Job.id.in_(ids), Job.tenant_id.in_(companies))
        mine = {job_id for (job_id,) in query.tuples()}
    rows = [r for r in rows if r["id"] in mine]
    threshold = int(health.stuck_after.total_seconds())
    detail = {"count": len(rows), "threshold_seconds": threshold}
    after = _duration(threshold)
    if not rows:
        return Part(part.name, OK, f"none (no job idle for more than {after})", detail, now)
    oldest = rows[0]
    n = len(rows)
    idle = _duration((now - oldest["last_activity"]).total_seconds())
    summary = (
        f"{n} job{'s' if n != 1 else ''} without progress for more than {after}; the oldest, "
        f"{oldest['id']} ({oldest['status']}), for {idle}"
    )
    return Part(part.name, WARN, summary, detail, now)


# --- the cache ---------------------------------------------------------------------------------


class _Cache:
    """(what, scope) -> (expires, value), for one Dashboard."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[tuple, tuple[float, Any]] = {}
        self.computing: dict[tuple, threading.Lock] = {}


_caches: "weakref.WeakKeyDictionary[object, _Cache]" = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _cached(ctx, what: str, compute: Callable[[], Any]) -> Any:
    """`compute()`'s value for this scope, kept TTL[what] seconds. Pollers arriving while it
    is computed wait for that one computation rather than starting their own."""
    with _caches_lock:
        cache = _caches.get(ctx.dashboard)
        if cache is None:
            cache = _caches[ctx.dashboard] = _Cache()
    key = (what, ctx.scope.companies)
    with cache.lock:
        hit = cache.items.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        gate = cache.computing.setdefault(key, threading.Lock())
    with gate:
        with cache.lock:
            hit = cache.items.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        value = compute()
        with cache.lock:
            cache.items[key] = (time.monotonic() + TTL[what], value)
        return value


def clear_cache(dashboard) -> None:
    """Forget every kept part of `dashboard`'s overview (tests, benchmarks)."""
    with _caches_lock:
        _caches.pop(dashboard, None)


# --- words -------------------------------------------------------------------------------------


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.removesuffix("Z"))


def _pct(n: int, total: int) -> float:
    return round(100 * n / total, 2) if total else 0.0


def _when(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC"


def _rate(per_minute: float) -> str:
    if not per_minute:
        return "none in the last 5 min"
    if per_minute >= 10:
        return f"{per_minute:,.0f}/min"
    return f"{per_minute:.1f}/min"


def _left(seconds: float | None, open_: int) -> str:
    if not open_:
        return "finishing"
    if seconds is None:
        return "unknown"
    return f"about {_duration(seconds)}"


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{max(s, 1)} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    if s < 86400:
        h, m = divmod(round(s / 60), 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(round(s / 3600), 24)
    return f"{d} d {h} h" if h else f"{d} d"
