"""Mail to the site's admins (`[alerts] admin_emails`): a stuck job, once; the daily report.

Both are jobs of the ledger, so the ledger's own exactly-once machinery holds: a stuck
job's alert is a `stuck_alert` job under the idempotency key `stuck_alert:<job id>`, the
day's report a `daily_report` job under `daily_report:<YYYY-MM-DD>` (the site's date).
Their recipients are the admin addresses, which are not Moodle users: each gets a stable
synthetic user id, minus its position in the sorted list, so the send keys (key, userid)
stop a second daemon on the same database from creating the job again (it gets an
IntegrityError on the send key, or finds the job, and leaves it). Both go by the local
route: the daemon's delivery loop sends them even when the cloud is down.
"""

import logging
import re
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from peewee import IntegrityError, fn

from sidecar import jobs
from sidecar.config import Config
from sidecar.db import store
from sidecar.db.models import Batch, Certificate, Job, OptOut, Recipient, SuppressedAddress
from sidecar.status import BatchStatus, RecipientStatus

log = logging.getLogger(__name__)

STUCK_ALERT = "stuck_alert"
DAILY_REPORT = "daily_report"
#: our own mail: never itself the subject of a stuck alert (it would go the same way)
OWN_TYPES = (STUCK_ALERT, DAILY_REPORT)
#: failure reasons the report lists at most
TOP_REASONS = 5

_ADDRESS = re.compile(r"[^\s<>()\"',;:]+@[^\s<>()\"',;:]+")


def admin_recipients(config: Config) -> list[jobs.RecipientIn]:
    """The admin addresses as recipients. Synthetic user ids: -1, -2, ... by position in
    the sorted list (never a Moodle id, which is positive; the same for every daemon
    reading the same config)."""
    return [
        jobs.RecipientIn(userid=-(i + 1), email=address)
        for i, address in enumerate(sorted(config.alerts.admin_emails))
    ]


def _create_once(config: Config, spec: jobs.JobSpec, now: datetime) -> str | None:
    """Create the job unless its key already has one: its id, or None when another
    daemon (or an earlier tick) made it."""
    if Job.select().where(Job.idempotency_key == spec.idempotency_key).exists():
        return None
    try:
        created = jobs.create_job(
            spec, admin_recipients(config), batch_size=config.offload.job_batch_size, now=now
        )
    except Exception as exc:
        if not _duplicate(exc):
            raise
        return None  # the other daemon committed the same send keys first
    if created.pending == 0:  # raced: every address already held by the other one's job
        with store.atomic():
            Recipient.delete().where(Recipient.job == created.job_id).execute()
            Batch.delete().where(Batch.job == created.job_id).execute()
            Job.delete().where(Job.id == created.job_id).execute()
        return None
    return created.job_id


def _duplicate(exc: Exception) -> bool:
    """A unique key taken: peewee's IntegrityError, or the driver's own (store.bulk_insert
    uses the driver's executemany: psycopg2, pymysql and sqlite3 each raise theirs)."""
    if isinstance(exc, IntegrityError):
        return True
    return any(c.__name__ == "IntegrityError" for c in type(exc).__mro__)


# --- stuck jobs -------------------------------------------------------------------------------


def cause_of(job: dict) -> tuple[str, str]:
    """(likely cause, last error) of a stuck job, by its route and its batches' states."""
    states = Counter(
        s for (s,) in Batch.select(Batch.status).where(Batch.job == job["id"]).tuples()
    )
    last = (
        Recipient.select(Recipient.last_error)
        .where(Recipient.job == job["id"], Recipient.last_error.is_null(False))
        .order_by(Recipient.updated_at.desc())
        .limit(1)
        .scalar()
    )
    last = _ADDRESS.sub("<address>", last or "")[:500]
    route = job["route"]
    if route == "local":
        cause = (
            "the SMTP server is refusing mail or cannot be reached (the job's route is local); "
            "see the job's last errors"
        )
    elif states[BatchStatus.QUEUED] or states[BatchStatus.PROCESSING]:
        cause = (
            f"batches were handed to {route} but no report came back: the provider's queue "
            f"is not drained or its worker is not reporting"
        )
    elif states[BatchStatus.PENDING]:
        cause = (
            f"no batch was handed to {route}: the daemon's cloud submission is paused "
            f"(is {route} reachable? see the daemon's log)"
        )
    else:
        cause = f"its batches are {', '.join(sorted(states)) or 'missing'} on route {route}"
    return cause, last


