"""The numbers behind the dashboard's charts: mail sent and failed per hour, a job's progress.

A recipient counts as sent at its `timesent` (status `sent`), as failed at its `updated_at`
(status `failed` or `permanently_failed`: the moment the failure was recorded; a message
that bounced after it was sent is permanently_failed, so it counts as failed, at the bounce).

Rows are counted in the database, never fetched. Sent mail per hour of every company: one
COUNT per hour, each over a range of the (status, timesent, updated_at, job_id) index
(migration 7); the rest is grouped by a bucket number, whole seconds since the start
divided by the bucket's width. The SQL is the same on SQLite, PostgreSQL and MariaDB but
for how a datetime is read as seconds (`_epoch`) and integer division (`_div`). Times are
naive UTC, like the ledger; functions take `now`, none reads the clock.
"""

import calendar
from collections.abc import Iterable
from datetime import datetime, timedelta
from itertools import pairwise
from typing import NamedTuple

from peewee import (
    SQL,
    MySQLDatabase,
    NodeList,
    PostgresqlDatabase,
    Select,
    SqliteDatabase,
    fn,
)

from sidecar.db.models import Job, Recipient, database
from sidecar.db.store import get_job
from sidecar.status import JOB_FINAL, RECIPIENT_FAILED, RecipientStatus

HOUR = 3600
FAILED = tuple(s.value for s in sorted(RECIPIENT_FAILED))
SENT = RecipientStatus.SENT.value


class Hour(NamedTuple):
    """One hour of the window: mail sent and failed in [start, start + 1 hour)."""

    start: datetime
    sent: int
    failed: int


class Point(NamedTuple):
    """A job's cumulative counts at `at` (events before it; the last point: all)."""

    at: datetime
    sent: int
    failed: int


def hourly(now: datetime, hours: int = 168, companies: Iterable[int] | None = None) -> list[Hour]:
    """Every hour of the last `hours` (the current, partial one last), oldest first, zero
    filled. `companies`: None counts every job, otherwise only jobs whose tenant_id is one
    of them (an empty collection counts nothing)."""
    if hours < 1:
        raise ValueError(f"hours must be at least 1, not {hours}")
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    starts = [first + timedelta(hours=i) for i in range(hours + 1)]
    wanted = None if companies is None else tuple(int(c) for c in companies)
    if wanted == ():
        return [Hour(starts[i], 0, 0) for i in range(hours)]
    sent = _count_hours(Recipient.timesent, (SENT,), starts, wanted)
    failed = _count_hours(Recipient.updated_at, FAILED, starts, wanted)
    return [Hour(starts[i], sent[i], failed[i]) for i in range(hours)]


def _count_hours(column, statuses, edges: list[datetime], companies) -> list[int]:
    """Rows of `statuses` whose `column` is in [edges[i], edges[i+1]), for each hour i.

    Sent mail of every company: one SELECT of one COUNT per hour, each a range of the
    (status, timesent, ...) index; grouping a week's 200,000 rows by an hour computed per
    row costs several times more (bench/activity.py). Otherwise grouped by hour: failed
    rows (few; the index holds their updated_at after timesent, so no range per hour),
    and some companies (their jobs' ids checked once per row, the list sent once)."""
    hours = len(edges) - 1
    if companies is None and column is Recipient.timesent:
        return _count_ranges(column, statuses, edges)
    where = [Recipient.status.in_(statuses), column >= edges[0], column < edges[-1]]
    if companies is not None:
        where.append(Recipient.job.in_(Job.select(Job.id).where(Job.tenant_id.in_(companies))))
    counts = [0] * hours
    for bucket, n in _count_by_bucket(column, edges[0], HOUR, where):
        if 0 <= bucket < hours:
            counts[bucket] += n
    return counts


#: the SQL text of `_count_ranges`, by (database class, column, statuses, hours): building
#: 168 sub-selects with peewee costs more than running them (bench/overview.py)
_RANGES_SQL: dict[tuple, str] = {}


