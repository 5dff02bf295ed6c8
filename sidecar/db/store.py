"""Every query and write of the ledger. Status changes are compare-and-set (never backwards).

Functions take `now` (naive UTC datetime); none reads the clock.
"""

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from peewee import Database, IntegrityError, SqliteDatabase, fn

from sidecar.db.models import (
    AuditLog,
    Batch,
    Job,
    Recipient,
    SeenCallback,
    SendKey,
    database,
)
from sidecar.errors import NotFound
from sidecar.status import (
    JOB_FINAL,
    JOB_PREDECESSORS,
    RECIPIENT_OPEN,
    RECIPIENT_PREDECESSORS,
    BatchStatus,
    JobStatus,
    RecipientStatus,
    settle_job,
)

log = logging.getLogger(__name__)

R = RecipientStatus
CHUNK = 5000


def db() -> Database:
    return database.obj


def atomic():
    """A write transaction. On SQLite it takes the write lock at BEGIN (IMMEDIATE): a
    deferred one that reads first cannot wait for the lock later, it fails at once."""
    if isinstance(db(), SqliteDatabase):
        return database.atomic(lock_type="IMMEDIATE")
    return database.atomic()


# --- bulk writes -------------------------------------------------------------------------


def bulk_insert(model, columns: Sequence[str], rows: Sequence[tuple]) -> None:
    """Insert rows with the driver's executemany (the naive ORM path is ~8x slower).

    Values must already be in database form (strings for JSON, db_value for dates).
    Call inside a transaction.
    """
    if not rows:
        return
    database_ = db()
    q0, q1 = database_.quote
    table = f"{q0}{model._meta.table_name}{q1}"
    cols = ", ".join(f"{q0}{c}{q1}" for c in columns)
    cursor = database_.cursor()
    if database_.param == "%s" and type(database_).__name__.startswith("Postgres"):
        from psycopg2.extras import execute_values

        execute_values(cursor, f"INSERT INTO {table} ({cols}) VALUES %s", rows, page_size=1000)
        return
    marks = ", ".join([database_.param] * len(columns))
    sql = f"INSERT INTO {table} ({cols}) VALUES ({marks})"
    for start in range(0, len(rows), CHUNK):
        cursor.executemany(sql, rows[start : start + CHUNK])


def upsert(model, key: dict, values: dict) -> None:
    """Update the row with `key`, or insert it: one portable form for SQLite, PostgreSQL
    and MariaDB (peewee's ON CONFLICT forms differ per backend). Call inside atomic()."""
    where = [getattr(model, k) == v for k, v in key.items()]
    if model.update(**values).where(*where).execute():
        return
    try:
        with database.atomic():  # a savepoint: PostgreSQL aborts the transaction otherwise
            model.insert(**key, **values).execute()
    except IntegrityError:  # inserted meanwhile by another process
        model.update(**values).where(*where).execute()


def insert_new(model, values: dict) -> bool:
    """Insert the row; False (and no change) when a row with its key is there already,
    inserted by another process meanwhile included. Call inside atomic()."""
    try:
        with database.atomic():  # a savepoint: PostgreSQL aborts the transaction otherwise
            model.insert(**values).execute()
    except IntegrityError:
        return False
    return True


def dbtime(value: datetime | None):
    """A datetime as the driver wants it for raw SQL (SQLite: peewee's text form)."""
    if value is not None and isinstance(db(), SqliteDatabase):
        return value.isoformat(" ")
    return value


# --- jobs ----------------------------------------------------------------------------------


def get_job(job_id: str) -> Job:
    """The job with this id (a unique prefix of 8+ characters also works). Raises NotFound."""
    job = Job.get_or_none(Job.id == job_id)
    if job is None and len(job_id) >= 8:
        matches = list(Job.select().where(Job.id.startswith(job_id)).limit(2))
        if len(matches) == 1:
            job = matches[0]
    if job is None:
        raise NotFound(f"job {job_id} not found: `moodle-offload jobs list` shows the jobs")
    return job


def list_jobs(limit: int = 50, status: str | None = None) -> list[Job]:
    query = Job.select().order_by(Job.created_at.desc(), Job.id).limit(limit)
    if status:
        query = query.where(Job.status == status)
    return list(query)


