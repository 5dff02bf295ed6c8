"""The dashboard's jobs pages (docs/dashboard.md#jobs) through the real HTTP app on
127.0.0.1, a requests.Session signed in as the browser, the ledger on every backend:
the list and its filters and pages, a job's page with its recipients searched, filtered
and paginated on the server, the live progress fragment, retry / cancel / export and who
may do them."""

import csv
import io
import re
from datetime import timedelta
from html import unescape

import pytest

from sidecar import jobs, privacy
from sidecar.db import store
from sidecar.db.models import Job, Recipient
from tests.sidecar.api_helpers import audit_events, make_job, people, statuses

JOB_ROW = re.compile(r'<a href="/jobs/([0-9a-f-]{36})">')


def get(caller, path: str, **params):
    return caller.http.get(f"{caller.url}{path}", params=params, allow_redirects=False,
                           timeout=30)  # fmt: skip


def post(caller, path: str, csrf: str | None = "auto"):
    token = caller.csrf if csrf == "auto" else csrf
    data = {"csrf": token} if token is not None else {}
    return caller.http.post(f"{caller.url}{path}", data=data, allow_redirects=False, timeout=60)


def listed(resp) -> list[str]:
    assert resp.status_code == 200, resp.text
    return JOB_ROW.findall(resp.text)


def next_link(resp) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next">', resp.text)
    return unescape(found.group(1)) if found else None


def recipient_ids(resp) -> list[int]:
    assert resp.status_code == 200, resp.text
    return [int(n) for n in re.findall(r'<td class="num" data-label="User">(\d+)</td>', resp.text)]