def alert_stuck(config: Config, now: datetime) -> list[str]:
    """One alert job per newly stuck job; the ids of the jobs alerted now."""
    from sidecar.health import _ago, stuck_jobs

    if not config.alerts.admin_emails:
        return []
    after = timedelta(seconds=config.dashboard.stuck_after)
    alerted = []
    for row in stuck_jobs(now - after):
        if row["type"] in OWN_TYPES:
            continue
        key = f"{STUCK_ALERT}:{row['id']}"
        if Job.select().where(Job.idempotency_key == key).exists():
            continue
        job = Job.get_by_id(row["id"])
        info = {"id": job.id, "route": job.route, "status": job.status}
        cause, last_error = cause_of(info)
        data = {
            "job": {**info, "type": job.type, "total": job.total},
            "idle": _ago(now - row["last_activity"]),
            "stuck_after": _ago(after),
            "cause": cause,
            "last_error": last_error,
            "dashboard_url": _dashboard(config, f"/jobs/{job.id}"),
        }
        spec = jobs.JobSpec(type=STUCK_ALERT, template_id=f"alerts/{STUCK_ALERT}", source="alerts",
                            idempotency_key=key, template_data=data)  # fmt: skip
        if _create_once(config, spec, now):
            log.warning("job %s stuck for %s (%s): admins alerted", job.id, data["idle"], cause)
            alerted.append(job.id)
    return alerted


def _dashboard(config: Config, path: str = "") -> str:
    return config.server.public_url.rstrip("/") + path


# --- the daily report -------------------------------------------------------------------------


def report_day(config: Config, now: datetime) -> str | None:
    """The site's date whose report is due at `now` (naive UTC), or None before the hour."""
    at = config.alerts.daily_report_at
    if not at or not config.alerts.admin_emails:
        return None
    local = now.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(config.schedules.timezone))
    if local.strftime("%H:%M") < at:
        return None
    return local.date().isoformat()


def report_data(config: Config, now: datetime) -> dict:
    """The figures of the 24 hours before `now`."""
    from sidecar.health import _ago, stuck_jobs

    since = now - timedelta(hours=24)
    in_window = Job.select(Job.id).where(Job.created_at >= since, Job.type.not_in(OWN_TYPES))
    by_status = dict(
        Job.select(Job.status, fn.COUNT(Job.id))
        .where(Job.created_at >= since, Job.type.not_in(OWN_TYPES))
        .group_by(Job.status)
        .tuples()
    )
    failed = (RecipientStatus.FAILED, RecipientStatus.PERMANENTLY_FAILED)
    reasons: Counter[str] = Counter()
    query = Recipient.select(Recipient.last_error).where(
        Recipient.job.in_(in_window), Recipient.status.in_(failed)
    )
    for (error,) in query.tuples().iterator():
        reasons[_ADDRESS.sub("<address>", error or "no reason recorded")[:200]] += 1
    suppressed = dict(
        SuppressedAddress.select(SuppressedAddress.source, fn.COUNT(SuppressedAddress.email))
        .where(SuppressedAddress.created_at >= since)
        .group_by(SuppressedAddress.source)
        .tuples()
    )
    after = timedelta(seconds=config.dashboard.stuck_after)
    stuck = [
        {
            "id": r["id"],
            "type": r["type"],
            "status": r["status"],
            "idle": _ago(now - r["last_activity"]),
        }  # fmt: skip
        for r in stuck_jobs(now - after)
        if r["type"] not in OWN_TYPES
    ]
    return {
        "since": since.isoformat(timespec="minutes") + "Z",
        "until": now.isoformat(timespec="minutes") + "Z",
        "jobs_total": sum(by_status.values()),
        "jobs_by_status": dict(sorted(by_status.items())),
        "failures": sum(reasons.values()),
        "top_reasons": [[r, n] for r, n in reasons.most_common(TOP_REASONS)],
        "bounces": suppressed.get("ses_bounce", 0),
        "complaints": suppressed.get("ses_complaint", 0),
        "suppressed": sum(suppressed.values()),
        "unsubscribes": OptOut.select().where(OptOut.created_at >= since).count(),
        "certificates": Certificate.select().where(Certificate.issued_at >= since).count(),
        "stuck": stuck,
        "dashboard_url": _dashboard(config, "/"),
    }


def daily_report(config: Config, now: datetime) -> str | None:
    """Create the day's report job when it is due and not yet made: its id, else None."""
    day = report_day(config, now)
    if day is None:
        return None
    key = f"{DAILY_REPORT}:{day}"
    if Job.select().where(Job.idempotency_key == key).exists():
        return None
    data = {**report_data(config, now), "day": day}
    spec = jobs.JobSpec(type=DAILY_REPORT, template_id=f"alerts/{DAILY_REPORT}", source="alerts",
                        idempotency_key=key, template_data=data)  # fmt: skip
    job_id = _create_once(config, spec, now)
    if job_id:
        log.info("daily report for %s: job %s", day, job_id)
    return job_id


def tick(config: Config, now: datetime, *, stuck: bool = True) -> bool:
    """One check (the daemon's alerts loop, every minute): True when it made a job.
    Needs an open connection."""
    made = bool(alert_stuck(config, now)) if stuck else False
    return bool(daily_report(config, now)) or made
