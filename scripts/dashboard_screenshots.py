"""Screenshot the dashboard's overview over a demo ledger to docs/overview.png (in README).

Run it after changing the overview's templates or CSS:
    python scripts/dashboard_screenshots.py
It builds a week of made-up jobs for three IOMAD companies in a temporary SQLite ledger
(jobs running now, a few failures), serves the dashboard on 127.0.0.1 with the Moodle
sandbox (moodle_ws.sandbox) and an SMTP server (aiosmtpd) of its own so every moving part
has a state, signs an administrator in, and screenshots the page in headless Chromium
(Playwright with Debian's `chromium`, the test extras). Nothing leaves 127.0.0.1.
"""

import argparse
import random
import socket
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiosmtpd.controller import Controller  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site  # noqa: E402
from sidecar import jobs  # noqa: E402
from sidecar.access import Principal  # noqa: E402
from sidecar.config import Config  # noqa: E402
from sidecar.db import migrations, store  # noqa: E402
from sidecar.db.connect import open_database  # noqa: E402
from sidecar.db.models import Job, Recipient  # noqa: E402
from sidecar.web.app import make_app  # noqa: E402
from sidecar.web.dashboard import COOKIE, Dashboard  # noqa: E402
from sidecar.web.server import HttpServer  # noqa: E402
from tests.browser import find_chromium  # noqa: E402

NOW = datetime(2026, 11, 19, 14, 37, 12)  # a Thursday afternoon, UTC
TYPES = ("send_reminder", "send_welcome", "send_reengagement", "send_certificate", "send_csv")
ERRORS = (
    ("550 5.1.1 <{email}>: Recipient address rejected: User unknown", 9),
    ("552 5.2.2 <{email}>: Mailbox full", 4),
    ("554 5.7.1 Message rejected: spam content detected", 2),
    ("421 4.7.0 Try again later, closing connection", 1),
)


class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


def people(n: int, start: int) -> list[jobs.RecipientIn]:
    return [jobs.RecipientIn(i, f"learner{i}@academy.example", f"First{i}", f"Last{i}")
            for i in range(start, start + n)]  # fmt: skip


def job(rng, created: datetime, n: int, company: int, kind: str) -> str:
    spec = jobs.JobSpec(type=kind, template_id="custom", source=rng.choice(("schedule", "csv")),
                        tenant_id=company, courseid=rng.randint(2, 40))  # fmt: skip
    return jobs.create_job(spec, people(n, rng.randint(1, 9000)), batch_size=200,
                           now=created).job_id  # fmt: skip


def settle(rng, job_id: str, created: datetime, n: int, duration: float, fail_share: float):
    """Send the job's recipients evenly over `duration` seconds; a few fail."""
    rows = list(Recipient.select(Recipient.id, Recipient.email).where(Recipient.job == job_id))
    weights = [w for _, w in ERRORS]
    for i, r in enumerate(rows):
        at = created + timedelta(seconds=30 + duration * i / max(n, 1))
        if at > NOW:
            break
        if rng.random() < fail_share:
            error = rng.choices([e for e, _ in ERRORS], weights)[0].format(email=r.email)
            Recipient.update(status="failed", last_error=error, attempts=3, updated_at=at).where(
                Recipient.id == r.id
            ).execute()
        else:
            Recipient.update(status="sent", timesent=at, attempts=1, updated_at=at).where(
                Recipient.id == r.id
            ).execute()


def build(rng) -> None:
    """A week of jobs (more by day than by night), three companies, three running now."""
    at = NOW - timedelta(days=7)
    while at < NOW - timedelta(minutes=40):
        busy = 7 <= at.hour <= 18 and at.weekday() < 5
        at += timedelta(minutes=rng.randint(25, 70) if busy else rng.randint(90, 240))
        if at >= NOW - timedelta(minutes=40):
            break
        n = rng.choice((40, 80, 120, 250, 400))
        created = at.replace(second=rng.randint(0, 59))
        job_id = job(rng, created, n, rng.choice((4, 5, 6)), rng.choice(TYPES))
        settle(rng, job_id, created, n, n * 0.9, rng.choice((0, 0, 0.01, 0.03)))
        store.settle(job_id, created + timedelta(seconds=n))
    for minutes, n, company, kind in ((23, 1200, 4, "send_reminder"), (9, 600, 5, "send_welcome"),
                                      (2, 300, 6, "send_certificate")):  # fmt: skip
        created = NOW - timedelta(minutes=minutes)
        job_id = job(rng, created, n, company, kind)
        settle(rng, job_id, created, n, n * 1.6, 0.02)
        Job.update(status="processing", updated_at=NOW).where(Job.id == job_id).execute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "overview.png")
    parser.add_argument("--width", type=int, default=1280, help="CSS pixels (default 1280)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    if chromium is None:
        sys.exit("no Chromium: apt-get install chromium (or set MOODLE_OFFLOAD_CHROMIUM)")
    tmp = Path(tempfile.mkdtemp(prefix="dashboard-shots-"))
    db = open_database(f"sqlite:///{tmp}/ledger.db")
    migrations.upgrade(db)
    with db.atomic():
        build(random.Random(13))
    site = generate_site(SiteSpec(seed=7, learners=20))
    moodle = SandboxServer(site).start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    smtp = Controller(Sink(), hostname="127.0.0.1", port=port)
    smtp.start()
    config = Config.model_validate({
        "server": {"public_url": "http://127.0.0.1"},
        "security": {"encryption_key": Fernet.generate_key().decode()},
        "moodle": {"url": moodle.url, "token": site.token},
        "dashboard": {"enabled": True},
        "providers": {"local": {"smtp_host": "127.0.0.1", "smtp_port": smtp.port,
                                "smtp_security": "none"}},
    })  # fmt: skip
    dashboard = Dashboard(config, lambda: NOW)
    dashboard.health.parts(fresh=True)
    srv = HttpServer(make_app(handle_callback=lambda raw, sig: {}, health=lambda: (True, {}),
                              dashboard=dashboard), "127.0.0.1", 0)  # fmt: skip
    srv.start()
    admin = Principal("admin", "session", True, source="moodle")
    cookie = dashboard.sessions.create(admin, "127.0.0.1").cookie
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True)
            context = browser.new_context(viewport={"width": args.width, "height": 900},
                                          device_scale_factor=1, locale="en-GB")  # fmt: skip
            context.add_cookies([{"name": COOKIE, "value": cookie, "url": srv.url}])
            page = context.new_page()
            page.goto(f"{srv.url}/")
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        srv.stop()
        smtp.stop()
        moodle.stop()
        db.close()
    print(f"{args.out}: {args.width} CSS pixels wide")


if __name__ == "__main__":
    main()
