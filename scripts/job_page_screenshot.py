"""Draw docs/job-page.png (shown in docs/dashboard.md): the dashboard's page of a job under
way, its failed recipients listed, in headless Chromium at desktop width.

Run it after changing the job page (sidecar/web/templates/job*.html, static/app.css):
python scripts/job_page_screenshot.py [--out PATH]. It needs the test extras (Playwright
for Python) and a Chromium (Debian's `chromium`, or MOODLE_OFFLOAD_CHROMIUM). The ledger
is a temporary SQLite file with one sample job; the page is served by the product's own
app on 127.0.0.1 and nothing is fetched from anywhere else.
"""

import argparse
import os
import shutil
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography.fernet import Fernet  # noqa: E402

from sidecar import jobs  # noqa: E402
from sidecar.access import Principal  # noqa: E402
from sidecar.config import Config  # noqa: E402
from sidecar.db import migrations, store  # noqa: E402
from sidecar.db.connect import open_database  # noqa: E402
from sidecar.db.models import Recipient  # noqa: E402
from sidecar.web.app import make_app  # noqa: E402
from sidecar.web.dashboard import COOKIE, Dashboard  # noqa: E402
from sidecar.web.server import HttpServer  # noqa: E402

CREATED = datetime(2025, 11, 18, 9, 0, 0)
NOW = CREATED + timedelta(minutes=24)
FIRST = ("Aoife", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas")
LAST = ("Ní Bhriain", "Costa", "Rossi", "Ivanov", "Papadopoulou", "Haddad", "Okafor", "Tanaka")
ERRORS = (
    "SMTP 550 5.1.1 <{email}>: Recipient address rejected: User unknown",
    "SMTP 552 5.2.2 mailbox full",
    "SMTP 554 5.7.1 rejected by the recipient's spam policy",
)


def sample_job() -> str:
    """A reminder to 240 learners of course 12, company 4: 180 sent over twenty minutes,
    six failed, the rest still queued."""
    people = [
        jobs.RecipientIn(1000 + i, f"learner{1000 + i}@example.test",
                         FIRST[(i + i // 30) % len(FIRST)], LAST[i % len(LAST)])
        for i in range(240)
    ]  # fmt: skip
    course = {"fullname": "Fire Safety and Emergency Evacuation", "shortname": "FS101",
              "url": "https://moodle.example/course/view.php?id=12"}  # fmt: skip
    spec = jobs.JobSpec(type="send_reminder", template_id="reminder", source="schedule",
                        tenant_id=4, courseid=12, template_data={"course": course})  # fmt: skip
    job_id = jobs.create_job(spec, people, batch_size=100, now=CREATED).job_id
    jobs.queue_local_batches(CREATED, job_id)
    for i in range(180):
        at = CREATED + timedelta(seconds=20 + i * 6.5)
        failed = i % 30 == 7
        error = ERRORS[(i // 30) % len(ERRORS)].format(email=people[i].email) if failed else None
        Recipient.update(
            status="failed" if failed else "sent",
            timesent=None if failed else at,
            updated_at=at,
            attempts=1,
            last_error=error,
            external_id=None if failed else f"<{i}.{job_id[:8]}@offload.example>",
        ).where(Recipient.job == job_id, Recipient.userid == people[i].userid).execute()
    store.move_job(job_id, "processing", CREATED + timedelta(seconds=5))
    return job_id


def find_chromium() -> str:
    path = os.environ.get("MOODLE_OFFLOAD_CHROMIUM") or "/usr/lib/chromium/chromium"
    if os.access(path, os.X_OK):
        return path
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        sys.exit("no Chromium: apt-get install chromium (or set MOODLE_OFFLOAD_CHROMIUM)")
    return found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "job-page.png")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    db = open_database(f"sqlite:///{tempfile.mkdtemp(prefix='job-page-')}/ledger.db")
    migrations.upgrade(db)
    job_id = sample_job()
    config = Config.model_validate({
        "server": {"public_url": "https://offload.example"},
        "security": {"encryption_key": Fernet.generate_key().decode()},
        "dashboard": {"enabled": True},
    })  # fmt: skip
    dashboard = Dashboard(config, lambda: NOW)
    srv = HttpServer(make_app(handle_callback=lambda raw, sig: {}, health=lambda: (True, {}),
                              dashboard=dashboard), "127.0.0.1", 0)  # fmt: skip
    srv.start()
    admin = Principal(name="admin", kind="session", is_admin=True, companies=(),
                      read_only=False, source="moodle")  # fmt: skip
    cookie = dashboard.sessions.create(admin, "127.0.0.1").cookie
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=find_chromium(), headless=True)
            context = browser.new_context(viewport={"width": 1280, "height": 800},
                                          device_scale_factor=1, locale="en-GB")  # fmt: skip
            context.add_cookies([{"name": COOKIE, "value": cookie, "url": srv.url}])
            page = context.new_page()
            page.goto(f"{srv.url}/jobs/{job_id}?status=failed")
            a.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(a.out), full_page=True)
            browser.close()
    finally:
        srv.stop()
        db.close()
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
