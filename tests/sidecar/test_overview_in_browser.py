"""The overview in headless Chromium (tests/browser.py), served by the daemon itself: sign in
through /login against the Moodle sandbox as a site administrator, as an IOMAD company
manager and with a wrong password; watch a job's bar move while the daemon delivers to a
real SMTP server (aiosmtpd on 127.0.0.1), without reloading; a phone; the keyboard.
SQLite only: the page's queries run on every backend in test_overview.py."""

import re
import threading
import time

import pytest
from aiosmtpd.controller import Controller
from cryptography.fernet import Fernet

from sidecar import jobs
from sidecar.config import load
from sidecar.daemon import Daemon
from sidecar.web.dashboard import COOKIE
from tests.browser import PHONE, horizontal_overflow, tab_to
from tests.e2e.conftest import free_port
from tests.moodle_ws.test_sandbox import make_moodle

from .test_dashboard_signin import COMPANY_MANAGER, MOODLE_ADMIN

COURSE = {"fullname": "Safety 101", "shortname": "S101",
          "url": "https://moodle.example/course/view.php?id=5"}  # fmt: skip


class CountingHandler:
    """An SMTP sink that counts the messages it accepts."""

    def __init__(self):
        self.lock = threading.Lock()
        self.accepted = 0

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.accepted += len(envelope.rcpt_tos)
        return "250 OK"


@pytest.fixture(scope="module")
def moodle():
    m = make_moodle(learners=5)
    yield m
    m.server.stop()


@pytest.fixture
def smtp():
    handler = CountingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


@pytest.fixture
def daemon(tmp_path, moodle, smtp):
    """`daemon(rate=0)`: the daemon (HTTP server with the dashboard, delivery loop) on a
    fresh SQLite ledger, Moodle the sandbox, mail to the SMTP sink at `rate` per second."""
    started = []

    def start(rate: float = 0) -> Daemon:
        port = free_port()
        path = tmp_path / "offload.toml"
        path.write_text(
            f'[database]\nurl = "sqlite:///{tmp_path}/ledger.db"\n'
            f'[server]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n'
            f'[security]\nencryption_key = "{Fernet.generate_key().decode()}"\n'
            f'[moodle]\nurl = "{moodle.server.url}"\ntoken = "{moodle.site.token}"\n'
            f'[dashboard]\nenabled = true\ncompany_managers = ["companymanager"]\n'
            f'[providers.local]\nfrom = "noreply@academy.example"\nsmtp_host = "127.0.0.1"\n'
            f'smtp_port = {smtp.port}\nsmtp_security = "none"\nrate_per_second = {rate}\n'
            f'certificate_dir = "{tmp_path}/certs"\n'
        )
        d = Daemon(load(path), path, poll_interval=0.2)
        d.start(schedules=False)
        started.append(d)
        return d

    yield start
    for d in started:
        d.shutdown()


def queue(d: Daemon, n: int, company: int | None, batch_size: int = 5) -> str:
    """A reminder to `n` learners of `company`, queued for the daemon's delivery loop."""
    people = [jobs.RecipientIn(i, f"learner{i}@example.org", f"First{i}", f"Last{i}")
              for i in range(1, n + 1)]  # fmt: skip
    spec = jobs.JobSpec(type="send_reminder", template_id="reminder", source="test",
                        tenant_id=company, template_data={"course": COURSE})  # fmt: skip
    with d.runtime.db.connection_context():
        created = jobs.create_job(spec, people, batch_size=batch_size, now=d.runtime.clock())
        jobs.queue_local_batches(d.runtime.clock(), created.job_id)
    return created.job_id