def text_of(resp) -> str:
    """The page's words, tags dropped, spaces squeezed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", resp.text)))


# --- the list ------------------------------------------------------------------------------


def test_the_list_shows_each_job_with_its_progress_newest_first(api, clock):
    old = make_job(clock, 4, sent=(1, 2), failed=(3,))
    clock.advance(60)
    new = make_job(clock, 3)
    resp = get(api.session(), "/jobs")
    assert listed(resp) == [new, old]
    assert resp.headers["Cache-Control"] == "no-store"
    row = resp.text[resp.text.index(f'href="/jobs/{old}"') :].split("</tr>")[0]
    cells = dict(re.findall(r'data-label="(\w+)">([\d,]+)<', row))
    assert cells == {"Sent": "2", "Failed": "1", "Open": "1", "Total": "4"}
    assert 'role="progressbar"' in row and 'aria-valuenow="3"' in row
    assert '<span class="sent" style="width:50.0%">' in row


def test_the_filters_narrow_the_list(api, clock):
    course7 = make_job(clock, 2, course=7, type="send_reminder")
    company4 = make_job(clock, 2, company=4)
    finished = make_job(clock, 2, sent=(1, 2))
    clock.advance(3 * 86400)
    later = make_job(clock, 2, course=7)
    admin = api.session()
    assert set(listed(get(admin, "/jobs", course="7"))) == {course7, later}
    assert listed(get(admin, "/jobs", type="send_reminder")) == [course7]
    assert listed(get(admin, "/jobs", company="4")) == [company4]
    assert listed(get(admin, "/jobs", status="completed")) == [finished]
    assert set(listed(get(admin, "/jobs", status="running"))) == {course7, company4, later}
    day = clock().date()
    assert listed(get(admin, "/jobs", **{"from": day.isoformat()})) == [later]
    before = (day - timedelta(days=1)).isoformat()
    assert set(listed(get(admin, "/jobs", to=before))) == {course7, company4, finished}
    assert listed(get(admin, "/jobs", to=day.isoformat(), course="7", status="running")) == [
        later,
        course7,
    ]
    # an empty form filters nothing, and the fields keep what was asked
    every = get(admin, "/jobs", status="", type="", course="", company="")
    assert len(listed(every)) == 4
    narrowed = get(admin, "/jobs", course="7")
    assert 'name="course" value="7"' in narrowed.text


def test_a_value_a_filter_does_not_take_is_400_with_the_reason_and_the_form(api, clock):
    make_job(clock, 1)
    resp = get(api.session(), "/jobs", course="seven")
    assert resp.status_code == 400
    assert "course: must be a whole number" in text_of(resp)
    assert 'name="course" value="seven"' in resp.text and JOB_ROW.findall(resp.text) == []
    assert get(api.session(), "/jobs", status="finished").status_code == 400


def test_the_list_pages_by_cursor_keeping_the_filters(api, clock):
    made = []
    for _ in range(30):
        made.append(make_job(clock, 1, course=3))
        clock.advance(1)
    make_job(clock, 1, course=9)
    admin = api.session()
    first = get(admin, "/jobs", course="3")
    page1 = listed(first)
    assert page1 == made[::-1][:25]
    link = next_link(first)
    assert link.startswith("/jobs?") and "course=3" in link and "cursor=" in link
    second = admin.http.get(f"{api.url}{link}", timeout=30)
    assert listed(second) == made[::-1][25:]
    assert next_link(second) is None and 'href="/jobs?course=3">First page' in second.text


# --- one job -------------------------------------------------------------------------------


def test_the_job_page_shows_counts_route_and_why_batches_and_recipients(api, clock):
    job_id = make_job(clock, 6, course=12, company=4, sent=(1, 2, 3), failed=(4,))
    resp = get(api.session(), f"/jobs/{job_id}")
    assert resp.status_code == 200
    words = text_of(resp)
    job = Job.get_by_id(job_id)
    assert job.route_reason  # why it took its route, as recorded at creation
    assert f"<dt>Route</dt><dd><strong>{job.route}</strong>: {job.route_reason}</dd>" in resp.text
    assert "4 of 6 done: 3 sent, 1 failed, 2 still to go." in words
    counts = dict(re.findall(r"<tr><td>(\w+)</td><td class=\"num\">(\d+)</td></tr>", resp.text))
    assert counts == {"failed": "1", "pending": "2", "sent": "3"}
    assert "<svg" in resp.text and 'aria-label="Progress' in resp.text  # the chart
    assert "Batches 1 batch: 1 pending" in words and "smtp 550" in words
    assert '<details class="batches" open>' in resp.text  # a few: shown open
    assert recipient_ids(resp) == [1, 2, 3, 4, 5, 6]
    assert "Course 12" in words and "Company 4" in words
    # a unique prefix of the id finds it too
    assert get(api.session(), f"/jobs/{job_id[:8]}").status_code == 200
    assert get(api.session(), "/jobs/no-such-job").status_code == 404


def test_the_job_page_says_what_retention_and_purge_user_erased(api, clock, tmp_path):
    old = make_job(clock, 4, failed=(2,), sent=(1, 3, 4))
    clock.advance(200 * 86400)
    privacy.run_retention(recipient_days=180, certificate_days=None, certificate_dir=tmp_path,
                          stores={}, now=clock(), perf=lambda: 0.0)  # fmt: skip
    recent = make_job(clock, 3, sent=(1, 2, 3))
    privacy.purge_user(2, certificate_dir=tmp_path, stores={}, include_suppression=False,
                       now=clock())  # fmt: skip
    admin = api.session()

    page = get(admin, f"/jobs/{old}")
    words = text_of(page)
    assert (
        f"Personal data erased on {clock():%Y-%m-%d %H:%M} UTC (retention: finished more "
        "than 180 days ago): the addresses, names, variables and addresses in errors of "
        "every recipient." in words
    ), words
    assert "the counts and the progress do not change" in words
    assert "1 of 4 done" not in words and "4 of 4 done: 3 sent, 1 failed" in words
    assert f'action="/jobs/{old}/retry"' not in page.text  # retry would be refused
    assert "user1@example.org" not in page.text and "First1" not in page.text

    page = get(admin, f"/jobs/{recent}")
    words = text_of(page)
    assert "Personal data erased on" not in words
    assert "1 recipient erased by purge-user (a learner's erasure request)" in words
    assert "user2@example.org" not in page.text and "user3@example.org" in page.text
    assert recipient_ids(page) == [1, 3]  # and one shown as purged
    assert '<td class="num" data-label="User">purged</td>' in page.text

    fresh = get(admin, f"/jobs/{make_job(clock, 2)}")
    assert "erased" not in text_of(fresh)


def test_many_batches_are_summed_up_and_listed_folded(api, clock):
    spec = jobs.JobSpec(type="send_csv", template_id="custom", source="test")
    job_id = jobs.create_job(spec, people(130), batch_size=10, now=clock()).job_id
    jobs.queue_local_batches(clock(), job_id)
    resp = get(api.session(), f"/jobs/{job_id}")
    assert "Batches 13 batches: 13 queued" in text_of(resp)
    assert '<details class="batches">' in resp.text  # folded: the recipients come first
    assert resp.text.count("<td>queued</td><td>local</td>") == 13


def test_recipients_are_paginated_on_the_server_searched_and_filtered(api, clock):
    job_id = make_job(clock, 130, failed=range(10, 131, 10), sent=range(1, 10))
    admin = api.session()
    first = get(admin, f"/jobs/{job_id}")
    assert recipient_ids(first) == list(range(1, 51))
    second = admin.http.get(f"{api.url}{next_link(first)}", timeout=30)
    assert recipient_ids(second) == list(range(51, 101))
    third = admin.http.get(f"{api.url}{next_link(second)}", timeout=30)
    assert recipient_ids(third) == list(range(101, 131)) and next_link(third) is None
    assert f'href="/jobs/{job_id}#recipients">First page' in third.text

    failed = get(admin, f"/jobs/{job_id}", status="failed")
    assert recipient_ids(failed) == list(range(10, 131, 10))
    assert '<option value="failed" selected>' in failed.text
    assert "smtp 550" in text_of(failed)
    # search: part of the address or the name, any case, with the status kept
    assert recipient_ids(get(admin, f"/jobs/{job_id}", q="USER12")) == [12] + list(range(120, 130))
    assert recipient_ids(get(admin, f"/jobs/{job_id}", q="last12", status="failed")) == [120]
    assert recipient_ids(get(admin, f"/jobs/{job_id}", q="first7")) == [7] + list(range(70, 80))
    nobody = get(admin, f"/jobs/{job_id}", q="nobody@nowhere")
    assert recipient_ids(nobody) == [] and "No recipient matches." in nobody.text
    bad = get(admin, f"/jobs/{job_id}", status="lost")
    assert bad.status_code == 400 and "status: must be one of" in text_of(bad)


def test_a_recipients_history_shows_when_it_was_sent_its_attempts_and_last_error(api, clock):
    job_id = make_job(clock, 2, failed=(2,), sent=(1,))
    Recipient.update(timesent=clock(), external_id="msg-77", attempts=1).where(
        Recipient.job == job_id, Recipient.userid == 1
    ).execute()
    Recipient.update(attempts=3).where(Recipient.job == job_id, Recipient.userid == 2).execute()
    words = text_of(get(api.session(), f"/jobs/{job_id}"))
    assert "sent 2025-11-18 12:00 UTC (message id msg-77)" in words
    assert "1 attempt; last change 2025-11-18 12:00 UTC" in words
    assert "smtp 550 History 3 attempts" in words


def test_the_progress_fragment_refreshes_until_the_job_is_finished(api, clock):
    job_id = make_job(clock, 3, sent=(1,))
    admin = api.session()
    page = get(admin, f"/jobs/{job_id}")
    assert f'data-refresh="/jobs/{job_id}/progress" data-every="3"' in page.text
    running = get(admin, f"/jobs/{job_id}/progress")
    assert running.status_code == 200 and "<html" not in running.text
    assert "1 of 3 done" in text_of(running) and "data-final" not in running.text

    Recipient.update(status="sent").where(Recipient.job == job_id).execute()
    store.settle(job_id, clock())
    done = get(admin, f"/jobs/{job_id}/progress")
    assert "data-final" in done.text and "3 of 3 done" in text_of(done)
    assert "The job is finished" in text_of(done)
    page = get(admin, f"/jobs/{job_id}")
    assert "data-refresh" not in page.text and "data-final" in page.text


# --- actions -------------------------------------------------------------------------------


def test_retry_requeues_the_failed_says_so_and_audits_who(api, clock):
    job_id = make_job(clock, 4, failed=(2, 3), sent=(1, 4))
    admin = api.session("alice")
    page = get(admin, f"/jobs/{job_id}")
    form = re.search(rf'<form method="post" action="/jobs/{job_id}/retry"[^>]*>', page.text)
    assert 'data-confirm="Send again to the 2 failed recipients' in form.group(0)
    resp = post(admin, f"/jobs/{job_id}/retry")
    assert resp.status_code == 303 and resp.headers["Location"].startswith(f"/jobs/{job_id}?")
    assert statuses(job_id) == {1: "sent", 2: "retry_pending", 3: "retry_pending", 4: "sent"}
    back = admin.http.get(f"{api.url}{resp.headers['Location']}", timeout=30)
    assert "Retry asked: 2 recipients re-queued; they will be sent again." in text_of(back)
    ((_, detail),) = audit_events("job_retry")
    assert '"name": "alice"' in detail and '"via": "dashboard"' in detail
    assert "job_retry" in text_of(back)  # the job's history


def test_cancel_stops_what_is_not_sent_says_so_and_audits_who(api, clock):
    job_id = make_job(clock, 3, sent=(1,))
    admin = api.session("alice")
    page = get(admin, f"/jobs/{job_id}")
    assert re.search(r'action="/jobs/[^"]+/cancel" class="inline" data-confirm="Cancel', page.text)
    resp = post(admin, f"/jobs/{job_id}/cancel")
    assert resp.status_code == 303
    assert statuses(job_id) == {1: "sent", 2: "cancelled", 3: "cancelled"}
    assert Job.get_by_id(job_id).status == "cancelled"
    back = admin.http.get(f"{api.url}{resp.headers['Location']}", timeout=30)
    assert "Job cancelled: 2 recipients will not be sent." in text_of(back)
    assert "/cancel" not in back.text and "/retry" not in back.text  # nothing left to do
    ((_, detail),) = audit_events("job_cancelled")
    assert '"name": "alice"' in detail and '"via": "dashboard"' in detail
    # again: a 409 page saying why, nothing changes
    again = post(admin, f"/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in text_of(again)


def test_a_notice_cannot_be_made_up_in_a_link(api, clock):
    job_id = make_job(clock, 1)
    resp = get(api.session(), f"/jobs/{job_id}", notice="retried:9999.forged")
    assert resp.status_code == 200 and "re-queued" not in resp.text


@pytest.mark.parametrize("csrf", [None, "", "wrong-token"], ids=["missing", "empty", "wrong"])
@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_an_action_without_the_csrf_token_is_403_and_changes_nothing(api, clock, action, csrf):
    job_id = make_job(clock, 3, failed=(2,))  # still running: both actions are possible
    before = statuses(job_id)
    resp = post(api.session(), f"/jobs/{job_id}/{action}", csrf=csrf)
    assert resp.status_code == 403 and "CSRF" in resp.text
    assert resp.headers["Content-Type"].startswith("text/html")
    assert statuses(job_id) == before and Job.get_by_id(job_id).status == "pending"
    assert audit_events("job_retry", "job_cancelled") == []


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_a_read_only_principal_sees_no_buttons_and_gets_403(api, clock, action):
    job_id = make_job(clock, 3, failed=(2,), sent=(1, 3))
    viewer = api.session("viewer", read_only=True)
    page = get(viewer, f"/jobs/{job_id}")
    assert page.status_code == 200 and "/retry" not in page.text and "/cancel" not in page.text
    assert "read-only" in text_of(page) and f"/jobs/{job_id}/export.csv" in page.text
    before = statuses(job_id)
    resp = post(viewer, f"/jobs/{job_id}/{action}")
    assert resp.status_code == 403 and "read-only" in text_of(resp)
    assert statuses(job_id) == before and audit_events("job_retry", "job_cancelled") == []


def test_a_bearer_token_does_not_open_the_pages(api, clock):
    """Tokens are for the JSON API: the pages need a signed-in session."""
    job_id = make_job(clock, 2, failed=(2,), sent=(1,))
    token = api.token("monitor")
    assert get(token, f"/jobs/{job_id}").status_code == 303  # to /login
    resp = token.http.post(f"{api.url}/jobs/{job_id}/retry", allow_redirects=False, timeout=30)
    assert resp.status_code == 401 and statuses(job_id) == {1: "sent", 2: "failed"}


def test_a_company_manager_sees_their_companys_jobs_only_and_404_for_others(api, clock):
    mine = make_job(clock, 2, company=4, failed=(2,), sent=(1,))
    theirs = make_job(clock, 2, company=5, failed=(2,), sent=(1,))
    nobodys = make_job(clock, 2, failed=(2,), sent=(1,))
    manager = api.session("manager", companies=(4,))
    assert listed(get(manager, "/jobs")) == [mine]
    assert listed(get(manager, "/jobs", company="5")) == []
    assert get(manager, f"/jobs/{mine}").status_code == 200
    for other in (theirs, nobodys):
        for path in ("", "/progress", "/export.csv"):
            resp = get(manager, f"/jobs/{other}{path}")
            assert resp.status_code == 404, path
            assert resp.headers["Content-Type"].startswith("text/html")
        for action in ("retry", "cancel"):
            assert post(manager, f"/jobs/{other}/{action}").status_code == 404
        assert statuses(other) == {1: "sent", 2: "failed"}
    not_there = get(manager, "/jobs/00000000-0000-0000-0000-000000000000")
    assert text_of(not_there).count("no job") == text_of(get(manager, f"/jobs/{theirs}")).count(
        "no job"
    )
    assert audit_events("job_retry", "job_cancelled") == []


# --- export --------------------------------------------------------------------------------


def test_export_is_the_apis_csv_of_every_recipient(api, clock):
    job_id = make_job(clock, 3, failed=(2,), sent=(1, 3))
    admin = api.session()
    page = get(admin, f"/jobs/{job_id}")
    assert f'href="/jobs/{job_id}/export.csv" download>Export CSV' in page.text
    resp = get(admin, f"/jobs/{job_id}/export.csv")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/csv")
    assert resp.headers["Content-Disposition"] == f'attachment; filename="job-{job_id}.csv"'
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert [(r["userid"], r["email"], r["status"], r["last_error"]) for r in rows] == [
        ("1", "user1@example.org", "sent", ""),
        ("2", "user2@example.org", "failed", "smtp 550"),
        ("3", "user3@example.org", "sent", ""),
    ]
    assert resp.content == admin.get(f"/jobs/{job_id}/export").content  # the API's bytes
