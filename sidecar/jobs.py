"""The job ledger: create (everything persisted before anything is sent), submit, retry, cancel.

A job's recipients, batches and send keys are committed in one transaction. Nothing is
delivered from memory: delivery and cloud submission read the ledger.
"""

import csv
import io
import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sidecar.db import store
from sidecar.db.models import Batch, Job, Recipient, SendKey
from sidecar.errors import Conflict
from sidecar.status import JOB_FINAL, BatchStatus, JobStatus, RecipientStatus
from sidecar.suppression import suppressed_among
from sidecar.unsubscribe import kind_of, opted_out
from sidecar.unsubscribe import reason as unsubscribe_reason

log = logging.getLogger(__name__)

R = RecipientStatus


@dataclass(frozen=True)
class RecipientIn:
    userid: int
    email: str
    firstname: str = ""
    lastname: str = ""
    vars: Mapping[str, object] = field(default_factory=dict)
    # this recipient's own idempotency key (a licence allocation's), instead of the job's
    send_key: str | None = None


@dataclass(frozen=True)
class Actions:
    email: bool = True
    certificate: bool = False

    def names(self) -> list[str]:
        return [name for name in ("email", "certificate") if getattr(self, name)]


@dataclass(frozen=True)
class JobSpec:
    type: str
    template_id: str
    source: str
    actions: Actions = Actions()
    route: str = "local"
    route_reason: str = "local delivery"
    idempotency_key: str | None = None
    tenant_id: int | None = None
    courseid: int | None = None
    created_by: int | None = None
    sender: str = ""
    reply_to: str | None = None
    template_data: Mapping[str, object] = field(default_factory=dict)
    certificate_template_id: str | None = None
    schedule_id: int | None = None
    run_id: int | None = None


@dataclass(frozen=True)
class Prepared:
    """Recipients after validation: the good ones, the invalid ones, the users listed twice."""

    valid: list[RecipientIn]
    invalid: list[tuple[RecipientIn, str]]
    duplicates: list[RecipientIn]


@dataclass(frozen=True)
class Created:
    job_id: str
    total: int
    batches: int
    pending: int
    invalid: int
    skipped_duplicate: int
    dropped_duplicates: int
    suppressed: int = 0


def prepare(recipients: Iterable[RecipientIn]) -> Prepared:
    """Validate every address and drop a user listed a second time."""
    from sidecar.csvinput import validate_email

    valid: list[RecipientIn] = []
    invalid: list[tuple[RecipientIn, str]] = []
    duplicates: list[RecipientIn] = []
    seen: set[int] = set()
    for r in recipients:
        if r.userid in seen:
            duplicates.append(r)
            continue
        seen.add(r.userid)
        try:
            normal = validate_email(r.email)
        except ValueError as exc:
            invalid.append((r, str(exc)))
            continue
        valid.append(r if normal == r.email else RecipientIn(**{**r.__dict__, "email": normal}))
    return Prepared(valid, invalid, duplicates)


def held_back(
    job_type: str, certificate: bool, recipients: Iterable[RecipientIn]
) -> dict[int, str]:
    """{userid: reason} of the recipients a job of this type records as suppressed: an
    address on the suppression list, or a learner who unsubscribed from its kind of mail."""
    recipients = list(recipients)
    blocked = suppressed_among(r.email for r in recipients)
    kind = kind_of(job_type, certificate)
    unsubscribed = opted_out((r.userid for r in recipients), kind)
    out: dict[int, str] = {}
    for r in recipients:
        if r.email in blocked:
            out[r.userid] = f"suppressed: {blocked[r.email]}"
        elif r.userid in unsubscribed:
            out[r.userid] = unsubscribe_reason(kind)
    return out


