"""The jobs pages in headless Chromium (tests/browser.py), as an administrator uses them:
a job's progress bar moving while the daemon delivers to a real SMTP sink (aiosmtpd on
127.0.0.1) and its refreshing stopping once the job is done, retrying a failed recipient
and cancelling a job through the confirmation dialog, the CSV download, the recipients
table searched, filtered and paged, a phone's width and the keyboard alone. SQLite only:
the pages' queries run on every backend in test_pages_jobs.py."""

import csv
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from cryptography.fernet import Fernet
from PIL import Image

from sidecar import access
from sidecar.config import load
from sidecar.daemon import Daemon
from sidecar.db.models import Job, Recipient
from sidecar.web.dashboard import COOKIE
from tests.browser import PHONE, horizontal_overflow, tab_to
from tests.e2e.conftest import free_port
from tests.sidecar.api_helpers import make_job, serve_api, statuses

from .test_delivery import ScriptedHandler, person, queue_job

KEY = Fernet.generate_key().decode()
PASSWORD = "correct horse battery"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@pytest.fixture
def sink():
    """`sink(script)`: an SMTP server on 127.0.0.1 answering each address by `script`
    ({address: ['550 ...', '250']}, one answer per attempt); its handler records mail."""
    started = []

    def start(script=None) -> ScriptedHandler:
        handler = ScriptedHandler(script)
        controller = Controller(handler, hostname="127.0.0.1", port=free_port())
        controller.start()
        started.append(controller)
        handler.port = controller.port
        return handler

    yield start
    for c in started:
        c.stop()


@pytest.fixture
def daemon(tmp_path):
    """`daemon(smtp_port, rate, extra)`: the daemon (dashboard on, delivery loop, HTTP
    server) on a fresh SQLite ledger, delivering by SMTP to 127.0.0.1:smtp_port at `rate` a
    second, with a local account `ops`; `extra` is more of its config (e.g. `[moodle]`)."""
    started = []

    def start(smtp_port: int, rate: float = 0.0, extra: str = "") -> Daemon:
        path = tmp_path / "offload.toml"
        path.write_text(
            f'[database]\nurl = "sqlite:///{tmp_path}/ledger.db"\n'
            f'[server]\nlisten = "127.0.0.1:{free_port()}"\n'
            f'public_url = "http://127.0.0.1"\n'
            f'[security]\nencryption_key = "{KEY}"\n[dashboard]\nenabled = true\n'
            f'[providers.local]\nfrom = "noreply@academy.example"\nsmtp_host = "127.0.0.1"\n'
            f'smtp_port = {smtp_port}\nsmtp_security = "none"\nrate_per_second = {rate}\n'
            f'certificate_dir = "{tmp_path}/certs"\n' + extra
        )
        d = Daemon(load(path), path, poll_interval=0.2)
        d.start(schedules=False)
        started.append(d)
        access.add_account("ops", PASSWORD, utcnow())
        return d

    yield start
    for d in started:
        d.shutdown()


def sign_in(page, url: str) -> None:
    page.goto(f"{url}/login")
    page.get_by_label("Username").fill("ops")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")


