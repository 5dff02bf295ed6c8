"""The dashboard's chart numbers on every backend: mail per hour, a job's progress."""

import re
from datetime import datetime, timedelta
from itertools import pairwise

import pytest

from sidecar import activity, jobs
from sidecar.db import migrations, store
from sidecar.db.models import Batch, SchemaVersion
from sidecar.errors import NotFound
from sidecar.status import RecipientStatus as R
from sidecar.web import charts

NOW = datetime(2025, 11, 18, 12, 25, 0)  # the window's hours: 2025-11-11 13:00 .. 11-18 12:00


def make_job(created: datetime, n: int, tenant: int | None = None) -> tuple[str, str]:
    people = [jobs.RecipientIn(i, f"user{i}@example.org") for i in range(1, n + 1)]
    spec = jobs.JobSpec(type="send_csv", template_id="custom", source="test", tenant_id=tenant)
    job_id = jobs.create_job(spec, people, batch_size=1000, now=created).job_id
    jobs.queue_local_batches(created, job_id)
    return job_id, Batch.get(Batch.job == job_id).id


def report(job_id, batch_id, at: datetime, *updates: store.Update) -> None:
    """Outcomes as the ledger records them, at `at` (a failure's updated_at)."""
    with store.atomic():
        store.apply_updates(job_id, batch_id, list(updates), at, 1)


def sent(userid: int, at: datetime) -> store.Update:
    return store.Update(userid, R.SENT, timesent=at)


def failed(userid: int) -> store.Update:
    return store.Update(userid, R.FAILED, error="550 no such user")


def by_hour(hours) -> dict[datetime, tuple[int, int]]:
    return {h.start: (h.sent, h.failed) for h in hours if h.sent or h.failed}


def test_every_hour_of_the_week_is_there_and_mail_counts_in_the_hour_it_happened(db):
    job, batch = make_job(datetime(2025, 11, 10, 9, 0), 8)
    report(job, batch, NOW, sent(1, datetime(2025, 11, 18, 10, 0, 0)))  # on the boundary
    report(job, batch, NOW, sent(2, datetime(2025, 11, 18, 9, 59, 59, 900000)))
    report(job, batch, NOW, sent(3, datetime(2025, 11, 18, 12, 24, 59)))  # this hour
    report(job, batch, NOW, sent(4, datetime(2025, 11, 11, 13, 0, 0)))  # the first hour
    report(job, batch, NOW, sent(5, datetime(2025, 11, 11, 12, 59, 59)))  # before the window
    report(job, batch, datetime(2025, 11, 15, 8, 30), failed(6))
    report(job, batch, datetime(2025, 11, 11, 12, 0), failed(7))  # before the window
    # 8 is still queued: neither sent nor failed

    hours = activity.hourly(NOW)

    assert len(hours) == 168
    assert hours[0].start == datetime(2025, 11, 11, 13, 0)
    assert hours[-1].start == datetime(2025, 11, 18, 12, 0)
    assert [b.start - a.start for a, b in pairwise(hours)] == [timedelta(hours=1)] * 167
    assert by_hour(hours) == {
        datetime(2025, 11, 11, 13): (1, 0),
        datetime(2025, 11, 15, 8): (0, 1),
        datetime(2025, 11, 18, 9): (1, 0),
        datetime(2025, 11, 18, 10): (1, 0),
        datetime(2025, 11, 18, 12): (1, 0),
    }
    assert sum(h.sent for h in hours) == 4 and sum(h.failed for h in hours) == 1


def test_a_window_with_no_mail_is_all_zeros(db):
    make_job(datetime(2025, 11, 17, 9, 0), 3)  # queued, nothing sent yet
    hours = activity.hourly(NOW, hours=24)
    assert len(hours) == 24 and all(h.sent == h.failed == 0 for h in hours)


def test_only_the_companies_asked_for_are_counted(db):
    ours, ours_batch = make_job(datetime(2025, 11, 18, 8, 0), 2, tenant=7)
    theirs, their_batch = make_job(datetime(2025, 11, 18, 8, 0), 2, tenant=8)
    site, site_batch = make_job(datetime(2025, 11, 18, 8, 0), 1)  # no company
    at = datetime(2025, 11, 18, 11, 15)
    report(ours, ours_batch, at, sent(1, at), failed(2))
    report(theirs, their_batch, at, sent(1, at), sent(2, at))
    report(site, site_batch, at, sent(1, at))

    def totals(companies):
        hours = activity.hourly(NOW, companies=companies)
        return sum(h.sent for h in hours), sum(h.failed for h in hours)

    assert totals((7,)) == (1, 1)
    assert totals((8,)) == (2, 0)
    assert totals((7, 8)) == (3, 1)
    assert totals(None) == (4, 1)
    assert totals(()) == (0, 0)


