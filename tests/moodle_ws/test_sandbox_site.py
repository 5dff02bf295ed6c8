"""The generator (deterministic, fast at 50,000 learners), counting, faults, latency, server."""

import json
import threading
import time
from dataclasses import asdict

import pytest
import requests

from moodle_ws.sandbox import DEFAULT_NOW, SandboxServer, SiteSpec, generate_site
from tests.moodle_ws.test_sandbox import make_moodle


def fingerprint(site) -> str:
    data = {
        "token": site.token,
        "users": [asdict(u) for u in site.users.values()],
        "courses": [asdict(c) for c in site.courses.values()],
        "enrolments": {c: {u: asdict(e) for u, e in d.items()} for c, d in site.enrolments.items()},
        "completions": site.course_completions,
        "states": {c: dict(rows) for c, rows in site.cm_states.items()},
        "companies": [asdict(c) for c in site.companies.values()],
        "company_users": [asdict(r) for r in site.company_users],
        "allocations": [asdict(a) for a in site.allocations],
        "schedules": site.schedules,
    }
    return json.dumps(data, sort_keys=True, default=str)


def test_same_seed_same_site_other_seed_other_site():
    spec = SiteSpec(seed=3, learners=200)
    assert fingerprint(generate_site(spec)) == fingerprint(generate_site(spec))
    assert fingerprint(generate_site(SiteSpec(seed=4, learners=200))) != fingerprint(
        generate_site(spec)
    )


def test_generation_never_reads_the_clock_unless_asked():
    site = generate_site(SiteSpec(learners=20))
    assert site.base_now == DEFAULT_NOW
    assert all(u.lastaccess <= DEFAULT_NOW for u in site.users.values())
    fresh = generate_site(SiteSpec(learners=20, now=None))
    assert abs(fresh.base_now - time.time()) < 60


def test_seeded_people_and_data_mix():
    site = generate_site(SiteSpec(seed=1, learners=500, completed_fraction=0.4))
    names = [site.users[u].fullname for u in site.learner_ids]
    assert names[:3] == ["Łukasz Żółć", "Дмитрий Иванов", "Ελένη Παπαδοπούλου"]
    emails = [site.users[u].email for u in site.learner_ids]
    assert len(set(emails)) == len(emails)
    assert {e.rsplit("@", 1)[1] for e in emails} == {"example.org", "example.com"}
    main = site.enrolments[site.main_course_id]
    assert set(site.learner_ids) <= set(main)
    assert 0 < sum(e.status for e in main.values()) < len(main) * 0.2
    never = [u for u in site.learner_ids if site.users[u].lastaccess == 0]
    assert 0 < len(never) < len(site.learner_ids) * 0.3
    assert any(e.lastaccess == 0 for e in main.values()) and any(
        e.lastaccess for e in main.values()
    )
    done = len(site.course_completions[site.main_course_id])
    assert 0.3 * 500 < done < 0.5 * 500
    states = {s for rows in site.cm_states.values() for s, _ in rows.values()}
    assert states == {1, 2, 3}
    course = site.courses[site.main_course_id]
    assert len({site.activities[c].modname for c in course.criteria}) >= 3
    assert site.courses[site.course_completion_disabled_id].enablecompletion == 0
    assert site.courses[site.course_no_criteria_id].criteria == []
    assert all(
        d.parent == 0
        for d in site.departments.values()
        if d.name in {c.name for c in site.companies.values()}
    )
    assert site.allocations and site.schedules and site.cloud_settings


def test_fifty_thousand_learners_generate_quickly_and_page():
    started = time.perf_counter()
    site = generate_site(SiteSpec(seed=2, learners=50_000, courses=2))
    assert time.perf_counter() - started < 15
    assert len(site.enrolments[site.main_course_id]) == 50_000 + len(site.teacher_ids)
    with SandboxServer(site) as server:
        url = server.url + "/webservice/rest/server.php"
        form = {
            "wstoken": site.token,
            "wsfunction": "core_enrol_get_enrolled_users",
            "moodlewsrestformat": "json",
            "courseid": site.main_course_id,
            "options[0][name]": "limitfrom",
            "options[0][value]": "49000",
            "options[1][name]": "limitnumber",
            "options[1][value]": "1000",
        }
        started = time.perf_counter()
        page = requests.post(url, data=form, timeout=60).json()
        assert len(page) == 1000 and time.perf_counter() - started < 2
        assert page[0]["id"] == site.learner_ids[49_000]


def test_per_user_completion_calls_are_fast(moodle_big):
    site, url = moodle_big
    session = requests.Session()
    learners = site.learner_ids[:300]
    started = time.perf_counter()
    for uid in learners:
        form = {
            "wstoken": site.token,
            "wsfunction": "core_completion_get_course_completion_status",
            "moodlewsrestformat": "json",
            "courseid": site.main_course_id,
            "userid": uid,
        }
        assert session.post(url, data=form, timeout=30).status_code == 200
    rate = len(learners) / (time.perf_counter() - started)
    assert rate > 100, f"{rate:.0f} requests/s"


