"""The schedules and certificates pages in headless Chromium (tests/browser.py), signed in
with a session, against the Moodle sandbox over HTTP: dry-run a schedule and read its
preview and sample email, "run now" with the confirmation accepted and dismissed, find a
certificate by learner and revoke it; on a phone without horizontal scroll, and with the
keyboard alone. SQLite only: the pages' queries run on every backend in
test_pages_schedules.py and test_pages_certificates.py."""

from datetime import timedelta

import pytest
from playwright.sync_api import expect

from sidecar import certificates
from sidecar.db.models import Certificate, Job, ScheduleRun
from sidecar.runs import Runner
from sidecar.schedulelist import find_schedule
from sidecar.scheduleview import _schedule
from sidecar.web.dashboard import COOKIE
from tests.browser import PHONE, horizontal_overflow, tab_to
from tests.sidecar.api_helpers import audit_events, make_job
from tests.sidecar.test_api_schedules import site  # noqa: F401 - the sandbox fixture
from tests.sidecar.test_pages_schedules import START, make_served

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def served(serve_app, db_url, tmp_path, site):  # noqa: F811
    api = make_served(serve_app, db_url, tmp_path, site)
    yield api
    api.runtime.close()


def sign_in(page, served, name="alice", **kw):
    """Give the page's browser context a signed-in session of `name`."""
    from sidecar.access import Principal

    principal = Principal(name=name, kind="session", is_admin=True, companies=(),
                          read_only=False, source="local", **kw)  # fmt: skip
    made = served.dashboard.sessions.create(principal, "127.0.0.1")
    page.context.add_cookies([{"name": COOKIE, "value": made.cookie, "url": served.url,
                               "httpOnly": True, "sameSite": "Strict"}])  # fmt: skip
    return page


def issue(served, tmp_path) -> dict[int, str]:
    """Certificates for learners 1-3 of a job of course 10, with their PDFs: {userid: code}."""
    job = make_job(served.clock, 3, company=served.companies[0], course=10)
    (tmp_path / "certs" / job).mkdir(parents=True)
    codes = {}
    for uid in (1, 2, 3):
        codes[uid] = certificates.reserve(job, uid, 10, "local", served.clock()).code
        (tmp_path / "certs" / job / f"{uid}.pdf").write_bytes(b"%PDF-1.4 test")
    return codes


def test_dry_run_a_schedule_and_read_its_preview_and_sample(served, page, tmp_path):
    sign_in(page, served)
    page.goto(f"{served.url}/schedules")
    assert page.get_by_role("heading", level=1).inner_text() == "Schedules"
    next_due = page.locator("table.schedules tbody tr").first.locator("td.due")
    assert next_due.inner_text() == "2026-12-02 09:00 EET"
    page.get_by_role("link", name="Daily reminder").click()
    page.get_by_role("link", name="Dry run").click()
    page.wait_for_url("**/schedules/1/dry-run?source=moodle")
    expected = Runner(served.runtime).prepare(_schedule(find_schedule(1)), served.clock())
    assert page.locator("dd.recipients").inner_text() == str(expected.recipients)
    assert page.locator("dd.route").inner_text().startswith("local (")
    assert page.locator(".subject").inner_text() == expected.sample.subject
    frame = page.frame_locator("iframe.sample")
    first_line = expected.sample.text.strip().splitlines()[0].strip()
    assert first_line in frame.locator("body").inner_text()
    assert page.locator("iframe.sample").get_attribute("sandbox") == ""  # no script, no origin
    summary = page.locator("summary", has_text="Plain text")
    # scrolled first: Chromium drops a click that scrolls past the sandboxed frame
    summary.scroll_into_view_if_needed()
    summary.click()
    expect(page.locator("pre.sample-text")).to_be_visible()
    page.screenshot(path=tmp_path / "dry-run.png", full_page=True)
    assert ScheduleRun.select().count() == 0 and Job.select().count() == 0