def test_a_window_of_no_hours_is_refused(db):
    with pytest.raises(ValueError, match="hours must be at least 1, not 0"):
        activity.hourly(NOW, hours=0)


def test_a_jobs_progress_is_cumulative_from_creation_to_now(db):
    created = datetime(2025, 11, 18, 12, 0, 0)
    job, batch = make_job(created, 5)
    report(job, batch, NOW, sent(1, created))  # the very second it was created
    report(job, batch, NOW, sent(2, created + timedelta(minutes=10)))
    report(job, batch, NOW, sent(3, created + timedelta(minutes=10, seconds=30)))
    report(job, batch, created + timedelta(minutes=20), failed(4))
    # 5 is still queued

    points = activity.job_progress(job, points=6, now=NOW)  # 25 minutes: 5 minute steps

    assert [(p.at - created, p.sent, p.failed) for p in points] == [
        (timedelta(minutes=0), 0, 0),
        (timedelta(minutes=5), 1, 0),
        (timedelta(minutes=10), 1, 0),  # counts what happened before 12:10:00
        (timedelta(minutes=15), 3, 0),
        (timedelta(minutes=20), 3, 0),
        (timedelta(minutes=25), 3, 1),
    ]


def test_a_finished_jobs_progress_ends_at_its_finish_and_a_big_one_has_few_points(db):
    created = datetime(2025, 11, 18, 6, 0, 0)
    job, batch = make_job(created, 500)
    report(job, batch, created + timedelta(hours=1),
           *[sent(u, created + timedelta(seconds=7 * u)) for u in range(1, 499)],
           failed(499), failed(500))  # fmt: skip
    finished = store.get_job(job).finished_at
    assert finished == created + timedelta(hours=1)  # every recipient settled

    points = activity.job_progress(job, points=60, now=NOW)

    assert len(points) <= 60
    assert points[0].at == created and points[-1].at == finished
    assert (points[0].sent, points[0].failed) == (0, 0)
    assert (points[-1].sent, points[-1].failed) == (498, 2)
    assert all(a.sent <= b.sent and a.failed <= b.failed for a, b in pairwise(points))


def test_progress_of_an_unknown_job_is_not_found(db):
    with pytest.raises(NotFound, match="job nope not found"):
        activity.job_progress("nope", now=NOW)


def test_a_long_list_of_companies_is_counted(db):
    job, batch = make_job(datetime(2025, 11, 18, 8, 0), 1, tenant=4321)
    report(job, batch, NOW, sent(1, datetime(2025, 11, 18, 11, 0)))
    hours = activity.hourly(NOW, companies=range(1, 5001))  # many parameters
    assert sum(h.sent for h in hours) == 1


def test_migration_7_adds_the_index_of_mail_per_hour_to_a_version_6_database(db):
    name = "recipient_status_timesent_updated_at_job_id"
    db.execute_sql(f"DROP INDEX {name}" + (" ON recipient" if "MySQL" in type(db).__name__ else ""))
    SchemaVersion.delete().where(SchemaVersion.version == 7).execute()
    assert name not in {i.name for i in db.get_indexes("recipient")}

    assert migrations.upgrade(db) == [7]
    assert migrations.upgrade(db) == []
    assert name in {i.name for i in db.get_indexes("recipient")}
    SchemaVersion.delete().where(SchemaVersion.version == 7).execute()
    assert migrations.upgrade(db) == [7]  # a database created with the index: left as it is


def test_the_weeks_numbers_draw_as_the_dashboards_chart(db):
    job, batch = make_job(datetime(2025, 11, 18, 8, 0), 3)
    report(job, batch, datetime(2025, 11, 18, 9, 5), sent(1, datetime(2025, 11, 18, 9, 0)),
           sent(2, datetime(2025, 11, 18, 9, 1)), failed(3))  # fmt: skip
    svg = charts.hourly_chart(activity.hourly(NOW))
    assert re.search(r'aria-label="Mail per hour over the last 7 days [^"]*: 2 sent, 1 failed\."',
                     svg)  # fmt: skip
    assert "Tue 18 Nov 09:00–10:00 UTC: 2 sent, 1 failed" in svg