def sign_in(page, url: str, username: str, password: str) -> None:
    page.goto(f"{url}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def wait_done(d: Daemon, smtp, expected: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while smtp.accepted < expected:
        assert time.monotonic() < deadline, f"{smtp.accepted} of {expected} delivered"
        time.sleep(0.1)


def recent_ids(page) -> list[str]:
    return page.locator("section.recent tr[data-job]").evaluate_all(
        "rows => rows.map(r => r.dataset.job)"
    )


def test_site_admin_signs_in_with_moodle_and_sees_every_companys_jobs(daemon, smtp, page):
    d = daemon()
    mine, theirs = queue(d, 2, company=4), queue(d, 3, company=5)
    wait_done(d, smtp, 5)
    sign_in(page, d.http.url, *MOODLE_ADMIN)
    page.wait_for_url(f"{d.http.url}/")
    assert page.get_by_role("heading", level=1).inner_text() == "Overview"
    assert "Signed in as admin" in page.locator("nav.top").inner_text()
    assert set(recent_ids(page)) == {mine, theirs}
    assert "5 sent, 0 failed." in page.locator("section.chart").inner_text()
    parts = page.locator("ul.parts li").evaluate_all(
        "items => items.map(i => [i.dataset.part, i.className])"
    )
    assert ["database", "part state-ok"] in parts and ["moodle", "part state-ok"] in parts
    assert ["smtp", "part state-ok"] in parts


def test_company_manager_sees_only_company_4(daemon, smtp, page):
    d = daemon()
    mine, theirs = queue(d, 2, company=4), queue(d, 3, company=5)
    wait_done(d, smtp, 5)
    sign_in(page, d.http.url, *COMPANY_MANAGER)
    page.wait_for_url(f"{d.http.url}/")
    nav = page.locator("nav.top").inner_text()
    assert "Signed in as companymanager (companies 4)" in nav
    assert recent_ids(page) == [mine]
    body = page.locator("main").inner_text()
    assert theirs not in page.content() and theirs[:8] not in body
    assert "2 sent, 0 failed." in page.locator("section.chart").inner_text()
    assert "your companies only" in body


def test_a_wrong_password_shows_the_error_and_opens_no_session(daemon, page):
    d = daemon()
    sign_in(page, d.http.url, MOODLE_ADMIN[0], "Admin-pass1?")
    alert = page.get_by_role("alert")
    assert alert.inner_text() == "Wrong username or password."
    assert page.url == f"{d.http.url}/login"
    assert page.get_by_label("Password").input_value() == ""
    assert COOKIE not in {c["name"] for c in page.context.cookies()}
    page.goto(f"{d.http.url}/")
    assert page.url == f"{d.http.url}/login"  # sent back to sign in


def test_a_running_jobs_bar_moves_while_the_daemon_delivers_without_a_reload(daemon, smtp, page):
    d = daemon(rate=4)  # 40 learners at 4 per second: about 10 seconds
    sign_in(page, d.http.url, *MOODLE_ADMIN)
    page.wait_for_url(f"{d.http.url}/")
    assert "No job is running." in page.locator("#running").inner_text()
    page.evaluate("window.loadedOnce = true")
    job = queue(d, 40, company=4)
    card = page.locator(f'#running li[data-job="{job}"]')
    card.wait_for()  # the new job appears without a reload

    def sent() -> int:
        return int(card.get_attribute("data-sent"))

    seen = [sent()]
    deadline = time.monotonic() + 40
    while seen[-1] < 40 and card.count() and time.monotonic() < deadline:
        page.wait_for_timeout(300)
        if card.count():
            now = card.get_attribute("data-sent")
            if now is not None and int(now) != seen[-1]:
                seen.append(int(now))
    moving = [n for n in seen if 0 < n < 40]
    assert len(moving) >= 2, f"the bar did not move in steps: {seen}"
    assert seen == sorted(seen)
    width = card.locator(".bar .sent").evaluate("el => el.style.width") if card.count() else ""
    assert width == "" or width.endswith("%")
    wait_done(d, smtp, 40)
    page.locator("#running .idle").wait_for(timeout=15_000)  # finished: it leaves the block
    assert page.evaluate("window.loadedOnce") is True  # the same page all along
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert page.locator("#running").get_attribute("data-refreshed")


def test_a_running_jobs_card_shows_its_rate_and_time_left(daemon, smtp, page):
    d = daemon(rate=2)
    job = queue(d, 30, company=4)
    sign_in(page, d.http.url, *MOODLE_ADMIN)
    page.wait_for_url(f"{d.http.url}/")
    card = page.locator(f'#running li[data-job="{job}"]')
    page.wait_for_function(
        f"""() => {{ const c = document.querySelector('#running li[data-job="{job}"]');
                     return c && +c.dataset.sent >= 4 && +c.dataset.sent < 30; }}"""
    )
    text = card.inner_text()
    assert re.search(r"Rate [\d.]+/min · time left about \d+ (s|min)", text), text
    assert re.search(r"\d+ sent · 0 failed · \d+ pending of 30", text), text
    link = card.get_by_role("link")
    assert link.get_attribute("href") == f"/jobs/{job}"


def test_the_overview_fits_a_phone_and_starts_with_the_skip_link(daemon, smtp, open_page):
    d = daemon(rate=1)
    queue(d, 20, company=4)
    phone = open_page(*PHONE, mobile=True)
    sign_in(phone, d.http.url, *MOODLE_ADMIN)
    phone.wait_for_url(f"{d.http.url}/")
    phone.locator("#running li[data-job]").wait_for()
    assert horizontal_overflow(phone) == 0
    skip = phone.get_by_role("link", name="Skip to content")
    assert tab_to(phone, skip) == 1  # the first tab stop
    phone.keyboard.press("Enter")
    assert phone.url.endswith("#main")
    first_job = phone.locator("#running li[data-job] a").first
    assert tab_to(phone, first_job) == 1  # from the main content, the running job is next


def test_an_open_overview_goes_to_sign_in_when_the_session_ends(daemon, page):
    from sidecar.db.models import WebSession

    d = daemon()
    sign_in(page, d.http.url, *MOODLE_ADMIN)
    page.wait_for_url(f"{d.http.url}/")
    with d.runtime.db.connection_context():
        assert WebSession.delete().execute() == 1  # signed out elsewhere, or timed out
    page.wait_for_url(f"{d.http.url}/login", timeout=10_000)  # the next refresh notices
    assert page.get_by_role("heading", level=1).inner_text() == "Sign in"
    assert page.locator("#running").count() == 0  # not the form inside the old page
