"""Erasure: one user on request (`purge-user`, `POST /api/v1/users/{id}/purge`) and every
finished job's recipients after `[retention] recipient_days` (docs/privacy.md).

A recipient row is never deleted: job totals and counts by status are counted from the
rows, so erasing blanks the address, names, variables (the sealed temporary password
included) and the address inside the last error, and keeps status, attempts and times.
A purged user's rows also lose their user id (it becomes minus the row's id, unique in
its job), so nothing left in the ledger points at them; retention keeps the Moodle user id.

Writes go in transactions of `BATCH` rows at most, so a callback never waits long for the
ledger; files and objects are deleted before the rows that name them, so a run cut short
is finished by the next one.
"""

import logging
import re
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from peewee import SqliteDatabase

from providers.base import ProviderError
from sidecar import erasures, suppression
from sidecar.db import store
from sidecar.db.models import (
    AuditLog,
    Certificate,
    Job,
    OptOut,
    Recipient,
    SendKey,
    SuppressedAddress,
)
from sidecar.status import JOB_FINAL, RECIPIENT_OPEN, RecipientStatus

log = logging.getLogger(__name__)

BATCH = 500
ERASED = "[address erased]"
#: a certificate whose PDF retention deleted: the record (and /verify) stays
ERASED_STORAGE = "erased"
_STORE_NAME = {"local": "locally (providers.local.certificate_dir)", "s3": "from S3",
               "r2": "from R2"}  # fmt: skip


@dataclass
class PurgeReport:
    """What `purge_user` erased or deleted, where; `problems` it could not (run it again)."""

    userid: int
    recipients: int = 0
    jobs: int = 0
    cancelled: int = 0  # of `recipients`: not sent yet, now never
    certificates: dict[str, int] = field(default_factory=dict)  # storage -> files deleted
    certificate_records: int = 0
    send_keys: int = 0
    suppressed_hashed: int = 0
    suppressed_deleted: int = 0
    opt_outs: int = 0
    audit_lines: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        counts = (self.recipients, self.certificate_records, self.send_keys,
                  self.suppressed_hashed, self.suppressed_deleted, self.opt_outs,
                  self.audit_lines, *self.certificates.values())  # fmt: skip
        return not any(counts)

    def lines(self) -> list[str]:
        """One line per place, for a terminal."""
        u = self.userid
        if self.is_empty and not self.problems:
            return [f"user {u}: nothing left to delete"]
        out = []
        if self.recipients:
            out.append(f"ledger: {self.recipients} recipient rows in {self.jobs} jobs erased "
                       "(address, names, variables, errors, user id; counts kept)")  # fmt: skip
        if self.cancelled:
            out.append(f"ledger: {self.cancelled} of them not sent yet: cancelled")
        for storage, n in sorted(self.certificates.items()):
            out.append(f"certificates: {n} PDFs deleted {_STORE_NAME.get(storage, storage)}")
        if self.certificate_records:
            out.append(f"certificates: {self.certificate_records} records deleted "
                       "(their links and verification pages now answer 404)")  # fmt: skip
        if self.send_keys:
            out.append(f"ledger: {self.send_keys} send keys deleted")
        if self.suppressed_hashed:
            out.append(
                f"suppression list: {self.suppressed_hashed} addresses kept only as a SHA-256 "
                "hash (still suppressed; --include-suppression deletes them)"
            )
        if self.suppressed_deleted:
            out.append(f"suppression list: {self.suppressed_deleted} entries deleted")
        if self.opt_outs:
            out.append(f"unsubscribes: {self.opt_outs} entries deleted")
        if self.audit_lines:
            out.append(f"audit log: {self.audit_lines} lines rewritten without the address")
        out.extend(f"NOT DONE: {p}" for p in self.problems)
        return out

    def as_json(self) -> dict:
        return {
            "userid": self.userid, "recipients": self.recipients, "jobs": self.jobs,
            "cancelled": self.cancelled,
            "certificate_files": dict(self.certificates),
            "certificate_records": self.certificate_records, "send_keys": self.send_keys,
            "suppressed_hashed": self.suppressed_hashed,
            "suppressed_deleted": self.suppressed_deleted, "opt_outs": self.opt_outs,
            "audit_lines": self.audit_lines, "problems": list(self.problems),
            "nothing_left": self.is_empty and not self.problems,
        }  # fmt: skip


Stores = dict[str, Callable[[], object]]  # storage ("s3", "r2") -> its bucket, built lazily


