"""Both keys rotated beside a running daemon, as docs/operations.md tells an admin to: the
encryption key (`keys rotate` re-encrypts the temporary passwords a killed welcome left in
the ledger) and the callback secret (callbacks signed with the old and the new secret keep
arriving all along). Nothing is lost: every callback lands, every learner gets the one
password Moodle has, and the ledger ends with nothing only the old key opens."""

import asyncio
import threading
import uuid
from datetime import UTC, datetime

import pytest
import requests
from aiosmtpd.controller import Controller
from cryptography.fernet import Fernet

from moodle_ws import functions
from providers.message import make_callback
from providers.signing import sign
from sidecar import jobs
from sidecar.config import load
from sidecar.db.models import Batch, Job, Recipient
from sidecar.status import RecipientStatus as R
from sidecar.temppasswords import Sealer
from sidecar.welcomepasswords import SECRET_KEY

from . import test_welcome
from .conftest import cli, free_port
from .test_daemon import ledger, wait_until
from .test_welcome import KEY as OLD_KEY
from .test_welcome import Inbox, learner_client, welcome_config
from .test_welcome_crash import run_until_killed

moodle = test_welcome.moodle
pytestmark = pytest.mark.slow

USERS = 12
CLOUD = 400  # recipients of a job a cloud worker reports on
NEW_KEY = Fernet.generate_key().decode()
OLD_SECRET, NEW_SECRET = "test-secret", "new-callback-secret-7c1e"


class GatedInbox(Inbox):
    """An SMTP sink that holds every message until `open` is set."""

    def __init__(self):
        super().__init__()
        self.open = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        await asyncio.get_running_loop().run_in_executor(None, self.open.wait)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def inbox():
    handler = GatedInbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    yield handler
    handler.open.set()
    controller.stop()


def sealed_under_old_key(tmp_path) -> dict[int, str]:
    """userid -> sealed password, for the welcome job's recipients."""
    db = ledger(tmp_path)
    try:
        return {
            r.userid: r.vars[SECRET_KEY]["sealed"]
            for r in Recipient.select().where(Recipient.vars.is_null(False))
            if r.vars.get(SECRET_KEY, {}).get("sealed")
        }
    finally:
        db.close()


def cloud_job(tmp_path, now) -> tuple[str, str]:
    db = ledger(tmp_path)
    try:
        people = [jobs.RecipientIn(5000 + i, f"c{i}@example.org", "C", "L") for i in range(CLOUD)]
        spec = jobs.JobSpec(type="send_reminder", template_id="reminder", source="test",
                            route="aws")  # fmt: skip
        job_id = jobs.create_job(spec, people, batch_size=CLOUD, now=now).job_id
        batch = Batch.get(Batch.job == job_id)
        Batch.update(status="queued").where(Batch.id == batch.id).execute()
        Recipient.update(status=R.QUEUED).where(Recipient.job == job_id).execute()
        return job_id, batch.id
    finally:
        db.close()


def statuses(tmp_path) -> dict[str, str]:
    db = ledger(tmp_path)
    try:
        return {j.type: j.status for j in Job.select()}
    finally:
        db.close()


def test_both_keys_rotated_while_callbacks_and_a_welcome_are_in_flight(
    tmp_path, moodle, inbox, start_daemon
):
    site = moodle.site
    client = learner_client(moodle, site.token)
    made = functions.create_users(client, [
        {"username": f"rot{i}", "firstname": f"R{i}", "lastname": "Otate",
         "email": f"rot{i}@example.org", "password": "First-123x"} for i in range(USERS)
    ])  # fmt: skip
    client.close()
    config = welcome_config(tmp_path, moodle, inbox)
    cli(config, "send", "welcome", "--users", ",".join(str(u) for u, _ in made), "--yes")
    run_until_killed(config, tmp_path, "welcome.set")  # passwords set in Moodle, sealed, unsent
    before = sealed_under_old_key(tmp_path)
    assert len(before) == USERS
    job_id, batch_id = cloud_job(tmp_path, datetime.now(UTC).replace(tzinfo=None))

    # Step 1 of the docs: the new key seals, the old one is only read; the new callback
    # secret signs, the old one still verifies.
    text = config.read_text().replace(
        f'encryption_key = "{OLD_KEY}"',
        f'encryption_key = "{NEW_KEY}"\nprevious_encryption_keys = ["{OLD_KEY}"]',
    ).replace('callback_secrets = ["test-secret"]',
              f'callback_secrets = ["{NEW_SECRET}", "{OLD_SECRET}"]')  # fmt: skip
    config.write_text(text)
    dry = cli(config, "keys", "rotate", "--dry-run").stdout
    assert f"would re-encrypt {USERS} temporary password(s)" in dry
    assert sealed_under_old_key(tmp_path) == before

    base = f"http://{load(config).server.listen}"
    daemon = start_daemon(config)  # resumes the welcome: its first email waits at the sink
    answers: list[int] = []

    def worker_reports():
        for n, start in enumerate(range(0, CLOUD, 20)):
            updates = [{"userid": 5000 + i, "status": "sent", "external_id": f"m{i}"}
                       for i in range(start, start + 20)]  # fmt: skip
            body = make_callback(job_id, batch_id, updates, callback_id=str(uuid.uuid4()))
            secret = OLD_SECRET if n % 2 else NEW_SECRET  # workers not all updated yet
            answers.append(requests.post(f"{base}/callback", data=body, timeout=30, headers={
                "Content-Type": "application/json", "X-Signature": sign(secret, body),
            }).status_code)  # fmt: skip

    reports = threading.Thread(target=worker_reports)
    reports.start()
    rotated = cli(config, "keys", "rotate").stdout  # step 2, the daemon running
    reports.join(timeout=120)

    assert f"re-encrypted {USERS} temporary password(s)" in rotated
    after = sealed_under_old_key(tmp_path)
    only_new = Sealer.of([NEW_KEY])
    # re-encrypted, and still the very password Moodle holds for each learner
    assert {u: only_new.open(t) for u, t in after.items()} == {
        u: site.users[u].password for u, _ in made
    }
    assert answers == [200] * (CLOUD // 20)

    inbox.open.set()  # the SMTP server answers again: the welcome goes out
    wait_until(lambda: set(statuses(tmp_path).values()) == {"completed"}, timeout=120)
    for username, password in inbox.credentials().items():
        assert site.users[site.usernames[username]].password == password
    assert sorted(inbox.credentials()) == sorted(f"rot{i}" for i in range(USERS))
    assert sealed_under_old_key(tmp_path) == {}  # sent: the passwords are gone altogether
    db = ledger(tmp_path)
    try:
        assert Recipient.select().where(Recipient.job == job_id, Recipient.status == R.SENT
                                        ).count() == CLOUD  # fmt: skip
    finally:
        db.close()

    # Step 3: the old key leaves the config; nothing needed it.
    config.write_text(config.read_text().replace(f'previous_encryption_keys = ["{OLD_KEY}"]', ""))
    assert "re-encrypted 0 temporary password(s)" in cli(config, "keys", "rotate").stdout
    daemon.terminate()
    assert daemon.wait(timeout=60) == 0
