"""The JSON API's schedules, runs and certificates over real HTTP, against the Moodle
sandbox over HTTP, on every database backend."""

from datetime import datetime

import pytest
import requests
from cryptography.fernet import Fernet

from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
from sidecar import certificates, sync
from sidecar.config import Config
from sidecar.daemon import Daemon
from sidecar.db.models import Certificate, Job, ScheduleRun
from sidecar.moodle import open_client
from sidecar.runs import Runner
from sidecar.runtime import Runtime
from sidecar.schedulelist import find_schedule, schedule_rows
from sidecar.scheduleview import _schedule
from tests.conftest import Clock, schedule_row
from tests.sidecar.api_helpers import audit_events, make_job, serve_api

START = datetime(2026, 12, 1, 8, 0, 0)  # 09:00 in London is 09:00 UTC in December


@pytest.fixture
def site():
    s = generate_site(SiteSpec(seed=11, learners=40, courses=2, companies=2))
    s.schedules[:] = []
    with SandboxServer(s) as server:
        s.server_url = server.url
        yield s


@pytest.fixture
def served(serve_app, db_url, tmp_path, site):
    """The sandbox serving a site-wide schedule (1) and one of each company (2, 3), a
    runtime on a clock at START after a first sync, and the API over it."""
    first, second = sorted(site.companies)
    course = site.main_course_id
    site.schedules[:] = [
        schedule_row(course, id=1),
        schedule_row(course, id=2, name="Company A", companyid=first),
        schedule_row(course, id=3, name="Company B", companyid=second),
    ]
    config = Config.model_validate({
        "moodle": {"url": site.server_url, "token": site.token, "retry_attempts": 1},
        "database": {"url": db_url},
        "server": {"public_url": "https://offload.example.org"},
        "security": {"encryption_key": Fernet.generate_key().decode()},
        "dashboard": {"enabled": True},
        "schedules": {"timezone": "Europe/London"},
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
    api = serve_api(serve_app, clock, config, rt, certificate=daemon._certificate,
                    verify_page=daemon._verify_page)  # fmt: skip
    api.companies = (first, second)
    api.runtime = rt
    yield api
    rt.close()


def test_schedules_list_has_next_due_and_last_run_like_the_cli(served):
    admin = served.session()
    body = admin.get("/schedules").json()
    assert body["next_cursor"] is None
    items = body["items"]
    cli = schedule_rows(served.runtime)
    assert [(s["id"], s["source"], s["name"]) for s in items] == [
        (r.id, r.source, r.name) for r in cli
    ]
    assert [s["next_due"][:16].replace("T", " ") for s in items] == [r.next_due for r in cli]
    assert items[0]["next_due"] == "2026-12-01T09:00:00Z"
    assert items[0]["next_due_local"] == "2026-12-01T09:00:00+00:00"
    assert items[0]["last_run"] is None and items[0]["company"] is None
    assert items[1]["company"] == served.companies[0]


def test_a_company_principal_sees_only_its_company_s_schedules(served):
    first, second = served.companies
    for caller in (served.token("co", company=first), served.session("m", companies=[first])):
        assert [s["id"] for s in caller.get("/schedules").json()["items"]] == [2]
        assert caller.get("/schedules/2").status_code == 200
        for other in (1, 3, 99):  # the site's, another company's, none
            for path in ("", "/runs", "/dry-run"):
                resp = caller.get(f"/schedules/{other}{path}")
                assert resp.status_code == 404, (other, path)
                assert resp.json()["error"] == f"no schedule {other} (synced and not deleted)"
            assert caller.post(f"/schedules/{other}/run").status_code == 404
    assert ScheduleRun.select().count() == 0 and not audit_events("schedule_run_now")


def test_dry_run_is_the_cli_s_preview_and_sends_nothing(served):
    resp = served.session().get("/schedules/1/dry-run")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    expected = Runner(served.runtime).prepare(_schedule(find_schedule(1)), served.clock())
    assert body["recipients"] == expected.recipients > 0
    assert body["summary"] == expected.summary.split(": dry_run: ")[1].split("; route ")[0]
    assert body["counts"]["left_out"] == expected.counts["left_out"]
    assert body["route"] == "local" and "offload.enabled is false" in body["route_reason"]
    assert body["sample"]["subject"].startswith("Reminder:") and body["sample"]["text"]
    assert body["moodle_requests"] > 0
    assert ScheduleRun.select().count() == 0 and Job.select().count() == 0


def test_run_now_fires_a_recorded_run_audits_who_and_lists_it(served):
    admin = served.session("alice")
    resp = admin.post("/schedules/1/run")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "done" and len(body["jobs"]) == 1 and body["recipients"] > 0
    assert Job.get_by_id(body["jobs"][0]).schedule_id == 1
    [(_, detail)] = audit_events("schedule_run_now")
    assert '"name": "alice"' in detail and '"status": "done"' in detail
    runs = admin.get("/schedules/1/runs").json()
    assert [r["status"] for r in runs["items"]] == ["done"] and runs["next_cursor"] is None
    assert runs["items"][0]["jobs"] == body["jobs"] and runs["items"][0]["manual"] is True
    listed = admin.get("/schedules").json()["items"][0]
    assert listed["last_run"]["id"] == runs["items"][0]["id"]
    again = admin.post("/schedules/1/run")  # the same second: the run exists already
    assert again.status_code == 409 and "exists already" in again.json()["error"]
    job = admin.get(f"/jobs/{body['jobs'][0]}").json()
    assert job["run"]["id"] == runs["items"][0]["id"]


def test_runs_walk_every_run_once(served):
    record = find_schedule(1)
    for day in range(1, 28):
        ScheduleRun.create(schedule=record.id, due_at=datetime(2026, 11, day, 9), status="done",
                           claimed_at=START, recipients=day)  # fmt: skip
    runs = served.session().walk("/schedules/1/runs", limit=5)
    assert [r["recipients"] for r in runs] == list(range(27, 0, -1))


def test_without_a_runtime_dry_run_and_run_now_answer_503(served, serve_app):
    bare = serve_api(serve_app, served.clock, served.dashboard.config).session()
    for resp in (bare.get("/schedules/1/dry-run"), bare.post("/schedules/1/run")):
        assert resp.status_code == 503 and "need the daemon" in resp.json()["error"]
    assert bare.get("/schedules/x/runs").status_code == 400
    assert ScheduleRun.select().count() == 0


def test_read_only_or_csrf_less_run_now_is_403_and_runs_nothing(served):
    for caller, csrf in ((served.token("ro", read_only=True), None), (served.session(), "bad")):
        resp = caller.post("/schedules/1/run", csrf=csrf)
        assert resp.status_code == 403
    assert ScheduleRun.select().count() == 0 and Job.select().count() == 0


# --- certificates --------------------------------------------------------------------------


def issue(clock, job_id, userid, course) -> str:
    return certificates.reserve(job_id, userid, course, "local", clock()).code


def test_certificates_are_found_by_learner_code_and_course(served):
    clock = served.clock
    a = make_job(clock, 3, company=served.companies[0], course=10)
    b = make_job(clock, 3, company=served.companies[1], course=11)
    codes = {(job, uid): issue(clock, job, uid, course)
             for job, course in ((a, 10), (b, 11)) for uid in (1, 2)}  # fmt: skip
    admin = served.session()
    assert len(admin.walk("/certificates", limit=1)) == 4
    by_user = admin.get("/certificates", userid=1).json()["items"]
    assert {c["code"] for c in by_user} == {codes[(a, 1)], codes[(b, 1)]}
    [one] = admin.get("/certificates", code=codes[(a, 2)].lower()).json()["items"]
    assert one["userid"] == 2 and one["course"] == 10 and one["status"] == "valid"
    assert one["verify_url"] == f"https://offload.example.org/verify/{one['code']}"
    assert {c["course"] for c in admin.get("/certificates", course=11).json()["items"]} == {11}
    by_name = admin.get("/certificates", learner="first2 LAST2").json()["items"]
    assert {c["code"] for c in by_name} == {codes[(a, 2)], codes[(b, 2)]}
    by_address = admin.get("/certificates", learner="user1@example").json()["items"]
    assert {c["userid"] for c in by_address} == {1}
    scoped = served.token("co", company=served.companies[0])
    assert {c["job_id"] for c in scoped.walk("/certificates")} == {a}
    assert scoped.get("/certificates", code=codes[(b, 1)]).json()["items"] == []
    bad = admin.get("/certificates", userid="me")
    assert bad.status_code == 400 and bad.json()["error"].startswith("userid: ")


def test_revoke_makes_verify_say_revoked_and_the_link_410_and_is_audited(served, tmp_path):
    clock = served.clock
    job = make_job(clock, 2, company=served.companies[0], course=10)
    code = issue(clock, job, 1, 10)
    (tmp_path / "certs" / job).mkdir(parents=True)
    (tmp_path / "certs" / job / "1.pdf").write_bytes(b"%PDF-1.4 test")
    link = f"{served.url}/certificates/{code}"
    assert requests.get(link, timeout=10).status_code == 200
    other = served.token("co-b", company=served.companies[1])
    assert other.post(f"/certificates/{code}/revoke").status_code == 404
    assert (
        served.token("ro", read_only=True).post(f"/certificates/{code}/revoke").status_code == 403
    )
    assert served.session().post(f"/certificates/{code}/revoke", csrf=None).status_code == 403
    assert Certificate.get_by_id(code).revoked_at is None and not audit_events(
        "certificate_revoked"
    )
    alice = served.session("alice")
    missing = alice.post(f"/certificates/{code}/revoke")
    assert missing.status_code == 400 and "the reason is required" in missing.json()["error"]
    resp = alice.post(f"/certificates/{code.lower()}/revoke", json={"reason": "wrong  name"})
    assert resp.status_code == 200 and resp.json()["status"] == "revoked"
    assert resp.json()["revoked_at"] == START.isoformat() + "Z"
    assert resp.json()["revoked_reason"] == "wrong name"
    page = requests.get(f"{served.url}/verify/{code}", timeout=10).text
    assert "revoked" in page and f"Revoked on {START:%Y-%m-%d}: wrong name." in page
    gone = requests.get(link, timeout=10)
    assert gone.status_code == 410 and "was revoked on" in gone.text
    assert requests.get(f"{served.url}/certificates/NOSUCHCODE", timeout=10).status_code == 404
    [(_, detail)] = audit_events("certificate_revoked")
    assert '"name": "alice"' in detail and f'"code": "{code}"' in detail
    assert '"reason": "wrong name"' in detail
    again = served.session().post(f"/certificates/{code}/revoke", params={"reason": "again"})
    assert again.status_code == 409 and "already revoked" in again.json()["error"]
    no_such = served.session().post("/certificates/NOSUCHCODE/revoke", params={"reason": "x"})
    assert no_such.status_code == 404


def test_the_daemon_gives_the_api_its_runtime(tmp_path):
    from sidecar.config import load

    key = Fernet.generate_key().decode()
    path = tmp_path / "offload.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/offload.db"\n[server]\nlisten = "127.0.0.1:0"\n'
        f'[security]\nencryption_key = "{key}"\n[dashboard]\nenabled = true\n'
    )
    daemon = Daemon(load(path), path)
    assert daemon._dashboard().api.runtime is daemon.runtime
