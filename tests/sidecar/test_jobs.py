"""The job ledger on every database backend: create, de-duplicate, settle, retry, cancel."""

import io

import pytest

from sidecar import jobs
from sidecar.db import store
from sidecar.db.models import Batch, Job, Recipient
from sidecar.errors import Conflict, NotFound
from sidecar.status import BatchStatus, JobStatus
from sidecar.status import RecipientStatus as R


def people(n, start=1):
    return [
        jobs.RecipientIn(i, f"user{i}@example.org", f"First{i}", f"Last{i}")
        for i in range(start, start + n)
    ]


def spec(**over):
    base = dict(type="send_csv", template_id="custom", source="test")
    base.update(over)
    return jobs.JobSpec(**base)


def statuses(job_id):
    return {r.userid: r.status for r in Recipient.select().where(Recipient.job == job_id)}


def test_job_batches_and_recipients_are_committed_before_delivery(db, clock):
    created = jobs.create_job(spec(), people(450), batch_size=200, now=clock())
    job = Job.get_by_id(created.job_id)
    assert job.status == JobStatus.PENDING and job.total == 450
    sizes = [b.size for b in Batch.select().where(Batch.job == job.id).order_by(Batch.index)]
    assert sizes == [200, 200, 50]
    assert set(statuses(job.id).values()) == {R.PENDING}


def test_invalid_address_is_recorded_with_its_reason_and_user_listed_twice_is_dropped(db, clock):
    rs = people(3) + [
        jobs.RecipientIn(2, "again@example.org"),
        jobs.RecipientIn(9, "not-an-address"),
    ]
    created = jobs.create_job(spec(), rs, batch_size=200, now=clock())
    assert (created.pending, created.invalid, created.dropped_duplicates) == (3, 1, 1)
    bad = Recipient.get(Recipient.job == created.job_id, Recipient.userid == 9)
    assert bad.status == R.PERMANENTLY_FAILED and "invalid address" in bad.last_error
    kept = Recipient.get(Recipient.job == created.job_id, Recipient.userid == 2)
    assert kept.email == "user2@example.org"


def test_same_idempotency_key_never_gives_a_user_to_a_second_job(db, clock):
    key = "run:7:2025-11-18"
    first = jobs.create_job(spec(idempotency_key=key), people(3), batch_size=200, now=clock())
    second = jobs.create_job(spec(idempotency_key=key), people(5), batch_size=200, now=clock())
    assert second.skipped_duplicate == 3 and second.pending == 2
    st = statuses(second.job_id)
    assert [st[u] for u in (1, 2, 3)] == [R.SKIPPED_DUPLICATE] * 3
    assert [st[u] for u in (4, 5)] == [R.PENDING] * 2
    next_week = "run:7:2025-11-25"
    other = jobs.create_job(spec(idempotency_key=next_week), people(3), batch_size=200, now=clock())
    assert other.pending == 3 and first.pending == 3


def _queued_job(clock, n=3, **over):
    created = jobs.create_job(spec(**over), people(n), batch_size=200, now=clock())
    jobs.queue_local_batches(clock(), created.job_id)
    batch = Batch.get(Batch.job == created.job_id)
    return created.job_id, batch.id


def test_sent_then_failed_stays_sent_and_job_completes(db, clock):
    job_id, batch_id = _queued_job(clock, 2)
    with store.atomic():
        both_sent = [store.Update(1, R.SENT), store.Update(2, R.SENT)]
        assert store.apply_updates(job_id, batch_id, both_sent, clock(), 3)[0] == 2
        bounce = [store.Update(1, R.FAILED, error="bounce")]
        accepted, ignored = store.apply_updates(job_id, batch_id, bounce, clock(), 3)
    assert (accepted, ignored) == (0, [1])
    assert statuses(job_id) == {1: R.SENT, 2: R.SENT}
    assert Job.get_by_id(job_id).status == JobStatus.COMPLETED
    assert Batch.get_by_id(batch_id).status == BatchStatus.DONE