def _delete_file(storage: str, key: str, certificate_dir: Path, stores: Stores) -> bool:
    """Delete one stored PDF; True when something was deleted. Raises ProviderError."""
    if storage == "local":
        path = certificate_dir / key
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True
    if storage not in stores:
        raise ProviderError(
            f"certificate {key} is stored in {storage.upper()}, whose provider is not configured"
        )
    return stores[storage]().delete(key)


def _address_pattern(addresses: Sequence[str]) -> re.Pattern | None:
    if not addresses:
        return None
    return re.compile("|".join(re.escape(a) for a in sorted(addresses, key=len, reverse=True)),
                      re.IGNORECASE)  # fmt: skip


def purge_user(
    userid: int, *, certificate_dir: Path, stores: Stores, include_suppression: bool,
    now: datetime, by: dict | None = None,
) -> PurgeReport:  # fmt: skip
    """Erase everything the ledger holds about one Moodle user; idempotent (a second run
    reports nothing left). A PDF that cannot be deleted keeps its record and is named in
    `problems`, so running it again finishes the job."""
    with _secure_delete():
        report = _purge(userid, certificate_dir, stores, include_suppression, now, by)
    _flush_sqlite()
    log.info("user %s purged: %s", userid, "; ".join(report.lines()))
    return report


def _purge(userid, certificate_dir, stores, include_suppression, now, by) -> PurgeReport:
    report = PurgeReport(userid)
    addresses = {
        e.lower()
        for (e,) in Recipient.select(Recipient.email)
        .where(Recipient.userid == userid, Recipient.email != "")
        .distinct()
        .tuples()
    }
    plain_suppressed = [
        e for (e,) in SuppressedAddress.select(SuppressedAddress.email)
        .where(SuppressedAddress.userid == userid).tuples()
        if not e.startswith(suppression.HASH_PREFIX)
    ]  # fmt: skip
    addresses.update(a.lower() for a in plain_suppressed)
    pattern = _address_pattern(list(addresses))

    for cert in Certificate.select().where(Certificate.userid == userid).order_by(Certificate.code):
        if cert.storage != ERASED_STORAGE:
            try:
                if _delete_file(cert.storage, cert.key, certificate_dir, stores):
                    report.certificates[cert.storage] = report.certificates.get(cert.storage, 0) + 1
            except (ProviderError, OSError) as exc:
                report.problems.append(f"certificate {cert.code}: {exc}")
                continue
        with store.atomic():
            report.certificate_records += (
                Certificate.delete().where(Certificate.code == cert.code).execute()
            )

    rows = list(
        Recipient.select(Recipient.id, Recipient.job, Recipient.batch, Recipient.status,
                         Recipient.last_error)
        .where(Recipient.userid == userid)
        .tuples()
    )  # fmt: skip
    report.jobs = len({job for _, job, _, _, _ in rows})
    open_ = {s.value for s in RECIPIENT_OPEN}
    stopped: set[tuple[str, str]] = set()
    for start in range(0, len(rows), BATCH):
        with store.atomic():
            for rid, job, batch, status, error in rows[start : start + BATCH]:
                if error and pattern is not None:
                    error = pattern.sub(ERASED, error)
                fields = dict(userid=-rid, email="", firstname="", lastname="", vars={},
                              last_error=error, certificate_key=None, external_id=None)  # fmt: skip
                if status in open_:  # never sent now: there is no address to send to
                    fields.update(status=RecipientStatus.CANCELLED, next_attempt_at=None,
                                  updated_at=now)  # fmt: skip
                    stopped.add((job, batch))
                report.recipients += Recipient.update(**fields).where(Recipient.id == rid).execute()
    for job, batch in sorted(stopped):  # a batch left with nothing open is done
        with store.atomic():
            if (
                not Recipient.select()
                .where(Recipient.batch == batch, Recipient.status.in_(sorted(open_)))
                .exists()
            ):
                store.refresh_progress(job, batch, now)  # fmt: skip
    report.cancelled = sum(1 for r in rows if r[3] in open_)

    with store.atomic():
        report.send_keys = SendKey.delete().where(SendKey.userid == userid).execute()
        forms = set(addresses) | {suppression.key(a) for a in addresses}
        by_user = (SuppressedAddress.userid == userid) | SuppressedAddress.email.in_(sorted(forms))
        if include_suppression:
            hashes = sorted(suppression.hashed(a) for a in addresses)
            report.suppressed_deleted = (
                SuppressedAddress.delete()
                .where(by_user | SuppressedAddress.email.in_(hashes or [""]))
                .execute()
            )
            report.opt_outs = OptOut.delete().where(OptOut.userid == userid).execute()
        else:
            for row in SuppressedAddress.select().where(
                by_user, ~SuppressedAddress.email.startswith(suppression.HASH_PREFIX)
            ):
                digest = suppression.hashed(row.email)
                reason = pattern.sub(ERASED, row.reason) if pattern else row.reason
                if SuppressedAddress.get_or_none(SuppressedAddress.email == digest) is None:
                    SuppressedAddress.update(email=digest, reason=reason).where(
                        SuppressedAddress.email == row.email
                    ).execute()
                else:
                    SuppressedAddress.delete().where(SuppressedAddress.email == row.email).execute()
                report.suppressed_hashed += 1

    report.audit_lines = _rewrite_audit(list(addresses), pattern)
    if not report.is_empty:
        with store.atomic():
            store.audit("user_purged", now, None,
                        include_suppression=include_suppression, **report.as_json(),
                        **(by or {}))  # fmt: skip
    return report


