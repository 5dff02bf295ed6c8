"""The dashboard's schedules pages over real HTTP, signed in with a session cookie, against
the Moodle sandbox over HTTP, on every database backend: the list with the next due time in
the site's zone, a schedule's last runs, the dry run (the API's and the CLI's preview) and
"run now" (CSRF, read-only, company scoping)."""

import html
import re
from datetime import datetime

import pytest
import requests
from cryptography.fernet import Fernet

from schedules.selection import label
from sidecar import sync
from sidecar.config import Config
from sidecar.daemon import Daemon
from sidecar.db.models import Job, ScheduleRun
from sidecar.moodle import open_client
from sidecar.runs import Runner
from sidecar.runtime import Runtime
from sidecar.schedulelist import find_schedule
from sidecar.scheduleview import _schedule
from tests.conftest import Clock, schedule_row
from tests.sidecar.api_helpers import audit_events, serve_api
from tests.sidecar.test_api_schedules import site  # noqa: F401 - the sandbox fixture

START = datetime(2026, 12, 1, 8, 0, 0)  # 10:00 in Helsinki: today's 09:00 run is past
ZONE = "Europe/Helsinki"


class Pages:
    """A signed-in browser without a browser: requests with the session cookie."""

    def __init__(self, api, name="alice", **kw):
        caller = api.session(name, **kw)
        self.url, self.http, self.csrf = api.url, caller.http, caller.csrf

    def get(self, path: str, **params) -> requests.Response:
        return self.http.get(self.url + path, params=params, timeout=60, allow_redirects=False)

    def post(self, path: str, csrf: str | None = "auto", **data) -> requests.Response:
        if csrf:
            data["csrf"] = self.csrf if csrf == "auto" else csrf
        return self.http.post(self.url + path, data=data, timeout=60, allow_redirects=False)


def make_served(serve_app, db_url, tmp_path, site, runtime=True):  # noqa: F811
    first, second = sorted(site.companies)
    course = site.main_course_id
    site.schedules[:] = [
        schedule_row(course, id=1),
        schedule_row(course, id=2, name="Company A", companyid=first, cloud_preference="local"),
        schedule_row(course, id=3, name="Company B", companyid=second, enabled=0),
    ]
    config = Config.model_validate({
        "moodle": {"url": site.server_url, "token": site.token, "retry_attempts": 1},
        "database": {"url": db_url},
        "server": {"public_url": "https://offload.example.org"},
        "security": {"encryption_key": Fernet.generate_key().decode()},
        "dashboard": {"enabled": True},
        "schedules": {"timezone": ZONE},
        "providers": {"local": {"from": "Academy <noreply@academy.example>",
                                "maildir": str(tmp_path / "mail"),
                                "certificate_dir": str(tmp_path / "certs")}},
    })  # fmt: skip
    clock = Clock(START)
    rt = Runtime(config, clock=clock)
    rt.ready_db()
    results = sync.sync_all(config, lambda: open_client(config), clock())
    assert not any(r.error for r in results), results
    daemon = Daemon(config)  # its certificate and verify handlers, not started
    api = serve_api(serve_app, clock, config, rt if runtime else None,
                    certificate=daemon._certificate, verify_page=daemon._verify_page)  # fmt: skip
    api.companies, api.runtime = (first, second), rt
    return api


@pytest.fixture
def served(serve_app, db_url, tmp_path, site):  # noqa: F811
    api = make_served(serve_app, db_url, tmp_path, site)
    yield api
    api.runtime.close()


def rows(page: str) -> list[str]:
    """The text of each body row of the page's tables, tags stripped, spaces collapsed."""
    body = "".join(re.findall(r"<tbody>(.*?)</tbody>", page, re.S))
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", r)).split())
            for r in re.findall(r"<tr>(.*?)</tr>", body, re.S)]  # fmt: skip


def text(page: str) -> str:
    """What the page reads: tags stripped, spaces collapsed, none before punctuation."""
    words = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
    return re.sub(r" ([.,:;])", r"\1", words)


def nothing_ran() -> bool:
    return ScheduleRun.select().count() == 0 and Job.select().count() == 0


