"""The schedules pages (docs/dashboard.md#schedules): the synced schedules with their next
due time in the site's zone, one schedule with its last runs, its dry run (the preview of
the CLI's `schedules run ID --dry-run` and of the API), and "run now".

They read and act through sidecar.scheduleview exactly as the API's handlers do
(sidecar.web.api `on_schedules`, `on_schedule`, `on_runs`, `on_dry_run`, `on_run`), so a
company manager gets 404 for another company's schedule, and without the daemon's
runtime a dry run or a run now answers a 503 page. See sidecar.web.pages for
RULES/HANDLERS and PageContext.
"""

from datetime import UTC, datetime
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from werkzeug.routing import Rule
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from schedules.selection import label
from sidecar import scheduleview
from sidecar.db.models import ScheduleRun
from sidecar.runs import WARNINGS
from sidecar.web import params
from sidecar.web.api import moodle_errors
from sidecar.web.errors import BadRequest

RULES = [
    Rule("/schedules", methods=["GET"], endpoint="page.schedules"),
    Rule("/schedules/<schedule_id>", methods=["GET"], endpoint="page.schedule"),
    Rule("/schedules/<schedule_id>/dry-run", methods=["GET"], endpoint="page.schedule_dry_run"),
    Rule("/schedules/<schedule_id>/run", methods=["POST"], endpoint="page.schedule_run"),
]

RUNS_PER_PAGE = 20


def _tz(ctx) -> ZoneInfo:
    return ZoneInfo(ctx.config.schedules.timezone)


def local(value: str | None, tz: ZoneInfo) -> str:
    """An API time ("...Z", UTC) as the site's wall clock: "2026-12-01 09:00 GMT"."""
    if not value:
        return ""
    at = datetime.fromisoformat(value.removesuffix("Z")).replace(tzinfo=UTC).astimezone(tz)
    return at.strftime("%Y-%m-%d %H:%M %Z")


def reasons(counts: dict, key: str) -> list[tuple[str, int]]:
    """(what an admin reads, how many) of a run's `left_out` or `withheld` counts."""
    return [(label(reason), n) for reason, n in (counts.get(key) or {}).items()]


def warnings(counts: dict) -> list[tuple[str, int, str]]:
    """(what a run could not check, how many, what to do about it) of a run's counts."""
    out = []
    for key, n in (counts.get("warnings") or {}).items():
        what, advice = WARNINGS.get(key, (key.replace("_", " "), ""))
        out.append((what, n, advice))
    return out


def _record(ctx, request: Request, schedule_id: str):
    """The schedule `schedule_id` (`?source=` picks one in both sources) that the viewer
    sees; NotFound (404) otherwise, as the API's `_schedule`."""
    try:
        number = int(schedule_id)
    except ValueError:
        raise BadRequest(f"schedule id: must be a whole number, got {schedule_id[:40]!r}") from None
    source = params.choice_of(request.args, "source", {"moodle", "file"})
    return scheduleview.get_schedule(ctx.scope, number, source)


def _href(record, suffix: str = "", **query) -> str:
    query = {"source": record.source, **{k: v for k, v in query.items() if v is not None}}
    return f"/schedules/{record.remote_id}{suffix}?{urlencode(query)}"


def schedules(ctx, request: Request) -> Response:
    tz = _tz(ctx)
    items = scheduleview.list_schedules(ctx.scope, ctx.now(), tz)
    return ctx.render("schedules.html", title="Schedules", nav="schedules", items=items,
                      tz=tz, local=local)  # fmt: skip


def schedule(ctx, request: Request, schedule_id: str) -> Response:
    record = _record(ctx, request, schedule_id)
    tz = _tz(ctx)
    item = scheduleview.schedule_json(record, ctx.now(), tz)
    after = params.decode_cursor(request.args, "runs", (str, int))
    page = scheduleview.list_runs(record, after, RUNS_PER_PAGE)
    older = params.encode_cursor("runs", page.next_key)
    queued = _queued(record, request)
    return ctx.render(
        "schedule.html",
        title=f"Schedule {item['name']}",
        nav="schedules",
        s=item,
        runs=page.items,
        older=_href(record, cursor=older) if older else None,
        queued=queued,
        href=lambda suffix="", **q: _href(record, suffix, **q),
        tz=tz,
        local=local,
        reasons=reasons,
        warnings=warnings,
    )


def _queued(record, request: Request) -> dict | None:
    """The run "run now" just made (`?queued=RUN_ID`), when it is this schedule's: the
    notice is read from the ledger, so a crafted link cannot make the page say more."""
    text = request.args.get("queued", "")
    if not text.isdigit():
        return None
    run = ScheduleRun.get_or_none(
        (ScheduleRun.id == int(text)) & (ScheduleRun.schedule == record.id)
    )
    return None if run is None else scheduleview.run_json(run)


def dry_run(ctx, request: Request, schedule_id: str) -> Response:
    record = _record(ctx, request, schedule_id)
    reissue = params.choice_of(request.args, "reissue", {"true", "false"}) == "true"
    runtime = ctx.dashboard.api.runtime_for_runs()  # 503 without the daemon, as the API
    with moodle_errors():
        outcome = scheduleview.dry_run(runtime, record, reissue=reissue)
    preview = scheduleview.preview_json(record, outcome)
    return ctx.render(
        "schedule_dry_run.html",
        title=f"Dry run of {record.name}",
        nav="schedules",
        p=preview,
        s=scheduleview.schedule_json(record, ctx.now(), _tz(ctx)),
        href=lambda suffix="", **q: _href(record, suffix, **q),
        tz=_tz(ctx),
        local=local,
        reasons=reasons,
        warnings=warnings,
    )


def run(ctx, request: Request, schedule_id: str) -> Response:
    """Run now: a recorded run at this second, its jobs queued for the daemon, audited
    (`schedule_run_now`, who asked); then the schedule's page says what was queued."""
    record = _record(ctx, request, schedule_id)
    runtime = ctx.dashboard.api.runtime_for_runs()
    with moodle_errors():
        outcome = scheduleview.run_now(runtime, record, **ctx.by())
    made = (ScheduleRun.select(ScheduleRun.id)
            .where(ScheduleRun.schedule == record.id, ScheduleRun.due_at == outcome.due_at)
            .order_by(ScheduleRun.id.desc()).first())  # fmt: skip
    resp = redirect(_href(record, queued=made.id if made else None), 303)
    resp.headers["Cache-Control"] = "no-store"
    return resp


HANDLERS = {
    "schedules": schedules,
    "schedule": schedule,
    "schedule_dry_run": dry_run,
    "schedule_run": run,
}