def wait_for(predicate, seconds: float = 20.0, what: str = "the condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"waited {seconds}s for {what}")


def job_status(job_id: str) -> str:
    return Job.get_by_id(job_id).status


def bar_value(page) -> int:
    return int(page.locator(".live .bar").get_attribute("aria-valuenow"))


# --- with the daemon delivering ----------------------------------------------------------


def test_the_progress_bar_moves_while_the_daemon_delivers_and_stops_when_done(
    daemon, sink, page, tmp_path
):
    server = sink()
    d = daemon(server.port, rate=5.0)  # 40 messages: about 8 seconds
    sign_in(page, d.http.url)
    job_id = queue_job(utcnow, [person(i) for i in range(1, 41)])
    page.goto(f"{d.http.url}/jobs/{job_id}")
    live = page.locator(".live")
    assert live.get_attribute("data-refresh") == f"/jobs/{job_id}/progress"
    progress_requests = []
    page.on("request", lambda r: r.url.endswith("/progress") and progress_requests.append(r.url))

    seen = [bar_value(page)]
    assert seen[0] < 40
    while page.locator("[data-final]").count() == 0:
        assert len(seen) < 400, "the job never finished on the page"
        page.wait_for_timeout(100)
        value = bar_value(page)
        if value != seen[-1]:
            seen.append(value)
    # The final fragment can replace the live one between a reading and the loop's check:
    # read the bar once more from the finished page.
    if bar_value(page) != seen[-1]:
        seen.append(bar_value(page))
    assert seen == sorted(seen) and seen[-1] == 40
    assert any(0 < v < 40 for v in seen), f"no step between start and end: {seen}"
    assert "40 of 40 done: 40 sent, 0 failed" in live.inner_text()
    assert "The job is finished" in live.inner_text()
    assert live.get_by_role("link", name="Reload the page").get_attribute("href") == (
        f"/jobs/{job_id}"
    )
    assert len(server.accepted) == 40 and job_status(job_id) == "completed"

    asked = len(progress_requests)
    assert asked >= 2  # it did refresh while the job ran
    assert live.get_attribute("data-refresh") is None
    page.wait_for_timeout(7000)  # more than two refresh periods
    assert len(progress_requests) == asked  # and stopped asking once it was done
    page.screenshot(path=tmp_path / "job-done.png", full_page=True)


def test_retry_a_failed_recipient_from_the_page_after_confirming(daemon, sink, page):
    server = sink({"learner2@example.org": ["550 5.1.1 mailbox unavailable", "250"]})
    d = daemon(server.port)
    sign_in(page, d.http.url)
    job_id = queue_job(utcnow, [person(1), person(2), person(3)])
    wait_for(lambda: job_status(job_id) == "partial_failure", what="the first round")
    page.goto(f"{d.http.url}/jobs/{job_id}?status=failed")
    row = page.locator("table.recipients tbody tr")
    assert row.count() == 1 and "550 5.1.1 mailbox unavailable" in row.inner_text()

    questions = []

    def dismiss(dialog):
        questions.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.get_by_role("button", name="Retry 1 failed").click()
    page.wait_for_timeout(300)
    assert questions == ["Send again to the 1 failed recipients of this job?"]
    assert statuses(job_id)[2] == "failed"  # dismissed: nothing asked of the server

    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.get_by_role("button", name="Retry 1 failed").click()
    assert page.get_by_role("status").inner_text() == (
        "Retry asked: 1 recipient re-queued; they will be sent again."
    )
    wait_for(lambda: statuses(job_id)[2] == "sent", what="the retried recipient to be sent")
    assert [m["To"] for m in server.accepted].count("learner2@example.org") == 1
    page.reload()
    assert "job_retry" in page.locator("ol.history").inner_text()
    assert "name ops" in page.locator("ol.history").inner_text()


def test_cancel_a_running_job_from_the_page(daemon, sink, page):
    server = sink()
    d = daemon(server.port, rate=2.0)
    sign_in(page, d.http.url)
    job_id = queue_job(utcnow, [person(i) for i in range(1, 61)])
    page.goto(f"{d.http.url}/jobs/{job_id}")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.get_by_role("button", name="Cancel job").click()
    notice = page.get_by_role("status").inner_text()
    n = int(re.fullmatch(r"Job cancelled: (\d+) recipients will not be sent\.", notice).group(1))
    assert n > 40
    assert job_status(job_id) == "cancelled"
    assert page.locator(".live").get_attribute("data-refresh") is None
    assert page.get_by_role("button", name="Cancel job").count() == 0
    # the batch in flight looks at the job within a second and stops: what was not sent
    # by then never is
    page.wait_for_timeout(1500)
    settled = len(server.accepted)
    page.wait_for_timeout(2000)
    assert len(server.accepted) == settled <= 60 - n + 3
    counts = list(statuses(job_id).values())
    assert counts.count("sent") == settled and counts.count("cancelled") == 60 - settled


# --- the pages alone (no delivery) ---------------------------------------------------------


@pytest.fixture
def site(serve_app, tmp_path):
    """The dashboard over a fresh SQLite ledger, no delivery loop; `site.open(page)` signs
    the page in (a session cookie, as after the form)."""
    from sidecar.db import migrations
    from sidecar.db.connect import open_database
    from tests.conftest import Clock
    from tests.sidecar.test_dashboard_signin import make_config

    db = open_database(f"sqlite:///{tmp_path}/ledger.db")
    migrations.upgrade(db)
    clock = Clock(utcnow().replace(microsecond=0))
    api = serve_api(serve_app, clock, make_config())

    class Site:
        url = api.url

        def __init__(self):
            self.clock = clock

        def open(self, page, *, read_only=False):
            from sidecar.access import Principal

            principal = Principal(name="ops", kind="session", is_admin=True, companies=(),
                                  read_only=read_only, source="local")  # fmt: skip
            made = api.dashboard.sessions.create(principal, "127.0.0.1")
            page.context.add_cookies([{"name": COOKIE, "value": made.cookie, "url": api.url}])
            return page

    yield Site()
    db.close()


def test_export_downloads_the_csv_of_every_recipient(site, page, tmp_path):
    job_id = make_job(site.clock, 3, failed=(2,), sent=(1, 3))
    site.open(page).goto(f"{site.url}/jobs/{job_id}")
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    download = info.value
    assert download.suggested_filename == f"job-{job_id}.csv"
    path = tmp_path / "export.csv"
    download.save_as(path)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["userid"], r["status"], r["last_error"]) for r in rows] == [
        ("1", "sent", ""), ("2", "failed", "smtp 550"), ("3", "sent", "")]  # fmt: skip