def _count_ranges(column, statuses, edges: list[datetime]) -> list[int]:
    """One COUNT per [edges[i], edges[i+1]) of rows of `statuses`, in one SELECT. The SQL
    is built once per shape and kept; each call sends only the new parameters."""
    status_params = [Recipient.status.db_value(s) for s in statuses]
    params = [p for lo, hi in pairwise(edges)
              for p in (*status_params, column.db_value(lo), column.db_value(hi))]  # fmt: skip
    key = (type(database.obj), column.name, tuple(statuses), len(edges) - 1)
    sql = _RANGES_SQL.get(key)
    if sql is None:
        ranges = [
            Recipient.select(fn.COUNT(SQL("*")))
            .where(Recipient.status.in_(statuses), column >= lo, column < hi)
            .alias(f"h{i}")
            for i, (lo, hi) in enumerate(pairwise(edges))
        ]
        sql, built = Select(columns=ranges).bind(database).sql()
        if list(built) != params:  # not the expected shape: never keep it
            return [int(n) for n in database.execute_sql(sql, built).fetchone()]
        _RANGES_SQL[key] = sql
    return [int(n) for n in database.execute_sql(sql, params).fetchone()]


def job_progress(job_id: str, points: int = 60, *, now: datetime) -> list[Point]:
    """A job's cumulative sent and failed counts from its creation to its end (its
    finished_at when it is finished, else `now`): at most `points` points, the first at
    creation (0, 0), evenly spaced in whole seconds, each counting what happened before
    it; the last counts everything, events after the end included (a late report). An
    event recorded before creation (a worker's clock ahead of ours) counts at the second.
    Raises NotFound for an unknown job (a unique prefix of 8+ characters also works)."""
    if points < 2:
        raise ValueError(f"points must be at least 2, not {points}")
    job = get_job(job_id)
    start = job.created_at.replace(microsecond=0)
    end = job.finished_at if job.status in JOB_FINAL and job.finished_at else now
    end = max(end, start)
    span = max(1, _ceil_seconds(end - start))
    steps = min(points - 1, span)
    width = -(-span // steps)  # ceil: `steps` buckets of `width` seconds cover the span
    sent = [0] * (steps + 1)
    failed = [0] * (steps + 1)
    for column, statuses, counts in (
        (Recipient.timesent, (SENT,), sent),
        (Recipient.updated_at, FAILED, failed),
    ):
        where = [Recipient.job == job.id, Recipient.status.in_(statuses), column.is_null(False)]
        for bucket, n in _count_by_bucket(column, start, width, where):
            # bucket b: [start + b*width, start + (b+1)*width), in by point b + 1
            counts[min(max(bucket + 1, 1), steps)] += n
    out, s, f = [], 0, 0
    for i in range(steps + 1):
        s += sent[i]
        f += failed[i]
        out.append(Point(min(start + timedelta(seconds=i * width), end), s, f))
    return out


def _ceil_seconds(delta: timedelta) -> int:
    whole = int(delta.total_seconds())
    return whole + (1 if delta > timedelta(seconds=whole) else 0)


def _count_by_bucket(column, start: datetime, width: int, where: list):
    """(bucket, count) rows: bucket = (column - start) // width in whole seconds."""
    bucket = _bucket(column, start, width).alias("bucket")
    query = Recipient.select(bucket, fn.COUNT(SQL("*"))).where(*where)
    query = query.group_by(SQL("1")).tuples()  # the first column: same on the three
    return [(int(b), int(n)) for b, n in query]


def _bucket(column, start: datetime, width: int):
    """An SQL expression: whole `width`-second steps from `start` to the column's value,
    rounded down (toward zero before `start`). `start` and `width` are inlined as integer
    literals so the expression is the same text wherever it appears."""
    offset = SQL(str(int(calendar.timegm(start.timetuple()))))
    step = SQL(str(int(width)))
    return NodeList((SQL("("), _epoch(column), SQL("-"), offset, SQL(")"), _div(), step))


def _epoch(column):
    """Whole seconds from 1970-01-01 to the column's naive UTC value (fractions dropped)."""
    db = database.obj
    if isinstance(db, SqliteDatabase):  # TEXT 'YYYY-MM-DD HH:MM:SS[.ffffff]'
        return fn.strftime(SQL("'%s'"), column).cast("INTEGER")
    if isinstance(db, PostgresqlDatabase):  # timestamp without time zone: read as UTC
        return fn.FLOOR(fn.date_part(SQL("'epoch'"), column)).cast("BIGINT")
    if isinstance(db, MySQLDatabase):  # DATETIME: a difference, no session time zone
        return fn.TIMESTAMPDIFF(SQL("SECOND"), SQL("'1970-01-01 00:00:00'"), column)
    raise TypeError(f"unsupported database {type(db).__name__}")


def _div():
    """Integer division of two integers (truncating), as each database spells it."""
    return SQL("DIV") if isinstance(database.obj, MySQLDatabase) else SQL("/")
