"""The overview page `GET /` and its fragment `GET /fragments/running`, through the real
HTTP app on 127.0.0.1 (requests as the browser), the ledger on every backend: what a site
admin and a company manager see, the live block, signed-out visitors, the short cache."""

import re
import time
from datetime import timedelta

import pytest
import requests

from sidecar.db.models import Recipient
from sidecar.web.pages import overview
from tests.sidecar.api_helpers import make_job


def page(caller, path="/"):
    resp = caller.http.get(f"{caller.url}{path}", timeout=30, allow_redirects=False)
    assert resp.status_code == 200, resp.text
    return resp.text


def section(html: str, cls: str) -> str:
    """The <section class="cls">…</section> of the page."""
    m = re.search(rf'<section class="{cls}"[^>]*>(.*?)</section>', html, re.S)
    assert m, f"no section {cls}"
    return m.group(1)


def running_cards(html: str) -> dict[str, dict[str, int]]:
    """{job id: {sent, failed, pending, total}} of the running-jobs cards."""
    out = {}
    pattern = (r'<li class="running-job card" data-job="([^"]+)" data-sent="(\d+)" '
               r'data-failed="(\d+)" data-pending="(\d+)" data-total="(\d+)"')  # fmt: skip
    for job, s, f, p, t in re.findall(pattern, html):
        out[job] = {"sent": int(s), "failed": int(f), "pending": int(p), "total": int(t)}
    return out


def send(job_id, userids, at, status="sent", error=None):
    Recipient.update(status=status, timesent=at if status == "sent" else None,
                     updated_at=at, last_error=error).where(
        Recipient.job == job_id, Recipient.userid.in_(list(userids))
    ).execute()  # fmt: skip


@pytest.fixture
def ledger(api, clock):
    """Company 4: a running job of 100 (30 sent, 5 failed in the last minutes) and a
    finished one with failures; company 5: a running job and failures of its own."""
    start = clock()
    running4 = make_job(clock, 100, company=4)
    clock.advance(1)
    finished4 = make_job(clock, 6, company=4, sent=(1, 2, 3), failed=(4, 5, 6))
    clock.advance(1)
    running5 = make_job(clock, 40, company=5, type="send_reminder")
    clock.advance(600)
    now = clock()
    send(running4, range(1, 31), now - timedelta(minutes=2))
    send(running4, range(31, 36), now - timedelta(minutes=1), "failed", "smtp 550 mailbox full")
    send(running5, range(1, 11), now - timedelta(minutes=1))
    send(running5, range(11, 21), now - timedelta(minutes=1), "failed", "smtp 554 rejected")
    Recipient.update(last_error="smtp 550 mailbox full").where(
        Recipient.job == finished4, Recipient.userid == 4
    ).execute()
    return {"running4": running4, "finished4": finished4, "running5": running5, "start": start}


def test_admin_sees_every_running_job_with_its_bar_rate_and_time_left(api, ledger):
    html = page(api.session("alice"))
    cards = running_cards(html)
    assert cards == {
        ledger["running5"]: {"sent": 10, "failed": 10, "pending": 20, "total": 40},
        ledger["running4"]: {"sent": 30, "failed": 5, "pending": 65, "total": 100},
    }
    block = section(html, "running")
    assert list(cards) == re.findall(r'data-job="([^"]+)"', block)  # newest first
    assert f'href="/jobs/{ledger["running4"]}"' in block
    # 35 settled in the last 5 minutes: 7/min; 65 left: about 9 min
    card4 = block[block.index(ledger["running4"]) :]
    assert '<span class="rate">7.0/min</span>' in card4
    assert '<span class="left">about 9 min</span>' in card4
    assert 'style="width:30.0%"' in card4 and 'style="width:5.0%"' in card4
    assert 'aria-valuenow="35"' in card4 and 'aria-valuemax="100"' in card4
    assert '30 sent</span> · <span class="n-failed">5 failed</span>' in card4


def test_admin_sees_recent_jobs_failures_and_the_weeks_chart(api, ledger):
    html = page(api.session("alice"))
    recent = section(html, "recent")
    assert re.findall(r'<tr data-job="([^"]+)"', recent) == [
        ledger["running5"], ledger["finished4"], ledger["running4"]
    ]  # fmt: skip
    assert "3 sent, 3 failed of 6" in recent and "partial_failure" in recent
    failures = section(html, "failures")
    assert 'data-failures="18"' in failures and "in 3 jobs" in failures
    rows = re.findall(r'<td class="error-text">([^<]+)</td><td class="num">(\d+)</td>', failures)
    assert rows == [("smtp 554 rejected", "10"), ("smtp 550 mailbox full", "6"),
                    ("smtp 550", "2")]  # fmt: skip
    chart = section(html, "chart")
    assert "<svg" in chart and "40 sent, 18 failed." in chart
    assert 'aria-label="Mail per hour over the last 7 days' in chart