def recipient_counts(job_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """{job_id: {status: count}} for the given jobs."""
    out: dict[str, dict[str, int]] = {}
    ids = list(job_ids)
    if not ids:
        return out
    query = (
        Recipient.select(Recipient.job, Recipient.status, fn.COUNT(Recipient.id).alias("n"))
        .where(Recipient.job.in_(ids))
        .group_by(Recipient.job, Recipient.status)
        .tuples()
    )
    for job_id, status, n in query:
        out.setdefault(job_id, {})[status] = n
    return out


def move_job(job_id: str, new: JobStatus, now: datetime, error: str | None = None) -> bool:
    """Compare-and-set the job's status; False (and no change) when not allowed."""
    fields = {Job.status: new, Job.updated_at: now}
    if new in JOB_FINAL:
        fields[Job.finished_at] = now
    if error is not None:
        fields[Job.error] = error
    n = (
        Job.update(fields)
        .where(Job.id == job_id, Job.status.in_(list(JOB_PREDECESSORS[new])))
        .execute()
    )
    return n == 1


def taken_send_keys(key: str, userids: Sequence[int]) -> dict[int, str]:
    """{userid: job_id} for users an earlier job already holds under this idempotency key."""
    if not SendKey.select().where(SendKey.idempotency_key == key).exists():
        return {}  # the common case: a new key, nothing to look up
    wanted = set(userids)
    query = (
        SendKey.select(SendKey.userid, SendKey.job_id)
        .where(SendKey.idempotency_key == key)
        .tuples()
    )
    return {uid: job for uid, job in query.iterator() if uid in wanted}


def taken_keys(pairs: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """{(key, userid): job_id} for the pairs an earlier job already holds (any action)."""
    wanted = set(pairs)
    keys = sorted({k for k, _ in wanted})
    out: dict[tuple[str, int], str] = {}
    for start in range(0, len(keys), 900):
        query = (
            SendKey.select(SendKey.idempotency_key, SendKey.userid, SendKey.job_id)
            .where(SendKey.idempotency_key.in_(keys[start : start + 900]))
            .tuples()
        )
        for key, uid, job in query.iterator():
            if (key, uid) in wanted:
                out[(key, uid)] = job
    return out


# --- recipients ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Update:
    """One recipient's outcome, from a local delivery or a worker's callback."""

    userid: int
    status: RecipientStatus  # SENT, FAILED or RETRY_PENDING
    external_id: str | None = None
    certificate_key: str | None = None
    timesent: datetime | None = None
    error: str | None = None
    attempts: int | None = None  # None: one more than recorded
    next_attempt_at: datetime | None = None


def apply_updates(
    job_id: str, batch_id: str, updates: Sequence[Update], now: datetime, max_attempts: int
) -> tuple[int, list[int]]:
    """Apply outcomes to one batch's recipients; returns (accepted, ignored userids).

    Idempotent: an update that would move a recipient backwards (or repeats one already
    applied), or names a user not in the batch, changes nothing and is counted as ignored.
    A failure that reaches `max_attempts` becomes permanently_failed. Call inside a
    transaction. The UPDATEs keep their compare-and-set guard; the statuses read first
    only decide which rows to send and what to report.
    """
    database_ = db()
    p = database_.param
    q0, q1 = database_.quote
    t = f"{q0}recipient{q1}"
    cursor = database_.cursor()
    cursor.execute(f"SELECT userid, status, bounced_at FROM {t} WHERE batch_id = {p}", (batch_id,))
    current, bounced = {}, set()
    for uid, status, bounced_at in cursor.fetchall():
        current[uid] = RecipientStatus(status)
        if bounced_at is not None:
            bounced.add(uid)

    chosen: dict[RecipientStatus, list[Update]] = {R.SENT: [], R.FAILED: [], R.RETRY_PENDING: []}
    ignored: list[int] = []
    for u in updates:
        old = current.get(u.userid)
        if old is None or u.status not in chosen or old not in RECIPIENT_PREDECESSORS[u.status]:
            ignored.append(u.userid)
            continue
        if u.status == R.SENT and u.userid in bounced:  # a late report of a bounced send
            ignored.append(u.userid)
            continue
        chosen[u.status].append(u)
        current[u.userid] = u.status  # a second update for the same user sees this one

    where = f"job_id = {p} AND batch_id = {p} AND userid = {p}"
    stamp = dbtime(now)
    key = (job_id, batch_id)
    statements: list[tuple[str, list[tuple]]] = []
    if chosen[R.SENT]:
        sql = (
            f"UPDATE {t} SET status = '{R.SENT.value}', external_id = {p}, certificate_key = {p}, "
            f"timesent = {p}, last_error = NULL, next_attempt_at = NULL, updated_at = {p} "
            f"WHERE {where} AND status IN ({_in_list(RECIPIENT_PREDECESSORS[R.SENT])}) "
            "AND bounced_at IS NULL"
        )
        rows = [
            (u.external_id, u.certificate_key, dbtime(u.timesent) if u.timesent else stamp, stamp,
             *key, u.userid)
            for u in chosen[R.SENT]
        ]  # fmt: skip
        statements.append((sql, rows))
    if chosen[R.FAILED]:
        sql = (
            f"UPDATE {t} SET status = CASE WHEN COALESCE({p}, attempts + 1) >= {p} "
            f"THEN '{R.PERMANENTLY_FAILED.value}' ELSE '{R.FAILED.value}' END, "
            f"attempts = COALESCE({p}, attempts + 1), last_error = {p}, next_attempt_at = NULL, "
            f"updated_at = {p} "
            f"WHERE {where} AND status IN ({_in_list(RECIPIENT_PREDECESSORS[R.FAILED])})"
        )
        rows = [
            (u.attempts, max_attempts, u.attempts, (u.error or "failed")[:2000], stamp, *key,
             u.userid)
            for u in chosen[R.FAILED]
        ]  # fmt: skip
        statements.append((sql, rows))
    if chosen[R.RETRY_PENDING]:
        sql = (
            f"UPDATE {t} SET status = '{R.RETRY_PENDING.value}', "
            f"attempts = COALESCE({p}, attempts + 1), last_error = {p}, next_attempt_at = {p}, "
            f"updated_at = {p} WHERE {where} AND status IN ({_in_list({R.QUEUED})})"
        )
        rows = [
            (u.attempts, (u.error or "")[:2000], dbtime(u.next_attempt_at), stamp, *key, u.userid)
            for u in chosen[R.RETRY_PENDING]
        ]
        statements.append((sql, rows))

    accepted = 0
    for sql, rows in statements:
        if len(rows) == 1:
            cursor.execute(sql, rows[0])
        else:
            cursor.executemany(sql, rows)
        accepted += max(cursor.rowcount, 0)
    if accepted:
        refresh_progress(job_id, batch_id, now)
    return accepted, ignored


def _in_list(statuses) -> str:
    return ", ".join(f"'{s.value}'" for s in sorted(statuses))


def batch_userids(batch_id: str, userids: Sequence[int]) -> set[int]:
    """The subset of `userids` that belong to the batch."""
    found: set[int] = set()
    for start in range(0, len(userids), 900):
        chunk = list(userids[start : start + 900])
        query = Recipient.select(Recipient.userid).where(
            Recipient.batch == batch_id, Recipient.userid.in_(chunk)
        )
        found.update(uid for (uid,) in query.tuples())
    return found


def refresh_progress(job_id: str, batch_id: str | None, now: datetime) -> JobStatus | None:
    """Close the batch when nothing in it is open, and settle the job when no batch is.

    Returns the job's final status when this call settled it.
    """
    open_statuses = [s.value for s in RECIPIENT_OPEN]
    if batch_id is not None:
        still_open = (
            Recipient.select(Recipient.id)
            .where(Recipient.batch == batch_id, Recipient.status.in_(open_statuses))
            .exists()
        )
        if not still_open:
            Batch.update(status=BatchStatus.DONE, lease_until=None, updated_at=now).where(
                Batch.id == batch_id,
                Batch.status.in_([BatchStatus.QUEUED, BatchStatus.PROCESSING, BatchStatus.PENDING]),
            ).execute()
    move_job(job_id, JobStatus.PROCESSING, now)
    unfinished = (
        Batch.select(Batch.id)
        .where(Batch.job == job_id, Batch.status.not_in([BatchStatus.DONE, BatchStatus.CANCELLED]))
        .exists()
    )
    if unfinished:
        return None
    return settle(job_id, now)


def settle(job_id: str, now: datetime) -> JobStatus | None:
    """Give the job its final status if no recipient is open; returns it when set."""
    counts = recipient_counts([job_id]).get(job_id, {})
    final = settle_job(counts)
    if final is not None and move_job(job_id, final, now):
        log.info("job %s: %s", job_id, final.value)
        return final
    return None


# --- callbacks -----------------------------------------------------------------------------


def remember_callback(
    callback_id: str, job_id: str, batch_id: str, accepted: int, ignored: int, now: datetime
) -> None:
    """Record an applied callback. Raises IntegrityError when its id was seen before."""
    SeenCallback.insert(
        callback_id=callback_id,
        job_id=job_id,
        batch_id=batch_id,
        accepted=accepted,
        ignored=ignored,
        received_at=now,
    ).execute()


def get_batch(batch_id: str) -> Batch | None:
    return Batch.get_or_none(Batch.id == batch_id)


# --- audit ---------------------------------------------------------------------------------


def audit(event: str, now: datetime, job_id: str | None = None, **detail) -> None:
    """Append one audit line. `detail` must never carry a secret."""
    AuditLog.insert(
        at=now, event=event, job_id=job_id, detail=json.dumps(detail, default=str, sort_keys=True)
    ).execute()