def _rewrite_audit(addresses: list[str], pattern: re.Pattern | None) -> int:
    if pattern is None:
        return 0
    n = 0
    for address in addresses:
        last = 0
        while True:  # the audit log may be long: page through it by id
            rows = list(
                AuditLog.select(AuditLog.id, AuditLog.detail)
                .where(AuditLog.detail.contains(address), AuditLog.id > last)
                .order_by(AuditLog.id)
                .limit(BATCH)
                .tuples()
            )
            if not rows:
                break
            last = rows[-1][0]
            with store.atomic():
                for aid, detail in rows:
                    clean = pattern.sub(ERASED, detail)
                    if clean != detail:
                        AuditLog.update(detail=clean).where(AuditLog.id == aid).execute()
                        n += 1
    return n


@contextmanager
def _secure_delete():
    """On SQLite, overwrite freed space with zeros while erasing (`PRAGMA secure_delete`):
    otherwise the old address stays readable in the file's free space."""
    db = store.db()
    if not isinstance(db, SqliteDatabase):
        yield
        return
    (before,) = db.execute_sql("PRAGMA secure_delete").fetchone()
    db.execute_sql("PRAGMA secure_delete = ON")
    try:
        yield
    finally:
        db.execute_sql(f"PRAGMA secure_delete = {int(before)}")


def _flush_sqlite() -> None:
    """SQLite keeps old page images in the WAL until a checkpoint: move them into the
    database file (where secure_delete zeroed the freed space) and empty the WAL."""
    db = store.db()
    if isinstance(db, SqliteDatabase):
        busy, _, _ = db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning("purge: the WAL could not be emptied now (a reader holds it); "
                        "SQLite empties it at the next checkpoint")  # fmt: skip


# --- retention ---------------------------------------------------------------------------


@dataclass
class RetentionReport:
    jobs: int = 0
    recipients: int = 0
    certificates: int = 0
    transactions: int = 0
    longest_write: float = 0.0  # seconds, the longest write transaction
    problems: list[str] = field(default_factory=list)


def _timed(report: RetentionReport, clock: Callable[[], float]):
    class _T:
        def __enter__(self):
            self.tx = store.atomic()
            self.tx.__enter__()
            self.t0 = clock()

        def __exit__(self, *exc):
            out = self.tx.__exit__(*exc)
            report.transactions += 1
            report.longest_write = max(report.longest_write, clock() - self.t0)
            return out

    return _T()


def erase_job(job_id: str, now: datetime, why: str, report: RetentionReport,
              perf: Callable[[], float], batch: int = BATCH) -> int:  # fmt: skip
    """Erase the personal data of one job's recipients, `batch` rows a transaction, then
    record on the job what was erased. Returns rows erased. Idempotent."""
    database_ = store.db()
    q0, q1 = database_.quote
    p = database_.param
    t = f"{q0}recipient{q1}"
    cursor = database_.cursor()
    last, erased = 0, 0
    while True:
        cursor.execute(
            f"SELECT id FROM {t} WHERE job_id = {p} AND id > {p} ORDER BY id LIMIT {int(batch)}",
            (job_id, last),
        )
        ids = [r[0] for r in cursor.fetchall()]
        if not ids:
            break
        last = ids[-1]
        marks = ", ".join([p] * len(ids))
        # last_error first: MariaDB evaluates SET left to right, with the new values
        sql = (
            f"UPDATE {t} SET last_error = REPLACE(last_error, email, {p}), email = '', "
            f"firstname = '', lastname = '', vars = '{{}}' WHERE id IN ({marks}) AND email <> ''"
        )
        with _timed(report, perf):
            c = database_.cursor()
            c.execute(sql, (ERASED, *ids))
            erased += max(c.rowcount, 0)
    with store.atomic():
        Job.update(erased_at=now, erased=erasures.record(why)).where(Job.id == job_id).execute()
    return erased


