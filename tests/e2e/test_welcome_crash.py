"""A welcome's password flow killed (SIGKILL) in each of its windows, then restarted: every
learner ends up with exactly the password their email gave, and it works in Moodle.

The daemon kills itself at a named point (`MOODLE_OFFLOAD_CRASH_AT`, sidecar/crashpoints.py)
so each window is hit for certain, not by timing.
"""

import signal
import subprocess
import sys

import pytest

from moodle_ws import functions
from sidecar.db.models import Job, Recipient

from . import test_welcome
from .conftest import cli, cli_env
from .test_daemon import ledger, wait_until
from .test_welcome import learner_client, welcome_config

inbox = test_welcome.inbox  # the fixtures, shared
moodle = test_welcome.moodle

pytestmark = pytest.mark.slow
USERS = 7


def make_users(moodle) -> list[int]:
    client = learner_client(moodle, moodle.site.token)
    made = functions.create_users(client, [
        {"username": f"crash{i}", "firstname": f"C{i}", "lastname": "Rash",
         "email": f"crash{i}@example.org", "password": "First-123x"} for i in range(USERS)
    ])  # fmt: skip
    client.close()
    return [uid for uid, _ in made]


def run_until_killed(config, tmp_path, point: str) -> None:
    log = open(tmp_path / f"killed-{point}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "run"],
        env=cli_env(config, {"MOODLE_OFFLOAD_CRASH_AT": point}),
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.wait(timeout=120) == -signal.SIGKILL, f"the daemon never reached {point}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def welcome_states(tmp_path) -> dict[int, dict]:
    db = ledger(tmp_path)
    try:
        return {r.userid: r.vars["_welcome"] for r in Recipient.select()}
    finally:
        db.close()


def job_status(tmp_path):
    db = ledger(tmp_path)
    try:
        return Job.select(Job.status).scalar()
    finally:
        db.close()


WINDOWS = {
    # point: (the state the ledger holds at the kill, is Moodle's password already the new one,
    #         emails already taken by the SMTP server)
    "welcome.generated": ("generated", False, 0),
    "welcome.moodle_answered": ("generated", True, 0),
    "welcome.set": ("set", True, 0),
    "delivery.accepted": ("set", True, 1),
}


@pytest.mark.parametrize("point", list(WINDOWS))
def test_a_kill_in_each_window_leaves_every_learner_a_working_mailed_password(
    tmp_path, moodle, inbox, start_daemon, point
):
    site = moodle.site
    userids = make_users(moodle)
    config = welcome_config(tmp_path, moodle, inbox)
    ids = ",".join(map(str, userids))
    cli(config, "send", "welcome", "--users", ids, "--yes")

    run_until_killed(config, tmp_path, point)
    state, moodle_has_it, mailed = WINDOWS[point]
    states = welcome_states(tmp_path)
    assert {w["state"] for w in states.values()} == {state}
    assert all(w["sealed"] for w in states.values())  # kept, encrypted, for the restart
    assert all((site.users[u].password != "First-123x") == moodle_has_it for u in userids)
    assert len(inbox.messages) == mailed

    daemon = start_daemon(config)
    wait_until(lambda: job_status(tmp_path) == "completed", timeout=120)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0

    by_user: dict[str, set[str]] = {}
    for text in inbox.texts():
        user = text.split("Username: ")[1].split()[0]
        by_user.setdefault(user, set()).add(text.split("Temporary password: ")[1].split()[0])
    assert sorted(by_user) == sorted(f"crash{i}" for i in range(USERS))
    for username, passwords in by_user.items():
        assert len(passwords) == 1, f"{username} was mailed two different passwords"
        user = site.users[site.usernames[username]]
        assert user.password == passwords.pop()  # the mailed password is the one that works
        assert user.preferences["auth_forcepasswordchange"] == "1"
    # Only the message in flight at the kill may go twice (same password, same Message-ID).
    assert len(inbox.messages) == USERS + mailed
    assert len({m["Message-ID"] for m in inbox.messages}) == USERS
    assert all(
        w["state"] == "sent" and "sealed" not in w for w in welcome_states(tmp_path).values()
    )


def test_cancelling_a_welcome_erases_its_passwords_and_a_later_run_welcomes_them(
    tmp_path, moodle, inbox
):
    userids = make_users(moodle)
    config = welcome_config(tmp_path, moodle, inbox)
    ids = ",".join(map(str, userids))
    out = cli(config, "send", "welcome", "--users", ids, "--yes").stdout
    job_id = out.split("job ")[1].split(":")[0]
    run_until_killed(config, tmp_path, "welcome.set")  # passwords set, none mailed
    assert all(w.get("sealed") for w in welcome_states(tmp_path).values())

    assert f"{USERS} recipients will not be sent" in cli(config, "jobs", "cancel", job_id).stdout
    assert all("sealed" not in w for w in welcome_states(tmp_path).values())
    again = cli(config, "send", "welcome", "--users", ids, "--yes", "--deliver").stdout
    assert f"{USERS} to welcome" in again and f"delivered: sent {USERS}" in again
    site = moodle.site
    for text in inbox.texts():
        user = site.users[site.usernames[text.split("Username: ")[1].split()[0]]]
        assert user.password == text.split("Temporary password: ")[1].split()[0]