def test_the_recipients_table_is_searched_filtered_and_paged(site, page):
    job_id = make_job(site.clock, 120, failed=range(5, 121, 5), sent=range(1, 5))
    site.open(page).goto(f"{site.url}/jobs/{job_id}")
    users = page.locator("table.recipients tbody td[data-label=User]")
    assert users.all_inner_texts() == [str(i) for i in range(1, 51)]
    page.get_by_role("link", name="Next 50").click()
    assert users.all_inner_texts() == [str(i) for i in range(51, 101)]
    page.get_by_role("link", name="Next 50").click()
    assert users.all_inner_texts() == [str(i) for i in range(101, 121)]
    assert page.get_by_role("link", name="Next 50").count() == 0
    page.get_by_role("link", name="First page").click()
    assert users.first.inner_text() == "1"

    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Find").click()
    assert users.all_inner_texts() == [str(i) for i in range(5, 121, 5)]
    page.get_by_label("Name or email").fill("LAST11")
    page.get_by_role("button", name="Find").click()
    assert users.all_inner_texts() == ["110", "115"]  # Last110, Last115
    row = page.locator("table.recipients tbody tr").first
    row.get_by_text("History").click()  # the row's history opens in place
    assert "0 attempts; last change" in row.inner_text()
    page.get_by_role("link", name="Show all").click()
    assert users.count() == 50


def test_the_list_filters_and_pages_in_the_browser(site, page):
    for i in range(30):
        make_job(site.clock, 2, course=7 if i % 2 else 8, sent=(1, 2) if i < 3 else ())
        site.clock.advance(1)
    site.open(page).goto(f"{site.url}/jobs")
    rows = page.locator("table.jobs tbody tr")
    assert rows.count() == 25
    page.get_by_role("link", name="Next page").click()
    assert rows.count() == 5
    page.goto(f"{site.url}/jobs")
    page.get_by_label("Course id").fill("7")
    page.get_by_label("Status").select_option("running")
    page.get_by_role("button", name="Filter").click()
    assert rows.count() == 14  # 15 jobs of course 7, one of them finished
    assert page.get_by_label("Course id").input_value() == "7"
    bar = rows.first.locator(".bar")
    assert bar.get_attribute("aria-valuenow") == "0" and bar.get_attribute("aria-valuemax") == "2"