def create_job(
    spec: JobSpec,
    recipients: Iterable[RecipientIn] | Prepared,
    *,
    batch_size: int,
    now: datetime,
    job_id: str | None = None,
) -> Created:
    """Validate, de-duplicate and commit a job with its batches and recipients.

    Invalid addresses are recorded as permanently_failed with the reason; a user that an
    earlier job already holds under the same idempotency key (the recipient's own
    `send_key`, else the job's; for any of this job's actions) is recorded as
    skipped_duplicate; an address on the suppression list, or a
    learner who unsubscribed from this kind of mail, as suppressed. Nothing is sent here.
    """
    prepared = recipients if isinstance(recipients, Prepared) else prepare(recipients)
    job_id = job_id or str(uuid.uuid4())
    actions = spec.actions.names()
    if not actions:
        raise Conflict("a job needs at least one action (email or certificate)")

    with store.atomic():
        taken = _taken(spec.idempotency_key, prepared.valid)
        fresh = [r for r in prepared.valid if r.userid not in taken]
        why_not = held_back(spec.type, spec.actions.certificate, fresh)
        deliverable = [r for r in fresh if r.userid not in why_not]
        skipped = [r for r in prepared.valid if r.userid in taken]
        refused = [r for r in fresh if r.userid in why_not]
        total = len(prepared.valid) + len(prepared.invalid)

        Job.insert(
            id=job_id,
            type=spec.type,
            status=JobStatus.PENDING,
            source=spec.source,
            tenant_id=spec.tenant_id,
            courseid=spec.courseid,
            created_by=spec.created_by,
            idempotency_key=spec.idempotency_key,
            actions={name: name in actions for name in ("email", "certificate")},
            template_id=spec.template_id,
            certificate_template_id=spec.certificate_template_id,
            sender=spec.sender,
            reply_to=spec.reply_to,
            template_data=dict(spec.template_data),
            route=spec.route,
            route_reason=spec.route_reason,
            schedule_id=spec.schedule_id,
            run_id=spec.run_id,
            total=total,
            created_at=now,
            updated_at=now,
        ).execute()

        # Settled rows (skipped, invalid) go in a final "batch" of their own so that every
        # recipient row belongs to one batch and open batches hold only deliverable ones.
        groups = [deliverable[i : i + batch_size] for i in range(0, len(deliverable), batch_size)]
        batch_ids = [str(uuid.uuid4()) for _ in groups]
        settled_batch = str(uuid.uuid4()) if (skipped or refused or prepared.invalid) else None
        ts = store.dbtime(now)
        batch_rows = [
            (bid, job_id, i, BatchStatus.PENDING.value, spec.route, len(g), 0, ts)
            for i, (bid, g) in enumerate(zip(batch_ids, groups, strict=True))
        ]
        if settled_batch:
            size = len(skipped) + len(refused) + len(prepared.invalid)
            batch_rows.append(
                (settled_batch, job_id, len(groups), BatchStatus.DONE.value, "none", size, 0, ts)
            )
        store.bulk_insert(
            Batch,
            ("id", "job_id", "index", "status", "route", "size", "attempts", "updated_at"),
            batch_rows,
        )

        cols = (
            "job_id", "batch_id", "userid", "email", "firstname", "lastname", "vars",
            "status", "attempts", "last_error", "updated_at",
        )  # fmt: skip
        rows: list[tuple] = []
        pending = R.PENDING.value
        _vars = _VarsEncoder()
        for bid, group in zip(batch_ids, groups, strict=True):
            for r in group:
                rows.append(
                    (job_id, bid, r.userid, r.email, r.firstname[:100], r.lastname[:100],
                     _vars(r.vars), pending, 0, None, ts)
                )  # fmt: skip
        for r in skipped:
            key = r.send_key or spec.idempotency_key
            reason = f"already given to job {taken[r.userid]} under key {key}"
            rows.append(
                (job_id, settled_batch, r.userid, r.email, r.firstname[:100], r.lastname[:100],
                 _vars(r.vars), R.SKIPPED_DUPLICATE.value, 0, reason, ts)
            )  # fmt: skip
        for r in refused:
            rows.append(
                (job_id, settled_batch, r.userid, r.email, r.firstname[:100], r.lastname[:100],
                 _vars(r.vars), R.SUPPRESSED.value, 0, why_not[r.userid][:2000], ts)
            )  # fmt: skip
        for r, reason in prepared.invalid:
            rows.append(
                (job_id, settled_batch, r.userid, r.email[:254], r.firstname[:100],
                 r.lastname[:100], _vars(r.vars), R.PERMANENTLY_FAILED.value, 0,
                 f"invalid address: {reason}"[:2000], ts)
            )  # fmt: skip
        store.bulk_insert(Recipient, cols, rows)

        keyed = [(r.send_key or spec.idempotency_key, r.userid) for r in deliverable]
        keyed = [(k, uid) for k, uid in keyed if k]
        if keyed:
            store.bulk_insert(
                SendKey,
                ("idempotency_key", "userid", "action", "job_id"),
                [(k, uid, a, job_id) for k, uid in keyed for a in actions],
            )
        store.audit(
            "job_created",
            now,
            job_id,
            type=spec.type,
            source=spec.source,
            recipients=len(deliverable),
            invalid=len(prepared.invalid),
            skipped_duplicate=len(skipped),
            suppressed=len(refused),
            dropped_duplicates=len(prepared.duplicates),
            route=spec.route,
        )
        if not deliverable:
            store.settle(job_id, now)

    log.info(
        "job %s: created (%s, %d recipients in %d batches, %d invalid, %d already sent, "
        "%d suppressed, %d listed twice)",
        job_id, spec.type, len(deliverable), len(groups), len(prepared.invalid), len(skipped),
        len(refused), len(prepared.duplicates),
    )  # fmt: skip
    return Created(
        job_id=job_id,
        total=total,
        batches=len(groups),
        pending=len(deliverable),
        invalid=len(prepared.invalid),
        skipped_duplicate=len(skipped),
        dropped_duplicates=len(prepared.duplicates),
        suppressed=len(refused),
    )