def run_retention(
    *, recipient_days: int, certificate_days: int | None, certificate_dir: Path,
    stores: Stores, now: datetime, perf: Callable[[], float], batch: int = BATCH,
) -> RetentionReport:  # fmt: skip
    """Erase what `[retention]` says is too old: finished jobs' recipients, stored PDFs.
    Idempotent; every write transaction holds at most `batch` rows."""
    with _secure_delete():
        report = _retain(recipient_days, certificate_days, certificate_dir, stores, now, perf,
                         batch)  # fmt: skip
    _flush_sqlite()
    return report


def _retain(recipient_days, certificate_days, certificate_dir, stores, now, perf, batch):
    report = RetentionReport()
    cutoff = now - timedelta(days=recipient_days)
    due = [
        job_id
        for (job_id,) in Job.select(Job.id)
        .where(Job.status.in_([s.value for s in JOB_FINAL]), Job.finished_at < cutoff,
               Job.erased_at.is_null())
        .order_by(Job.finished_at)
        .tuples()
    ]  # fmt: skip
    why = f"retention: finished more than {recipient_days} days ago"
    for job_id in due:
        report.recipients += erase_job(job_id, now, why, report, perf, batch)
        report.jobs += 1
        log.info("job %s: recipients' personal data erased (%s)", job_id, why)
    if certificate_days is not None:
        _expire_certificates(now - timedelta(days=certificate_days), certificate_dir, stores,
                             report, perf, batch)  # fmt: skip
    return report


def _expire_certificates(cutoff, certificate_dir, stores, report, perf, batch) -> None:
    after = ""
    while True:
        certs = list(
            Certificate.select(Certificate.code, Certificate.storage, Certificate.key)
            .where(Certificate.issued_at < cutoff, Certificate.storage != ERASED_STORAGE,
                   Certificate.code > after)
            .order_by(Certificate.code)
            .limit(batch)
            .tuples()
        )  # fmt: skip
        if not certs:
            return
        after = certs[-1][0]
        done = []
        for code, storage, key in certs:
            try:
                _delete_file(storage, key, certificate_dir, stores)
            except (ProviderError, OSError) as exc:
                report.problems.append(f"certificate {code}: {exc}")
                continue
            done.append(code)
        if done:
            with _timed(report, perf):
                report.certificates += (
                    Certificate.update(storage=ERASED_STORAGE)
                    .where(Certificate.code.in_(done))
                    .execute()
                )


def retain(config, runtime, perf: Callable[[], float]) -> RetentionReport:
    """`run_retention` with the configuration's `[retention]` and certificate stores."""
    from sidecar.certzip import cloud_stores

    r = config.retention
    report = run_retention(
        recipient_days=r.recipient_days, certificate_days=r.certificate_days,
        certificate_dir=Path(config.providers.local.certificate_dir),
        stores=cloud_stores(config, runtime), now=runtime.clock(), perf=perf,
    )  # fmt: skip
    if report.jobs or report.certificates:
        log.info("retention: %d recipients of %d jobs erased, %d certificate PDFs deleted; "
                 "longest write %.0f ms", report.recipients, report.jobs, report.certificates,
                 report.longest_write * 1000)  # fmt: skip
    for problem in report.problems:
        log.warning("retention: %s", problem)
    return report


def purge(config, runtime, userid: int, *, include_suppression: bool,
          by: dict | None = None) -> PurgeReport:  # fmt: skip
    """`purge_user` with the configuration's certificate directory and stores."""
    from sidecar.certzip import cloud_stores

    return purge_user(
        userid, certificate_dir=Path(config.providers.local.certificate_dir),
        stores=cloud_stores(config, runtime), include_suppression=include_suppression,
        now=runtime.clock(), by=by,
    )  # fmt: skip