def test_company_manager_sees_only_their_companys_jobs_failures_and_mail(api, ledger):
    html = page(api.session("carla", companies=[4]))
    assert set(running_cards(html)) == {ledger["running4"]}
    assert ledger["running5"] not in html
    recent = section(html, "recent")
    assert re.findall(r'<tr data-job="([^"]+)"', recent) == [ledger["finished4"],
                                                             ledger["running4"]]  # fmt: skip
    failures = section(html, "failures")
    assert 'data-failures="8"' in failures and "smtp 554" not in failures
    assert "30 sent, 8 failed." in section(html, "chart")
    assert "your companies only" in html
    other = page(api.session("dora", companies=[99]))
    assert running_cards(other) == {} and "No job is running." in other
    assert "No job yet." in other and "No recipient failed in the last 24 hours." in other


def parts_of(html: str) -> list[tuple[str, str, str]]:
    """(name, state, summary) of each moving part listed."""
    pattern = (r'<li class="part state-(\w+)" data-part="([^"]+)">.*?'
               r'<span class="summary">([^<]*)</span>')  # fmt: skip
    return [(n, s, text) for s, n, text in re.findall(pattern, section(html, "parts"), re.S)]


def test_each_moving_part_is_listed_with_its_state(api, ledger):
    parts = parts_of(page(api.session("alice")))
    assert [(n, s) for n, s, _ in parts] == [
        ("database", "ok"), ("moodle", "off"), ("smtp", "fail"), ("stuck jobs", "ok")
    ]  # fmt: skip
    assert "127.0.0.1:25" in parts[2][2]  # the SMTP server it could not reach


def test_stuck_jobs_are_counted_within_the_viewers_companies(api, ledger, clock):
    clock.advance(api.dashboard.config.dashboard.stuck_after + 60)
    stuck = {name: [(s, text) for n, s, text in parts_of(page(api.session(name, companies=c)))
                    if n == "stuck jobs"][0]
             for name, c in (("alice", ()), ("carla", (4,)), ("dora", (99,)))}  # fmt: skip
    assert stuck["alice"][0] == "warn" and stuck["alice"][1].startswith("2 jobs without progress")
    assert stuck["carla"][0] == "warn" and stuck["carla"][1].startswith("1 job without progress")
    assert ledger["running4"] in stuck["carla"][1] and ledger["running5"] not in stuck["carla"][1]
    assert stuck["dora"][0] == "ok" and stuck["dora"][1].startswith("none")


def test_the_fragment_is_the_running_block_alone_and_the_page_refreshes_it(api, ledger):
    caller = api.session("alice")
    html = page(caller)
    assert re.search(r'<div id="running" data-refresh="/fragments/running" data-every="\d+">',
                     html)  # fmt: skip
    fragment = page(caller, "/fragments/running")
    assert "<html" not in fragment and "<nav" not in fragment and "Moving parts" not in fragment
    assert running_cards(fragment) == running_cards(html)
    manager = page(api.session("carla", companies=[4]), "/fragments/running")
    assert set(running_cards(manager)) == {ledger["running4"]}


def test_signed_out_visitors_are_sent_to_sign_in(api, ledger):
    for path in ("/", "/fragments/running"):
        resp = requests.get(f"{api.url}{path}", allow_redirects=False, timeout=10)
        assert resp.status_code == 303 and resp.headers["Location"].endswith("/login")
        assert ledger["running4"] not in resp.text


def test_the_running_block_is_kept_briefly_then_shows_new_progress(api, ledger, clock,
                                                                    monkeypatch):  # fmt: skip
    monkeypatch.setitem(overview.TTL, "running", 0.5)
    caller = api.session("alice")
    before = running_cards(page(caller, "/fragments/running"))[ledger["running4"]]
    send(ledger["running4"], range(36, 46), clock())
    kept = running_cards(page(caller, "/fragments/running"))[ledger["running4"]]
    assert kept == before  # within the TTL: the same answer, no query
    time.sleep(0.6)
    after = running_cards(page(caller, "/fragments/running"))[ledger["running4"]]
    assert after["sent"] == before["sent"] + 10 and after["pending"] == before["pending"] - 10


def test_a_finished_job_leaves_the_running_block(api, clock):
    job = make_job(clock, 3, company=4, sent=(1, 2, 3))
    html = page(api.session("alice"))
    assert running_cards(html) == {} and "No job is running." in section(html, "running")
    assert job in section(html, "recent") and "completed" in section(html, "recent")


def test_errors_alike_but_for_the_address_count_as_one(api, clock):
    job = make_job(clock, 5, company=4)
    for userid in (1, 2, 3):
        error = f"550 5.1.1 <user{userid}@example.org>: Recipient address rejected"
        send(job, [userid], clock(), "failed", error)
    send(job, [4], clock(), "failed", "552 5.2.2 user4@example.org mailbox full")
    failures = section(page(api.session("alice")), "failures")
    rows = re.findall(r'<td class="error-text">([^<]+)</td><td class="num">(\d+)</td>', failures)
    assert rows == [
        ("550 5.1.1 &lt;address&gt;: Recipient address rejected", "3"),
        ("552 5.2.2 &lt;address&gt; mailbox full", "1"),
    ]
    assert "user1@example.org" not in failures
