"""What `schedules list` shows, and finding one schedule by id."""

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from schedules.model import MalformedSchedule, Schedule
from schedules.timing import next_due
from sidecar.db.models import ScheduleRecord, ScheduleRun
from sidecar.errors import NotFound
from sidecar.runs import accounting, aware


@dataclass(frozen=True)
class ScheduleRow:
    id: int
    source: str
    name: str
    courseid: int
    frequency: str
    action: str
    next_due: str
    last_run: str


def schedule_rows(rt, *, include_deleted: bool = False) -> list[ScheduleRow]:
    tz = ZoneInfo(rt.config.schedules.timezone)
    now = aware(rt.clock())
    query = ScheduleRecord.select().order_by(ScheduleRecord.source, ScheduleRecord.remote_id)
    if not include_deleted:
        query = query.where(ScheduleRecord.deleted_at.is_null())
    rows = []
    for rec in query:
        s = Schedule.from_remote(rec.data, rec.source)
        last = (ScheduleRun.select().where(ScheduleRun.schedule == rec.id)
                .order_by(ScheduleRun.due_at.desc()).first())  # fmt: skip
        if rec.deleted_at is not None:
            upcoming = "deleted"
        elif not s.enabled:
            upcoming = "disabled"
        else:
            try:
                upcoming = f"{next_due(s, now, tz):%Y-%m-%d %H:%M}"
            except MalformedSchedule as exc:
                upcoming = f"invalid: {exc.field}"
        last_text = (
            f"{last.due_at:%Y-%m-%d %H:%M} {last.status}: {run_counts(last)}"
            if last else "never"
        )  # fmt: skip
        freq = s.frequency.value + (f"/{s.custom_interval}d" if s.custom_interval and
                                    s.frequency.value == "custom" else "")  # fmt: skip
        rows.append(ScheduleRow(rec.remote_id, rec.source, s.name, s.courseid, freq,
                                s.action_type.value, upcoming, last_text))  # fmt: skip
    return rows


def find_schedule(schedule_id: int, source: str | None = None) -> ScheduleRecord:
    """The synced schedule with this id. Raises NotFound with what to do."""
    query = ScheduleRecord.select().where(
        ScheduleRecord.remote_id == schedule_id, ScheduleRecord.deleted_at.is_null()
    )
    if source:
        query = query.where(ScheduleRecord.source == source)
    found = list(query)
    if not found:
        raise NotFound(f"schedule {schedule_id}: not synced (run `moodle-offload schedules sync`)")
    if len(found) > 1:
        raise NotFound(f"schedule {schedule_id}: in both sources: pass --source moodle or file")
    return found[0]


def run_counts(run: ScheduleRun) -> str:
    """A recorded run's learners, recipients and left out by reason."""
    counts = run.counts or {}
    if "learners" not in counts:
        return f"{run.recipients} recipients"
    return accounting(counts)


def run_of_job(job) -> ScheduleRun | None:
    """The schedule run that created `job`, or None for a job that no run created."""
    if job.run_id is None:
        return None
    return ScheduleRun.get_or_none(ScheduleRun.id == job.run_id)