@pytest.fixture(scope="module")
def moodle_big():
    site = generate_site(SiteSpec(seed=5, learners=5000))
    with SandboxServer(site) as server:
        yield site, server.url + "/webservice/rest/server.php"


# --- counting ---------------------------------------------------------------------------


@pytest.fixture
def m():
    moodle = make_moodle()
    yield moodle
    moodle.server.stop()


def test_requests_are_counted_per_function_and_reset(m):
    site = m.site
    site.reset_counts()
    m.call("core_webservice_get_site_info")
    m.call("core_webservice_get_site_info")
    m.error("core_enrol_get_enrolled_users")
    m.post(None)
    assert site.request_count == 4
    assert dict(site.requests_by_function) == {
        "core_webservice_get_site_info": 2,
        "core_enrol_get_enrolled_users": 1,
    }
    site.reset_counts()
    assert site.request_count == 0 and not site.requests_by_function


def test_response_bytes_are_counted_per_function_and_reset(m):
    site = m.site
    site.reset_counts()
    info = m.post("core_webservice_get_site_info")
    m.post(None)
    assert site.bytes_by_function == {"core_webservice_get_site_info": len(info.content)}
    assert site.bytes_served > len(info.content)
    site.reset_counts()
    assert site.bytes_served == 0 and not site.bytes_by_function


# --- fault injection and latency ---------------------------------------------------------


def test_fail_next_answers_http_errors_then_recovers(m):
    site = m.site
    site.fail_next("core_webservice_get_site_info", 2, status=503)
    site.fail_next("core_enrol_get_enrolled_users", 1, status=500)
    site.reset_counts()
    assert [m.post("core_webservice_get_site_info").status_code for _ in range(3)] == [
        503,
        503,
        200,
    ]
    assert m.post("core_enrol_get_enrolled_users", {"courseid": 2}).status_code == 500
    assert m.post("core_enrol_get_enrolled_users", {"courseid": 2}).status_code == 200
    assert site.request_count == 5


def test_fail_next_reset_closes_the_connection(m):
    m.site.fail_next("core_webservice_get_site_info", 1, status="reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        m.post("core_webservice_get_site_info")
    assert m.post("core_webservice_get_site_info").status_code == 200


def test_fail_next_wildcard_and_token_endpoint(m):
    m.site.fail_next("*", 1, status=502)
    assert (
        m.post("core_user_get_users_by_field", {"field": "id", "values": [101]}).status_code == 502
    )
    m.site.fail_next("login/token.php", 1, status=504)
    assert requests.post(m.token_url, data={"appsitecheck": "1"}, timeout=10).status_code == 504
    assert requests.post(m.token_url, data={"appsitecheck": "1"}, timeout=10).status_code == 200
    with pytest.raises(ValueError):
        m.site.fail_next("x", 1, status="boom")


def test_latency_is_per_request_and_concurrent(m):
    m.site.latency = 0.3
    results: list[int] = []

    def one():
        results.append(m.post("core_webservice_get_site_info").status_code)

    started = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    assert results == [200] * 8
    assert 0.3 <= elapsed < 1.5  # served in parallel, not one after another
    m.site.latency_by_function["core_webservice_get_site_info"] = 0.0
    started = time.perf_counter()
    m.post("core_webservice_get_site_info")
    assert time.perf_counter() - started < 0.25


# --- server lifecycle --------------------------------------------------------------------


def test_start_stop_without_a_context_manager():
    site = generate_site(SiteSpec(learners=5))
    server = SandboxServer(site)
    with pytest.raises(RuntimeError):
        server.url  # noqa: B018
    server.start()
    try:
        assert site.wwwroot == server.url and server.url.startswith("http://127.0.0.1:")
        answer = requests.get(
            server.url + "/webservice/rest/server.php",
            params={
                "wstoken": site.token,
                "moodlewsrestformat": "json",
                "wsfunction": "core_webservice_get_site_info",
            },
            timeout=10,
        )
        assert answer.json()["siteurl"] == server.url
    finally:
        server.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.url, timeout=5)


def test_concurrent_writers_keep_a_consistent_site(m):
    site = m.site
    learners = site.learner_ids[:20]

    def send(uid):
        m.call("core_message_send_instant_messages", messages=[{"touserid": uid, "text": "hi"}])

    threads = [threading.Thread(target=send, args=(u,)) for u in learners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [msg["id"] for msg in site.messages]
    assert len(ids) == 20 and len(set(ids)) == 20