def test_the_list_shows_each_synced_schedule_and_its_next_due_time_in_the_site_zone(served):
    resp = Pages(served).get("/schedules")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    first, second = served.companies
    course = find_schedule(1).data["courseid"]
    assert rows(resp.text) == [
        f"Daily reminder {course} daily email enrolled auto yes 2026-12-02 09:00 EET never",
        f"Company A company {first} {course} daily email enrolled local yes "
        "2026-12-02 09:00 EET never",
        f"Company B company {second} {course} daily email enrolled auto no none (disabled) never",
    ]
    assert '<time datetime="2026-12-02T07:00:00Z">2026-12-02 09:00 EET</time>' in resp.text
    assert "Times are in the site's zone, Europe/Helsinki." in text(resp.text)
    assert 'aria-current="page">Schedules' in resp.text


def test_a_schedule_shows_its_last_runs_with_counts_by_exclusion_reason(served):
    record = find_schedule(1)
    counts = {"learners": 10, "recipients": 6, "left_out": {"completed": 3,
              "enrolment_suspended": 1}, "jobs": ["0123456789abcdef"]}  # fmt: skip
    ScheduleRun.create(schedule=record.id, due_at=datetime(2026, 11, 30, 7), status="done",
                       claimed_at=START, recipients=6, counts=counts, route="local",
                       route_reason="offload.enabled is false")  # fmt: skip
    ScheduleRun.create(schedule=record.id, due_at=datetime(2026, 11, 29, 7), status="failed",
                       claimed_at=START, error="Moodle could not be reached")  # fmt: skip
    page = Pages(served).get("/schedules/1").text
    assert "<h1>Daily reminder</h1>" in page
    assert "Next due 2026-12-02 09:00 EET (Europe/Helsinki)" in text(page)
    shown = text(page)
    assert ("2026-11-30 09:00 EET done 6 10 learners: 6 recipients (6 emails); left out: "
            "completed 3, suspended enrolment 1 Left out, by reason completed 3 suspended "
            "enrolment 1 local offload.enabled is false 01234567") in shown  # fmt: skip
    assert "2026-11-29 09:00 EET failed Moodle could not be reached" in shown
    assert shown.index("2026-11-30 09:00") < shown.index("2026-11-29 09:00")  # latest first
    assert '<a href="/jobs/0123456789abcdef">' in page
    listed = rows(Pages(served).get("/schedules").text)[0]
    assert listed.endswith("done 2026-11-30 09:00 EET 10 learners: 6 recipients (6 emails); "
                           "left out: completed 3, suspended enrolment 1")  # fmt: skip


def test_older_runs_are_a_page_away(served):
    record = find_schedule(1)
    for day in range(1, 26):
        ScheduleRun.create(schedule=record.id, due_at=datetime(2026, 11, day, 7), status="done",
                           claimed_at=START, recipients=day)  # fmt: skip
    viewer = Pages(served)
    first = viewer.get("/schedules/1").text
    assert [r.split(" done ")[1].split()[0] for r in rows(first)] == [
        str(d) for d in range(25, 5, -1)
    ]
    older = html.unescape(re.search(r'<a href="([^"]+)#runs">Older runs', first)[1])
    second = viewer.get(older).text
    assert [r.split(" done ")[1].split()[0] for r in rows(second)] == ["5", "4", "3", "2", "1"]
    assert "Older runs" not in second


def test_dry_run_shows_the_cli_s_preview_and_a_safe_sample_and_sends_nothing(served):
    resp = Pages(served).get("/schedules/1/dry-run")
    assert resp.status_code == 200, resp.text
    page = resp.text
    expected = Runner(served.runtime).prepare(_schedule(find_schedule(1)), served.clock())
    shown = text(page)
    assert f"Recipients {expected.recipients} " in shown and expected.recipients > 0
    summary = expected.summary.split(": dry_run: ")[1].split("; route ")[0]
    assert f"Counts {summary} " in shown
    assert "Route local (" in shown and "offload.enabled is false" in shown
    assert "Nothing was sent or recorded." in shown
    sample = expected.sample
    assert f"Subject: {sample.subject}" in shown and sample.subject.startswith("Reminder:")
    assert html.escape(sample.text, quote=False) in page  # the plain text, escaped in a <pre>
    frame = re.search(r'<iframe class="sample" [^>]*\bsandbox srcdoc="([^"]*)"', page)
    assert frame and "<" not in frame[1]  # the HTML is an escaped attribute, not markup
    assert html.unescape(frame[1]) == sample.html
    for reason, n in expected.counts["left_out"].items():
        assert f'<th scope="row">{label(reason)}</th><td class="num">{n}</td>' in page
    assert nothing_ran()


