"""Read synced schedules and their runs for the JSON API and the dashboard pages, limited to
what one principal may see (`sidecar.ledgerview.Scope`).

A schedule belongs to the IOMAD company named in its synced definition (`companyid`; 0 is
the whole site, which only a principal of every company sees). Runs are keyset-paginated
like the ledger's lists (`after`, `limit`, `Page.next_key`).
"""

from datetime import datetime
from zoneinfo import ZoneInfo

from schedules.model import MalformedSchedule, Schedule
from schedules.timing import next_due
from sidecar.db import store
from sidecar.db.models import ScheduleRecord, ScheduleRun
from sidecar.errors import NotFound
from sidecar.ledgerview import Page, Scope, _page, iso
from sidecar.runs import Runner, RunOutcome, accounting, aware, naive
from sidecar.schedulelist import find_schedule, run_counts


def _schedule(record: ScheduleRecord) -> Schedule:
    return Schedule.from_remote(record.data, record.source)


def visible(scope: Scope, record: ScheduleRecord) -> bool:
    return scope.companies is None or scope.sees(_schedule(record).companyid or None)


def get_schedule(scope: Scope, schedule_id: int, source: str | None = None) -> ScheduleRecord:
    """The synced schedule `schedule_id` (`source` moodle or file when both have it), when
    `scope` sees it. Raises NotFound otherwise, the same for another company's as for none."""
    try:
        record = find_schedule(schedule_id, source)
    except NotFound as exc:
        if "both sources" in str(exc):
            raise NotFound(f"schedule {schedule_id}: in both sources: add ?source=moodle or "
                           "?source=file") from None  # fmt: skip
        record = None
    if record is None or not visible(scope, record):
        raise NotFound(f"no schedule {schedule_id} (synced and not deleted)")
    return record


def next_due_at(schedule: Schedule, record: ScheduleRecord, now: datetime, tz: ZoneInfo):
    """(next due time as naive UTC or None, why none: deleted | disabled | invalid: field)."""
    if record.deleted_at is not None:
        return None, "deleted"
    if not schedule.enabled:
        return None, "disabled"
    try:
        return naive(next_due(schedule, aware(now), tz)), None
    except MalformedSchedule as exc:
        return None, f"invalid: {exc.field}"


def run_json(run: ScheduleRun) -> dict:
    counts = dict(run.counts or {})
    return {
        "id": run.id,
        "due_at": iso(run.due_at),
        "status": run.status,
        "manual": run.manual,
        "recipients": run.recipients,
        "counts": counts,
        "summary": run_counts(run),
        "route": run.route,
        "route_reason": run.route_reason,
        "jobs": counts.get("jobs", []),
        "error": run.error,
        "claimed_at": iso(run.claimed_at),
        "finished_at": iso(run.finished_at),
    }


def schedule_json(record: ScheduleRecord, now: datetime, tz: ZoneInfo) -> dict:
    s = _schedule(record)
    due, why = next_due_at(s, record, now, tz)
    last = (ScheduleRun.select().where(ScheduleRun.schedule == record.id)
            .order_by(ScheduleRun.due_at.desc()).first())  # fmt: skip
    return {
        "id": record.remote_id,
        "source": record.source,
        "name": s.name,
        "enabled": s.enabled,
        "company": s.companyid or None,
        "course": s.courseid,
        "frequency": s.frequency.value,
        "custom_interval": s.custom_interval or None,
        "action": s.action_type.value,
        "audience": s.audience.value,
        "cloud_preference": s.cloud_preference.value,
        "template_id": s.template_id,
        "next_due": iso(due),
        "next_due_local": None if due is None else aware(due).astimezone(tz).isoformat(),
        "next_due_note": why,
        "timezone": tz.key,
        "last_run": None if last is None else run_json(last),
        "synced_at": iso(record.synced_at),
        "deleted_at": iso(record.deleted_at),
    }


def list_schedules(scope: Scope, now: datetime, tz: ZoneInfo, include_deleted=False) -> list:
    """Every synced schedule `scope` sees, by source then id (the CLI's order), with its
    next due time and its last run."""
    query = ScheduleRecord.select().order_by(ScheduleRecord.source, ScheduleRecord.remote_id)
    if not include_deleted:
        query = query.where(ScheduleRecord.deleted_at.is_null())
    return [schedule_json(r, now, tz) for r in query if visible(scope, r)]


def list_runs(record: ScheduleRecord, after: tuple | None, limit: int) -> Page:
    """The schedule's runs, latest due time first (then id, both descending)."""
    query = ScheduleRun.select().where(ScheduleRun.schedule == record.id)
    if after is not None:
        at, run_id = datetime.fromisoformat(after[0]), after[1]
        query = query.where(
            (ScheduleRun.due_at < at) | ((ScheduleRun.due_at == at) & (ScheduleRun.id < run_id))
        )
    rows = list(query.order_by(ScheduleRun.due_at.desc(), ScheduleRun.id.desc()).limit(limit + 1))
    return _page(rows, limit, lambda r: (r.due_at.isoformat(), r.id), run_json)


def preview_json(record: ScheduleRecord, outcome) -> dict:
    """A dry run (`Runner.prepare`) as the CLI's `schedules run ID --dry-run` shows it."""
    c = outcome.counts
    sample = outcome.sample
    return {
        "schedule": {"id": record.remote_id, "source": record.source, "name": record.name},
        "due_at": iso(outcome.due_at),
        "recipients": outcome.recipients,
        "counts": c,
        "summary": accounting(c),
        "route": outcome.route.route,
        "route_reason": outcome.route.reason,
        "moodle_requests": c.get("moodle_requests"),
        "completion_method": c.get("completion_method"),
        "sample": None
        if sample is None
        else {
            "subject": sample.subject,
            "text": sample.text,
            "html": getattr(sample, "html", None),
        },
    }


def outcome_json(record: ScheduleRecord, outcome) -> dict:
    """A run fired now (`Runner.fire_now`): its status, counts, route and jobs."""
    return {
        "schedule": {"id": record.remote_id, "source": record.source, "name": record.name},
        "due_at": iso(outcome.due_at),
        "status": outcome.status,
        "recipients": outcome.recipients,
        "counts": outcome.counts,
        "summary": outcome.summary,
        "route": outcome.route.route if outcome.route else None,
        "route_reason": outcome.route.reason if outcome.route else None,
        "jobs": outcome.jobs,
        "error": outcome.error,
    }


def dry_run(runtime, record: ScheduleRecord, *, reissue: bool = False) -> RunOutcome:
    """`schedules run ID --dry-run`: what a run would do now; sends and records nothing.
    Raises what Runner.prepare raises (MoodleUnavailable, MoodleError, SidecarError)."""
    return Runner(runtime).prepare(_schedule(record), runtime.clock(), reissue=reissue)


def run_now(runtime, record: ScheduleRecord, **by) -> RunOutcome:
    """`schedules run ID`: a recorded run at this second, its jobs queued for the daemon,
    and an audit line `schedule_run_now` naming who asked (`by`, never a secret). Raises
    SidecarError when a run at this second exists already."""
    outcome = Runner(runtime).fire_now(record)
    store.audit("schedule_run_now", runtime.clock(), None, schedule=record.remote_id,
                schedule_source=record.source, status=outcome.status, jobs=outcome.jobs,
                **by)  # fmt: skip
    return outcome