def test_run_now_asks_first_and_queues_nothing_when_dismissed(served, page):
    sign_in(page, served)
    page.goto(f"{served.url}/schedules/1?source=moodle")
    asked = []

    def dismiss(dialog):
        asked.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    page.get_by_role("button", name="Run now").click()
    assert asked == [
        'Run "Daily reminder" now? Its emails are queued at once and cannot be called back.'
    ]
    page.wait_for_timeout(300)  # a submitted form would have navigated by now
    assert page.url.endswith("/schedules/1?source=moodle")
    assert ScheduleRun.select().count() == 0 and Job.select().count() == 0

    page.remove_listener("dialog", dismiss)
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.get_by_role("button", name="Run now").click()
    [run] = ScheduleRun.select()
    [job] = Job.select()
    notice = page.get_by_role("status")
    assert f"run {run.id} at 2026-12-01 10:00 EET is done" in notice.inner_text()
    assert f"Queued 1 job: {job.id[:8]}." in notice.inner_text()
    [(_, detail)] = audit_events("schedule_run_now")
    assert '"name": "alice"' in detail
    assert page.locator("table.runs > tbody > tr").count() == 1


def test_find_a_certificate_by_learner_and_revoke_it(served, page, tmp_path):
    codes = issue(served, tmp_path)
    sign_in(page, served)
    page.goto(f"{served.url}/certificates")
    assert page.locator("table.per-course tbody tr").inner_text().split() == [
        "course", "10", "3", "0", "3",
    ]  # fmt: skip
    page.get_by_label("Learner (name, email or user id)").fill("first2 LAST2")
    page.get_by_role("button", name="Find").click()
    page.wait_for_url("**/certificates?learner=first2+LAST2**")
    found = page.locator("li.cert")
    assert found.count() == 1 and found.locator(".code").inner_text() == codes[2]
    assert found.locator(".learner").inner_text() == "First2 Last2"
    download = found.get_by_role("link", name="Download")
    assert download.get_attribute("href") == f"/certificates/{codes[2]}"

    found.get_by_label("Reason for revoking").fill("name misspelt")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        found.get_by_role("button", name=f"Revoke {codes[2]}").click()
    assert f"Certificate {codes[2]} is revoked" in page.get_by_role("status").inner_text()
    assert page.locator("li.cert .badge").inner_text() == "revoked"
    assert page.get_by_role("link", name="Download").count() == 0
    page.get_by_role("link", name="verification page").click()
    assert page.get_by_role("heading", level=1).inner_text() == f"Certificate {codes[2]}: revoked"
    assert Certificate.get_by_id(codes[2]).revoked_at is not None
    assert Certificate.get_by_id(codes[1]).revoked_at is None


def test_the_pages_fit_a_phone(served, open_page, tmp_path):
    issue(served, tmp_path)
    served.runtime.clock.now = START - timedelta(days=1)
    Runner(served.runtime).fire_now(find_schedule(1))  # a run with its counts to show
    served.runtime.clock.now = START
    phone = sign_in(open_page(*PHONE, mobile=True), served)
    for path in ("/schedules", "/schedules/1", "/schedules/1/dry-run", "/certificates"):
        phone.goto(served.url + path)
        assert phone.evaluate("window.innerWidth") == PHONE[0]
        assert horizontal_overflow(phone) == 0, path
        phone.screenshot(path=tmp_path / f"phone{path.replace('/', '-')}.png", full_page=True)
        if path == "/schedules":  # each schedule reads top to bottom: nothing off to the side
            due = phone.locator("table.schedules tbody tr").first.locator("td.due")
            box = due.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE[0]
            assert due.inner_text() == "2026-12-02 09:00 EET"


def test_the_keyboard_reaches_dry_run_run_now_and_revoke(served, page, tmp_path):
    codes = issue(served, tmp_path)
    sign_in(page, served)
    page.goto(f"{served.url}/schedules/1?source=moodle")
    tab_to(page, page.get_by_role("link", name="Dry run"))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.get_by_role("heading", level=1).inner_text() == "Dry run: Daily reminder"

    page.goto(f"{served.url}/schedules/1?source=moodle")
    tab_to(page, page.get_by_role("button", name="Run now"))
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "Queued 1 job" in page.get_by_role("status").inner_text()

    page.goto(f"{served.url}/certificates?code={codes[3]}")
    reason = page.get_by_label("Reason for revoking")
    tab_to(page, reason, max_tabs=40)
    page.keyboard.type("left the course")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == f"Revoke {codes[3]}"
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert f"Certificate {codes[3]} is revoked" in page.get_by_role("status").inner_text()
    [(_, detail)] = audit_events("certificate_revoked")
    assert '"reason": "left the course"' in detail