def test_run_now_queues_a_run_audits_who_and_says_what_was_queued(served):
    alice = Pages(served, "alice")
    resp = alice.post("/schedules/1/run")
    assert resp.status_code == 303
    [run] = ScheduleRun.select()
    assert resp.headers["Location"] == f"/schedules/1?source=moodle&queued={run.id}"
    [job] = Job.select()
    assert job.schedule_id == 1 and run.manual
    [(_, detail)] = audit_events("schedule_run_now")
    assert '"name": "alice"' in detail and '"via": "dashboard"' in detail
    page = alice.get(resp.headers["Location"]).text
    notice = text(re.search(r'<div class="notice" role="status">(.*?)</div>', page, re.S)[1])
    assert notice.startswith(f"Run now: run {run.id} at 2026-12-01 10:00 EET is done: ")
    assert f"Queued 1 job: {job.id[:8]}." in notice
    assert f'<a href="/jobs/{job.id}">' in page
    # a queued= of another schedule's run says nothing
    assert "Run now:" not in alice.get("/schedules/2", queued=str(run.id)).text
    again = alice.post("/schedules/1/run")  # the same second: the run exists already
    assert again.status_code == 409 and "exists already" in text(again.text)


@pytest.mark.parametrize("csrf", [None, "wrong"])
def test_run_now_without_the_csrf_token_is_403_and_queues_nothing(served, csrf):
    resp = Pages(served).post("/schedules/1/run", csrf=csrf)
    assert resp.status_code == 403
    assert "missing or wrong CSRF token" in text(resp.text)
    assert nothing_ran() and not audit_events("schedule_run_now")


def test_a_read_only_viewer_sees_the_schedule_but_cannot_run_it(served):
    viewer = Pages(served, "ro", read_only=True)
    page = viewer.get("/schedules/1").text
    assert "Read-only: you cannot run schedules." in page and "Run now</button>" not in page
    resp = viewer.post("/schedules/1/run")
    assert resp.status_code == 403 and "read-only" in text(resp.text)
    assert nothing_ran()


def test_a_company_manager_sees_only_their_company_s_schedules(served):
    first, _ = served.companies
    manager = Pages(served, "m", companies=[first])
    assert [r.split(" company ")[0] for r in rows(manager.get("/schedules").text)] == ["Company A"]
    assert manager.get("/schedules/2").status_code == 200
    for other in (1, 3, 99):  # the site's, another company's, none
        for path in ("", "/dry-run"):
            resp = manager.get(f"/schedules/{other}{path}")
            assert resp.status_code == 404, (other, path)
            assert f"no schedule {other} (synced and not deleted)" in resp.text
        assert manager.post(f"/schedules/{other}/run").status_code == 404
    assert nothing_ran() and not audit_events("schedule_run_now")


def test_without_the_daemon_s_runtime_dry_run_and_run_now_are_a_503_page(
    serve_app,
    db_url,
    tmp_path,
    site,  # noqa: F811
):
    bare = make_served(serve_app, db_url, tmp_path, site, runtime=False)
    try:
        viewer = Pages(bare)
        for resp in (viewer.get("/schedules/1/dry-run"), viewer.post("/schedules/1/run")):
            assert resp.status_code == 503
            assert resp.headers["Content-Type"].startswith("text/html")
            assert "dry runs and runs need the daemon (moodle-offload run)" in resp.text
        assert viewer.get("/schedules/1").status_code == 200
        assert viewer.get("/schedules/x").status_code == 400
        assert nothing_ran()
    finally:
        bare.runtime.close()


def test_signed_out_the_pages_send_to_sign_in_and_run_now_is_401(served):
    anonymous = requests.Session()
    resp = anonymous.get(f"{served.url}/schedules/1/dry-run", allow_redirects=False, timeout=10)
    assert resp.status_code == 303 and resp.headers["Location"] == "/login"
    resp = anonymous.post(f"{served.url}/schedules/1/run", allow_redirects=False, timeout=10)
    assert resp.status_code == 401
    assert nothing_ran()
