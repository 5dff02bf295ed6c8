"""The pages a learner opens, in headless Chromium (tests/browser.py): the certificate
verification page and the one-click unsubscribe page, as the daemon serves them; read on a
desktop and on a phone, and used with the keyboard. SQLite only: the pages' queries are
covered on every backend by test_delivery.py and test_unsubscribe.py."""

import re
from datetime import datetime

import pytest
import requests

from providers.local.maildir import MaildirSender
from sidecar import jobs
from sidecar.config import load
from sidecar.daemon import Daemon
from sidecar.db import migrations
from sidecar.db.connect import open_database
from sidecar.db.models import AuditLog, Certificate, OptOut
from tests.browser import PHONE, horizontal_overflow, tab_to
from tests.conftest import Clock
from tests.e2e.conftest import free_port

from .test_delivery import make_delivery, person, queue_job
from .test_unsubscribe import KEY, PUBLIC

LEARNERS = [person(1, "Łukasz", "Żółć"), person(2, "Ελένη", "Παπαδοπούλου")]


@pytest.fixture
def daemon(tmp_path):
    """`daemon()`: the daemon (HTTP server and delivery loop) on a fresh SQLite ledger."""
    started = []

    def start() -> Daemon:
        path = tmp_path / "offload.toml"
        path.write_text(
            f'[database]\nurl = "sqlite:///{tmp_path}/ledger.db"\n'
            f'[server]\nlisten = "127.0.0.1:{free_port()}"\npublic_url = "{PUBLIC}"\n'
            f'[security]\nencryption_key = "{KEY}"\n'
            f'[providers.local]\nfrom = "noreply@academy.example"\nmaildir = "{tmp_path}/mail"\n'
            f'certificate_dir = "{tmp_path}/certs"\n'
        )
        d = Daemon(load(path), path)
        d.start(schedules=False)
        started.append(d)
        return d

    yield start
    for d in started:
        d.shutdown()


def issue_certificates(tmp_path) -> list[Certificate]:
    """Deliver a certificate job to LEARNERS (course 5) and return their certificates."""
    db = open_database(f"sqlite:///{tmp_path}/ledger.db")
    migrations.upgrade(db)
    clock = Clock(datetime(2026, 11, 18, 12, 0))
    job_id = queue_job(
        clock, LEARNERS, courseid=5, actions=jobs.Actions(email=True, certificate=True)
    )
    make_delivery(clock, tmp_path, lambda: MaildirSender(tmp_path / "mail")).run_once()
    certs = Certificate.select().where(Certificate.job_id == job_id).order_by(Certificate.userid)
    return list(certs)


# --- /verify/{code} ------------------------------------------------------------------------


def test_verify_shows_the_learner_the_course_and_whether_the_certificate_holds(
    tmp_path, daemon, page
):
    first, second = issue_certificates(tmp_path)
    Certificate.update(revoked_at=datetime(2026, 11, 20)).where(
        Certificate.code == second.code
    ).execute()
    srv = daemon().http

    page.goto(f"{srv.url}/verify/{first.code.lower()}")  # typed from the paper, any case
    heading = page.get_by_role("heading", level=1)
    assert heading.inner_text() == f"Certificate {first.code}: valid"
    assert page.locator("body").inner_text().splitlines()[-1] == (
        "Issued to Łukasz Żółć on 2026-11-18 for Safety 101."
    )
    assert page.title() == "Certificate verification"
    page.screenshot(path=tmp_path / "verify-desktop.png")

    page.goto(f"{srv.url}/verify/{second.code}")
    assert heading.inner_text() == f"Certificate {second.code}: revoked"
    assert "Ελένη Παπαδοπούλου" in page.locator("body").inner_text()

    response = page.goto(f"{srv.url}/verify/NOSUCHCODE")
    assert response.status == 404
    assert heading.inner_text() == "Certificate not found"


def test_verify_fits_a_phone_without_horizontal_scroll(tmp_path, daemon, open_page):
    (cert, _) = issue_certificates(tmp_path)
    srv = daemon().http
    phone = open_page(*PHONE, mobile=True)
    phone.goto(f"{srv.url}/verify/{cert.code}")
    assert horizontal_overflow(phone) == 0
    phone.screenshot(path=tmp_path / "verify-phone.png")


def test_verify_is_laid_out_at_the_phones_width(tmp_path, daemon, open_page):
    (cert, _) = issue_certificates(tmp_path)
    srv = daemon().http
    phone = open_page(*PHONE, mobile=True)
    phone.goto(f"{srv.url}/verify/{cert.code}")
    assert phone.evaluate("window.innerWidth") == PHONE[0]


# --- /unsubscribe/{token} ------------------------------------------------------------------


def unsubscribe_url(srv, userid: int, kind: str) -> str:
    from sidecar import unsubscribe

    from .test_unsubscribe import config

    return f"{srv.url}/unsubscribe/{unsubscribe.links_for(config()).token(userid, kind)}"


def opt_outs() -> list[tuple[int, str, str]]:
    return [(o.userid, o.kind, o.source) for o in OptOut.select()]


def test_unsubscribe_page_records_the_opt_out_when_the_button_is_pressed(tmp_path, daemon, page):
    srv = daemon().http
    page.goto(unsubscribe_url(srv, 7, "reminders"))
    assert page.get_by_role("heading", level=1).inner_text() == "Unsubscribe"
    assert "Stop receiving course reminders?" in page.locator("body").inner_text()
    button = page.get_by_role("button", name="Unsubscribe")
    assert button.is_visible()
    page.screenshot(path=tmp_path / "unsubscribe-desktop.png")
    assert opt_outs() == []  # opening the page changes nothing

    button.click()
    page.wait_for_url(re.compile(r"/unsubscribe/"))
    assert page.get_by_role("heading", level=1).inner_text() == "You are unsubscribed"
    assert "You will receive no more course reminders." in page.locator("body").inner_text()
    page.screenshot(path=tmp_path / "unsubscribed-desktop.png")
    assert opt_outs() == [(7, "reminders", "page")]
    assert AuditLog.select().where(AuditLog.event == "unsubscribed").count() == 1


def test_unsubscribe_works_from_the_keyboard_on_a_phone(tmp_path, daemon, open_page):
    srv = daemon().http
    phone = open_page(*PHONE, mobile=True)
    phone.goto(unsubscribe_url(srv, 8, "custom"))
    assert phone.evaluate("window.innerWidth") == PHONE[0]  # laid out for the phone
    assert horizontal_overflow(phone) == 0
    phone.screenshot(path=tmp_path / "unsubscribe-phone.png")

    button = phone.get_by_role("button", name="Unsubscribe")
    assert tab_to(phone, button) == 1  # the first stop: nothing to tab past
    with phone.expect_navigation():
        phone.keyboard.press("Enter")
    assert phone.get_by_role("heading", level=1).inner_text() == "You are unsubscribed"
    assert horizontal_overflow(phone) == 0
    assert opt_outs() == [(8, "custom", "page")]


def test_a_forged_unsubscribe_link_shows_a_readable_error_and_changes_nothing(
    tmp_path, daemon, page
):
    srv = daemon().http
    response = page.goto(unsubscribe_url(srv, 9, "reminders")[:-3] + "AAA")
    assert response.status == 400
    assert page.get_by_role("heading", level=1).inner_text() == "This unsubscribe link is not valid"
    assert page.get_by_role("button").count() == 0
    assert opt_outs() == []
    assert requests.get(f"{srv.url}/healthz", timeout=10).status_code == 200