def test_failure_at_max_attempts_is_permanent_with_last_error(db, clock):
    job_id, batch_id = _queued_job(clock, 2)
    updates = [
        store.Update(1, R.SENT),
        store.Update(2, R.FAILED, error="550 no such user", attempts=3),
    ]
    with store.atomic():
        store.apply_updates(job_id, batch_id, updates, clock(), 3)
    r = Recipient.get(Recipient.job == job_id, Recipient.userid == 2)
    assert r.status == R.PERMANENTLY_FAILED and r.last_error == "550 no such user"
    assert r.attempts == 3
    assert Job.get_by_id(job_id).status == JobStatus.PARTIAL_FAILURE


def test_retry_requeues_only_failed_recipients(db, clock):
    job_id, batch_id = _queued_job(clock, 3)
    updates = [
        store.Update(1, R.SENT),
        store.Update(2, R.FAILED, error="x"),
        store.Update(3, R.FAILED, error="y", attempts=3),
    ]
    with store.atomic():
        store.apply_updates(job_id, batch_id, updates, clock(), 3)
    assert Job.get_by_id(job_id).status == JobStatus.PARTIAL_FAILURE
    assert jobs.retry_job(job_id, clock()) == 2
    st = statuses(job_id)
    assert st == {1: R.SENT, 2: R.RETRY_PENDING, 3: R.RETRY_PENDING}
    assert Job.get_by_id(job_id).status == JobStatus.RETRY_PENDING
    late = [store.Update(2, R.SENT), store.Update(3, R.SENT)]
    with pytest.raises(Conflict):
        with store.atomic():
            store.apply_updates(job_id, batch_id, late, clock(), 3)
        jobs.retry_job(job_id, clock())
    assert Job.get_by_id(job_id).status == JobStatus.COMPLETED


def test_cancel_stops_pending_work_but_a_late_sent_report_is_still_recorded(db, clock):
    job_id, batch_id = _queued_job(clock, 3)
    with store.atomic():
        store.apply_updates(job_id, batch_id, [store.Update(1, R.SENT)], clock(), 3)
    assert jobs.cancel_job(job_id, clock()) == 2
    assert statuses(job_id) == {1: R.SENT, 2: R.CANCELLED, 3: R.CANCELLED}
    assert Job.get_by_id(job_id).status == JobStatus.CANCELLED
    with store.atomic():
        store.apply_updates(job_id, batch_id, [store.Update(2, R.SENT)], clock(), 3)
    assert statuses(job_id)[2] == R.SENT
    with pytest.raises(Conflict):
        jobs.cancel_job(job_id, clock())


def test_export_lists_every_recipient_with_status(db, clock):
    job_id, batch_id = _queued_job(clock, 2)
    with store.atomic():
        retry_later = [store.Update(2, R.FAILED, error="451 try later")]
        store.apply_updates(job_id, batch_id, retry_later, clock(), 3)
    out = io.StringIO()
    assert jobs.export_csv(job_id, out) == 2
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("userid,email,firstname,lastname,status")
    assert lines[2].startswith("2,user2@example.org,First2,Last2,failed,1,451 try later")


def test_unknown_job_is_not_found(db):
    with pytest.raises(NotFound, match="jobs list"):
        store.get_job("00000000-0000-4000-8000-000000000000")


def test_a_recipients_own_send_key_is_taken_once_whatever_the_job(db, clock):
    def seat(uid, issued):
        return jobs.RecipientIn(
            uid, f"user{uid}@example.org", send_key=f"license:15:{uid}:{issued}"
        )

    first = jobs.create_job(spec(), [seat(1, 100), seat(2, 100)], batch_size=200, now=clock())
    again = [seat(1, 100), seat(2, 200), seat(3, 100)]  # user 2 given a seat again later
    second = jobs.create_job(spec(idempotency_key="other"), again, batch_size=200, now=clock())
    assert (first.pending, second.pending, second.skipped_duplicate) == (2, 2, 1)
    skipped = Recipient.get(Recipient.job == second.job_id, Recipient.userid == 1)
    assert skipped.status == R.SKIPPED_DUPLICATE and "license:15:1:100" in skipped.last_error
    assert store.taken_keys([("license:15:2:200", 2), ("license:15:3:200", 3)]) == {
        ("license:15:2:200", 2): second.job_id
    }