def _taken(job_key: str | None, recipients: Sequence[RecipientIn]) -> dict[int, str]:
    """{userid: job_id} of the recipients an earlier job holds under their key."""
    taken: dict[int, str] = {}
    if job_key:
        plain = [r.userid for r in recipients if not r.send_key]
        if plain:
            taken = store.taken_send_keys(job_key, plain)
    own = [(r.send_key, r.userid) for r in recipients if r.send_key]
    if own:
        taken.update((uid, job) for (_, uid), job in store.taken_keys(own).items())
    return taken


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class _VarsEncoder:
    """JSON of a recipient's variables; consecutive equal dicts (common) encode once."""

    def __init__(self):
        self.last: Mapping[str, object] | None = None
        self.text = "{}"

    def __call__(self, values: Mapping[str, object]) -> str:
        if not values:
            return "{}"
        if values != self.last:
            self.last, self.text = values, _encode(values)
        return self.text


def queue_local_batches(now: datetime, job_id: str | None = None) -> int:
    """Hand pending local batches to the local delivery queue (the ledger itself).

    Returns the number of batches queued. Idempotent.
    """
    query = Batch.select(Batch.id, Batch.job).where(
        Batch.status == BatchStatus.PENDING, Batch.route == "local"
    )
    if job_id:
        query = query.where(Batch.job == job_id)
    queued = 0
    for batch in query:
        with store.atomic():
            n = (
                Batch.update(status=BatchStatus.QUEUED, submitted_at=now, updated_at=now)
                .where(Batch.id == batch.id, Batch.status == BatchStatus.PENDING)
                .execute()
            )
            if n:
                Recipient.update(status=R.QUEUED, updated_at=now).where(
                    Recipient.batch == batch.id, Recipient.status == R.PENDING
                ).execute()
                store.move_job(batch.job_id, JobStatus.QUEUED, now)
                queued += 1
    return queued


def retry_job(job_id: str, now: datetime, *, by: Mapping[str, object] | None = None) -> int:
    """Re-queue the job's failed and permanently failed recipients; returns how many.
    `by` (who asked, never a secret) goes into the audit line.

    A failed learner who has since unsubscribed from the job's kind of mail is recorded
    `suppressed` instead (committed even when nobody is left to retry). Raises NotFound
    for an unknown job and Conflict when nothing failed or it was cancelled.
    """
    job = store.get_job(job_id)
    if job.status == JobStatus.CANCELLED:
        raise Conflict(f"job {job.id} was cancelled: create a new job instead")
    if job.erased_at is not None:
        raise Conflict(
            f"job {job.id}: its recipients' addresses were erased on "
            f"{job.erased_at:%Y-%m-%d} ([retention]): create a new job instead"
        )
    failed = [R.FAILED.value, R.PERMANENTLY_FAILED.value]
    with store.atomic():
        found = list(
            Recipient.select(Recipient.batch, Recipient.id, Recipient.email, Recipient.userid)
            .where(
                Recipient.job == job.id,
                Recipient.status.in_(failed),
                ~Recipient.last_error.startswith("invalid address"),
                Recipient.email != "",  # erased by purge-user (sidecar.privacy)
            )
            .tuples()
        )
        blocked = suppressed_among(email for _, _, email, _ in found)
        kind = kind_of(job.type, bool(job.actions.get("certificate")))
        unsubscribed = opted_out((uid for _, _, _, uid in found), kind)
        gone = [rid for _, rid, _, uid in found if uid in unsubscribed]
        for start in range(0, len(gone), 900):
            Recipient.update(
                status=R.SUPPRESSED, last_error=unsubscribe_reason(kind), updated_at=now
            ).where(
                Recipient.id.in_(gone[start : start + 900]), Recipient.status.in_(failed)
            ).execute()
        rows = [
            (bid, rid)
            for bid, rid, email, uid in found
            if email not in blocked and uid not in unsubscribed
        ]
        ids = [rid for _, rid in rows]
        if rows:
            _requeue(job, rows, failed, now)
        elif gone and store.move_job(job.id, JobStatus.RETRY_PENDING, now):
            store.settle(job.id, now)  # its failures were those learners: it may be done
        if rows or gone:
            store.audit("job_retry", now, job.id, recipients=len(ids), unsubscribed=len(gone),
                        **(by or {}))  # fmt: skip
    if gone:
        log.info(
            "job %s: %d failed recipients have since unsubscribed from %s: suppressed",
            job.id, len(gone), kind,
        )  # fmt: skip
    if not rows:
        why = f" ({len(blocked)} addresses are suppressed)" if blocked else ""
        if gone:
            why += f" ({len(gone)} unsubscribed from {kind}, now recorded suppressed)"
        raise Conflict(f"job {job.id}: no failed recipient to retry{why}")
    log.info("job %s: %d failed recipients re-queued", job.id, len(ids))
    return len(ids)


