"""Job and recipient statuses and the one table of allowed transitions (docs/statuses.md).

Every status change in the ledger is a compare-and-set against PREDECESSORS, so a
late or repeated update can never move a row backwards.
"""

from enum import StrEnum


class JobStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    PARTIAL_FAILURE = "partial_failure"
    FAILED = "failed"
    RETRY_PENDING = "retry_pending"
    CANCELLED = "cancelled"


class BatchStatus(StrEnum):
    PENDING = "pending"  # recorded, not yet handed to a provider
    QUEUED = "queued"  # accepted by the provider (or the local delivery queue)
    PROCESSING = "processing"  # a local worker holds its lease
    DONE = "done"  # no recipient of it is open any more
    CANCELLED = "cancelled"


class RecipientStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    RETRY_PENDING = "retry_pending"
    PERMANENTLY_FAILED = "permanently_failed"
    SUPPRESSED = "suppressed"
    SKIPPED_DUPLICATE = "skipped_duplicate"
    CANCELLED = "cancelled"


J, R = JobStatus, RecipientStatus

JOB_FINAL = frozenset({J.COMPLETED, J.PARTIAL_FAILURE, J.FAILED, J.CANCELLED})
RECIPIENT_FINAL = frozenset(
    {R.SENT, R.PERMANENTLY_FAILED, R.SUPPRESSED, R.SKIPPED_DUPLICATE, R.CANCELLED}
)
# Open: the job is not finished while any recipient is in one of these.
RECIPIENT_OPEN = frozenset({R.PENDING, R.QUEUED, R.RETRY_PENDING})
# Settled without being final: waits for an admin's `jobs retry`.
RECIPIENT_FAILED = frozenset({R.FAILED, R.PERMANENTLY_FAILED})

JOB_PREDECESSORS: dict[JobStatus, frozenset[JobStatus]] = {
    J.PENDING: frozenset(),
    J.QUEUED: frozenset({J.PENDING}),
    J.PROCESSING: frozenset({J.PENDING, J.QUEUED, J.RETRY_PENDING}),
    J.COMPLETED: frozenset({J.PENDING, J.QUEUED, J.PROCESSING, J.RETRY_PENDING}),
    J.PARTIAL_FAILURE: frozenset({J.PENDING, J.QUEUED, J.PROCESSING, J.RETRY_PENDING}),
    J.FAILED: frozenset({J.PENDING, J.QUEUED, J.PROCESSING, J.RETRY_PENDING}),
    J.RETRY_PENDING: frozenset({J.PARTIAL_FAILURE, J.FAILED}),
    J.CANCELLED: frozenset({J.PENDING, J.QUEUED, J.PROCESSING, J.RETRY_PENDING}),
}

# `sent` is the truth of what happened: a late `sent` report is accepted even after a
# failure was recorded (the worker retried on its own), after a cancel that came too
# late to stop a cloud worker, or after an opt-out settled a recipient whose earlier
# round had in fact gone, but nothing leaves `sent`. A learner who unsubscribes while
# the job is under way is `suppressed` from any open or failed status, before the next
# attempt.
RECIPIENT_PREDECESSORS: dict[RecipientStatus, frozenset[RecipientStatus]] = {
    R.PENDING: frozenset(),
    R.QUEUED: frozenset({R.PENDING, R.RETRY_PENDING}),
    R.SENT: frozenset(
        {R.PENDING, R.QUEUED, R.FAILED, R.RETRY_PENDING, R.PERMANENTLY_FAILED, R.CANCELLED}
        | {R.SUPPRESSED}
    ),
    R.FAILED: frozenset({R.PENDING, R.QUEUED, R.RETRY_PENDING}),
    R.RETRY_PENDING: frozenset({R.QUEUED, R.FAILED, R.PERMANENTLY_FAILED}),
    R.PERMANENTLY_FAILED: frozenset({R.PENDING, R.QUEUED, R.FAILED, R.RETRY_PENDING}),
    R.SUPPRESSED: frozenset({R.PENDING, R.QUEUED, R.RETRY_PENDING, R.FAILED, R.PERMANENTLY_FAILED}),
    R.SKIPPED_DUPLICATE: frozenset({R.PENDING}),
    R.CANCELLED: frozenset({R.PENDING, R.QUEUED, R.RETRY_PENDING}),
}


def settle_job(counts: dict[str, int]) -> JobStatus | None:
    """The final job status for recipient counts by status, or None while any is open."""
    if any(counts.get(s, 0) for s in RECIPIENT_OPEN):
        return None
    sent = counts.get(R.SENT, 0)
    failed = sum(counts.get(s, 0) for s in RECIPIENT_FAILED)
    if failed == 0:
        return J.COMPLETED
    return J.PARTIAL_FAILURE if sent else J.FAILED