@pytest.mark.parametrize("path", ["/jobs", "/jobs/{job_id}", "/jobs/{job_id}?status=failed"])
def test_the_jobs_pages_fit_a_phone_without_horizontal_scroll(site, open_page, path):
    job_id = make_job(site.clock, 60, course=123456, company=4, failed=(3, 9), sent=(1,))
    Recipient.update(
        last_error="smtp 550 5.1.1 <a-very-long-address-of-a-learner@an-academy.example.org>: "
        "Recipient address rejected: User unknown in virtual mailbox table"
    ).where(Recipient.job == job_id, Recipient.userid == 3).execute()
    phone = site.open(open_page(*PHONE, mobile=True))
    phone.goto(site.url + path.format(job_id=job_id))
    assert phone.evaluate("window.innerWidth") == PHONE[0]
    assert horizontal_overflow(phone) == 0


def test_an_erased_job_says_so_on_a_phone_and_offers_no_retry(site, open_page, tmp_path):
    from sidecar import privacy

    job_id = make_job(site.clock, 6, course=12, failed=(2,), sent=(1, 3, 4, 5, 6))
    site.clock.advance(200 * 86400)
    privacy.run_retention(recipient_days=180, certificate_days=None, certificate_dir=tmp_path,
                          stores={}, now=site.clock(), perf=lambda: 0.0)  # fmt: skip
    phone = site.open(open_page(*PHONE, mobile=True))
    phone.goto(f"{site.url}/jobs/{job_id}")
    notice = phone.get_by_role("region", name="Personal data erased")
    assert notice.is_visible()
    assert f"Personal data erased on {site.clock():%Y-%m-%d}" in notice.inner_text()
    assert "addresses, names, variables and addresses in errors" in notice.inner_text()
    assert phone.get_by_role("button", name=re.compile("Retry")).count() == 0
    assert horizontal_overflow(phone) == 0


def test_the_jobs_pages_work_from_the_keyboard(site, page):
    job_id = make_job(site.clock, 4, course=9, failed=(2,), sent=(1, 3, 4))
    make_job(site.clock, 2, course=10)
    site.open(page).goto(f"{site.url}/jobs")
    course = page.get_by_label("Course id")
    tab_to(page, course)
    page.keyboard.type("9")
    with page.expect_navigation():
        page.keyboard.press("Enter")  # submits the filter form
    links = page.locator("table.jobs tbody th a")
    assert links.all_inner_texts() == [job_id[:8]]
    tab_to(page, links.first, max_tabs=40)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == f"{site.url}/jobs/{job_id}"

    retry = page.get_by_role("button", name="Retry 1 failed")
    tab_to(page, retry, max_tabs=30)
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "1 recipient re-queued" in page.get_by_role("status").inner_text()
    assert statuses(job_id)[2] == "retry_pending"


def test_a_read_only_viewer_sees_no_action_buttons(site, page):
    job_id = make_job(site.clock, 2, failed=(2,))
    site.open(page, read_only=True).goto(f"{site.url}/jobs/{job_id}")
    assert page.get_by_role("button", name=re.compile("Retry|Cancel")).count() == 0
    assert page.get_by_role("link", name="Export CSV").is_visible()


def test_the_screenshot_script_draws_the_job_page(tmp_path, browser):
    """scripts/job_page_screenshot.py (docs/job-page.png) still runs against the page."""
    out = tmp_path / "job-page.png"
    script = Path(__file__).resolve().parents[2] / "scripts" / "job_page_screenshot.py"
    done = subprocess.run([sys.executable, str(script), "--out", str(out)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    width, height = Image.open(out).size
    assert width == 1280 and height > 1200  # the whole page, failed recipients included