def _requeue(job: Job, rows: list[tuple[str, int]], failed: list[str], now: datetime) -> None:
    """Put the (batch id, recipient id) rows back in their batches; raises Conflict when the
    job is in no state to be retried (the caller's transaction then rolls back)."""
    ids = [rid for _, rid in rows]
    for start in range(0, len(ids), 900):
        Recipient.update(
            status=R.RETRY_PENDING, attempts=0, next_attempt_at=now, updated_at=now
        ).where(Recipient.id.in_(ids[start : start + 900]), Recipient.status.in_(failed)).execute()
    batch_ids = sorted({bid for bid, _ in rows})
    Batch.update(status=BatchStatus.QUEUED, lease_until=None, updated_at=now).where(
        Batch.id.in_(batch_ids), Batch.route == "local"
    ).execute()
    # A cloud batch is submitted again in a new round: the worker resends what it has not
    # sent before, and never what its record says it sent.
    Batch.update(
        status=BatchStatus.PENDING, attempts=Batch.attempts + 1, lease_until=None,
        error=None, updated_at=now,
    ).where(Batch.id.in_(batch_ids), Batch.route != "local").execute()  # fmt: skip
    moved = store.move_job(job.id, JobStatus.RETRY_PENDING, now)
    if not moved and job.status not in (JobStatus.PROCESSING, JobStatus.QUEUED):
        raise Conflict(f"job {job.id} is {job.status}: it cannot be retried now")


def cancel_job(job_id: str, now: datetime, *, by: Mapping[str, object] | None = None) -> int:
    """Cancel what has not been delivered yet; returns how many recipients were cancelled.
    `by` (who asked, never a secret) goes into the audit line.

    Recipients already handed to a cloud queue may still be delivered: their reports are
    recorded (a `sent` report wins over `cancelled`).
    """
    job = store.get_job(job_id)
    if job.status in JOB_FINAL:
        raise Conflict(f"job {job.id} is already {job.status}")
    with store.atomic():
        n = (
            Recipient.update(status=R.CANCELLED, updated_at=now)
            .where(
                Recipient.job == job.id,
                Recipient.status.in_([R.PENDING.value, R.QUEUED.value, R.RETRY_PENDING.value]),
            )
            .execute()
        )
        Batch.update(status=BatchStatus.CANCELLED, lease_until=None, updated_at=now).where(
            Batch.job == job.id,
            Batch.status.in_([BatchStatus.PENDING, BatchStatus.QUEUED, BatchStatus.PROCESSING]),
        ).execute()
        store.move_job(job.id, JobStatus.CANCELLED, now)
        if job.type == "welcome":
            from sidecar.welcomepasswords import forget_cancelled

            forget_cancelled(job.id, now)  # passwords erased, keys freed for a later welcome
        store.audit("job_cancelled", now, job.id, recipients=n, **(by or {}))
    log.info("job %s: cancelled (%d recipients not delivered)", job.id, n)
    return n


EXPORT_COLUMNS = (
    "userid", "email", "firstname", "lastname", "status", "attempts", "last_error",
    "external_id", "certificate_key", "timesent", "updated_at",
)  # fmt: skip


def export_rows(job_id: str) -> Iterable[tuple]:
    """Every recipient of the job, in userid order, as EXPORT_COLUMNS tuples."""
    job = store.get_job(job_id)
    fields = [getattr(Recipient, c) for c in EXPORT_COLUMNS]
    query = (
        Recipient.select(*fields).where(Recipient.job == job.id).order_by(Recipient.userid).tuples()
    )
    yield from query.iterator()


def export_csv(job_id: str, out: io.TextIOBase) -> int:
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    n = 0
    for row in export_rows(job_id):
        writer.writerow(["" if v is None else v for v in row])
        n += 1
    return n


def recipients_of(job_id: str, statuses: Sequence[str] | None = None, limit: int = 1000):
    query = Recipient.select().where(Recipient.job == job_id).order_by(Recipient.userid)
    if statuses:
        query = query.where(Recipient.status.in_(list(statuses)))
    return list(query.limit(limit))
