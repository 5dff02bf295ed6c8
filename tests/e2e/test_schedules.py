"""Schedules end to end: the `schedules` commands, and a real daemon firing one on time."""

import mailbox
import signal
import sqlite3
import time
import tomllib
from datetime import UTC, datetime

import pytest
import requests

from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site

from ..conftest import schedule_row
from .conftest import cli, free_port, write_config


def schedule(site, **over) -> dict:
    return schedule_row(site.main_course_id, **over)


@pytest.fixture
def moodle():
    site = generate_site(SiteSpec(seed=5, learners=30, courses=2, companies=1))
    with SandboxServer(site) as server:
        server.site = site
        yield server


def config_for(tmp_path, url, token, **schedules):
    path = write_config(tmp_path)
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in schedules.items())
    path.write_text(path.read_text() + f'[moodle]\nurl = "{url}"\ntoken = "{token}"\n'
                    f'[schedules]\ntimezone = "UTC"\n{extra}')  # fmt: skip
    return path


def test_sync_list_dry_run_and_run(tmp_path, moodle):
    site = moodle.site
    site.schedules[:] = [schedule(site), schedule(site, id=9, name="Broken", weekday=9,
                                                  frequency="weekly")]  # fmt: skip
    config = config_for(tmp_path, moodle.url, site.token)
    synced = cli(config, "schedules", "sync").stdout
    assert "moodle: 1 new" in synced and "1 malformed skipped" in synced
    assert "skipped: schedule 9: weekday" in synced
    listing = cli(config, "schedules", "list").stdout
    assert "Daily reminder" in listing and "never" in listing and "Broken" not in listing

    dry = cli(config, "schedules", "run", "1", "--dry-run").stdout
    assert "dry run, nothing sent" in dry and "left out: " in dry and "course completed " in dry
    assert "route: local: offload.enabled is false" in dry and "--- sample: Reminder:" in dry
    assert not (tmp_path / "mail").exists() or not list(mailbox.Maildir(tmp_path / "mail"))

    ran = cli(config, "schedules", "run", "1", "--deliver").stdout
    assert ": done:" in ran and "sent" in ran
    mails = list(mailbox.Maildir(tmp_path / "mail", create=False))
    assert mails and len(mails) == int(ran.split(" recipients")[0].rsplit(" ", 1)[1])
    assert "done" in cli(config, "schedules", "list").stdout


def test_sync_with_moodle_unreachable_fails_and_names_the_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    config = config_for(tmp_path, url, "a" * 32, sync_interval=10)
    proc = cli(config, "schedules", "sync", check=False)
    assert proc.returncode == 1
    assert "not synced, the last good copy stays" in proc.stdout and url in proc.stdout


def test_the_daemon_fires_a_due_schedule_once_by_itself(tmp_path, moodle, start_daemon):
    now = datetime.now(UTC)
    seconds = now.hour * 3600 + now.minute * 60 + now.second
    if seconds > 86_390:
        pytest.skip("too close to midnight UTC for a same-day due time")
    site = moodle.site
    site.schedules[:] = [schedule(site, timeofday=seconds + 4)]
    config = config_for(tmp_path, moodle.url, site.token, tick_interval=1, sync_interval=10)
    proc = start_daemon(config)
    db = tmp_path / "offload.db"
    deadline = time.monotonic() + 60
    runs = []
    while time.monotonic() < deadline:  # the daemon ticks on the real clock
        with sqlite3.connect(db) as conn:
            try:
                runs = conn.execute("SELECT status FROM schedule_run").fetchall()
                sent = conn.execute(
                    "SELECT count(*) FROM recipient WHERE status = 'sent'"
                ).fetchone()[0]
            except sqlite3.OperationalError:
                runs, sent = [], 0
        if runs and sent:
            break
        time.sleep(0.5)
    listen = tomllib.loads(config.read_text())["server"]["listen"]
    health = requests.get(f"http://{listen}/healthz", timeout=10).json()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert runs == [("done",)], proc.log_path.read_text()[-3000:]
    assert (
        health["last_sync"]["moodle"]["ok_at"] and health["last_sync"]["moodle"]["schedules"] == 1
    )
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM job").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM schedule_run").fetchone()[0] == 1


def test_a_dry_run_with_moodle_gone_is_one_line_not_a_traceback(tmp_path, moodle):
    site = moodle.site
    site.schedules[:] = [schedule(site)]
    config = config_for(tmp_path, moodle.url, site.token)
    cli(config, "schedules", "sync")
    site.protocol_enabled = False
    proc = cli(config, "schedules", "run", "1", "--dry-run", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "web services or the REST protocol are disabled" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "kind",
    [pytest.param("postgres", marks=pytest.mark.postgres),
     pytest.param("mariadb", marks=pytest.mark.mariadb)],
)  # fmt: skip
def test_two_daemon_processes_on_one_database_fire_a_due_schedule_once(
    tmp_path, moodle, start_daemon, kind
):
    from peewee import fn

    from sidecar.db import migrations
    from sidecar.db.connect import open_database
    from sidecar.db.models import ALL_MODELS, Job, Recipient, ScheduleRun

    from ..conftest import database_url

    url = database_url(kind, tmp_path)
    db = open_database(url)
    db.drop_tables(list(ALL_MODELS), safe=True)
    migrations.upgrade(db)
    now = datetime.now(UTC)
    seconds = now.hour * 3600 + now.minute * 60 + now.second
    if seconds > 86_380:
        pytest.skip("too close to midnight UTC for a same-day due time")
    site = moodle.site
    site.schedules[:] = [schedule(site, timeofday=seconds + 8)]
    procs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        config = config_for(tmp_path / name, moodle.url, site.token, tick_interval=1,
                            sync_interval=10)  # fmt: skip
        config.write_text(config.read_text().replace(
            f"sqlite:///{tmp_path / name}/offload.db", url))  # fmt: skip
        procs.append(start_daemon(config))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # both daemons tick on the real clock
        with db.connection_context():
            done = ScheduleRun.select().where(ScheduleRun.status == "done").count()
        if done:
            break
        time.sleep(0.5)
    time.sleep(3)  # a few more ticks of both, in which a second run would appear
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    with db.connection_context():
        assert ScheduleRun.select().count() == 1
        assert Job.select().count() == 1
        dupes = (Recipient.select(Recipient.userid).group_by(Recipient.userid)
                 .having(fn.COUNT(Recipient.id) > 1).count())  # fmt: skip
        assert dupes == 0
        db.drop_tables(list(ALL_MODELS), safe=True)


def _plant(site) -> dict[str, int]:
    """Learners of the main course who have not completed it, each made unmailable one way."""
    cid = site.main_course_id
    enrolled = site.enrolments[cid]
    done = site.course_completions.get(cid, {})
    free = [u for u in sorted(enrolled) if enrolled[u].status == 0 and not done.get(u)
            and u != site.token_user_id]  # fmt: skip
    planted = dict(zip(["account", "nologin", "enrolment", "invalid", "bounced", "no_address"],
                       free, strict=False))  # fmt: skip
    site.users[planted["account"]].suspended = 1
    site.users[planted["nologin"]].auth = "nologin"
    enrolled[planted["enrolment"]].status = 1
    site.users[planted["invalid"]].email = "not-an-address"
    site.users[planted["no_address"]].email = ""
    return planted


def test_the_dry_run_counts_every_learner_and_its_recipients_are_the_run_s_emails(
    tmp_path, moodle, smtp
):
    from sidecar.csvinput import validate_email

    site = moodle.site
    cid = site.main_course_id
    site.schedules[:] = [schedule(site, audience="not_completed", suppress_course_completion=1)]
    planted = _plant(site)
    config = write_config(tmp_path, smtp_port=smtp.port)
    config.write_text(config.read_text() + f'[moodle]\nurl = "{moodle.url}"\n'
                      f'token = "{site.token}"\n[schedules]\ntimezone = "UTC"\n')  # fmt: skip
    cli(config, "schedules", "sync")
    bounced = site.users[planted["bounced"]].email
    with sqlite3.connect(tmp_path / "offload.db") as conn:
        conn.execute(
            "INSERT INTO suppressed_address (email, reason, source, created_at) "
            "VALUES (?, 'mailbox does not exist', 'ses_bounce', '2026-01-01 00:00:00')",
            (bounced.lower(),),
        )

    # What Moodle holds, read from the sandbox itself.
    enrolled, done = site.enrolments[cid], site.course_completions.get(cid, {})
    active = {u for u, e in enrolled.items() if e.status == 0}
    completed = {u for u in active if done.get(u)}

    def valid(address):
        try:
            validate_email(address)
        except ValueError:
            return False
        return True

    expected = {
        u for u in active - completed
        if u not in (planted["account"], planted["nologin"], planted["bounced"])
        and site.users[u].email and valid(site.users[u].email)
    }  # fmt: skip

    dry = cli(config, "schedules", "run", "1", "--dry-run").stdout
    line = next(x.strip() for x in dry.splitlines() if " learners: " in x)
    head, _, left = line.partition("; left out: ")
    learners = int(head.split(" learners")[0])
    recipients = int(head.split(": ")[1].split(" recipients")[0])
    reasons = {}
    for part in left.split(", "):
        name, _, n = part.rpartition(" ")
        reasons[name] = int(n)
    assert learners == len(enrolled)  # every participant, suspended enrolments included
    assert recipients + sum(reasons.values()) == learners
    assert recipients == len(expected)
    assert reasons["completed"] == len(completed)
    assert reasons["suspended account"] == 1 and reasons["account set to nologin"] == 1
    assert reasons["invalid address"] == 1 and reasons["no address"] == 1
    assert reasons["suppressed address"] == 1
    assert reasons["suspended enrolment"] == len(enrolled) - len(active) >= 1
    assert "suppressed: none" not in dry

    ran = cli(config, "schedules", "run", "1", "--deliver").stdout
    assert f"{learners} learners: {recipients} recipients" in ran
    assert len(smtp.seen) == recipients
    assert {rcpt for rcpt, _ in smtp.seen} == {site.users[u].email for u in expected}

    listing = cli(config, "schedules", "list").stdout
    assert f"done: {learners} learners: {recipients} recipients" in listing
    assert "suspended account 1" in listing and f"completed {len(completed)}" in listing
    job_id = next(x.split()[1].rstrip(":") for x in ran.splitlines() if x.startswith("job "))
    shown = cli(config, "jobs", "show", job_id).stdout
    assert f": {learners} learners: {recipients} recipients" in shown
    assert "suppressed address 1" in shown and "invalid address 1" in shown


def test_the_dry_run_list_and_job_show_the_capability_a_run_lacked(tmp_path, moodle):
    site = moodle.site
    site.schedules[:] = [schedule(site, suppress_course_completion=0)]
    config = config_for(tmp_path, moodle.url, site.token)
    cli(config, "schedules", "sync")
    site.capabilities.discard("moodle/user:viewalldetails")  # Moodle then leaves out `auth`
    warning = "nologin not visible"
    dry = cli(config, "schedules", "run", "1", "--dry-run").stdout
    assert warning in dry and "give the token's user moodle/user:viewalldetails" in dry
    assert "Moodle: " in dry
    ran = cli(config, "schedules", "run", "1").stdout
    assert warning in ran
    assert warning in cli(config, "schedules", "list").stdout
    job_id = next(x.split()[1].rstrip(":") for x in ran.splitlines() if x.startswith("job "))
    assert "moodle/user:viewalldetails" in cli(config, "jobs", "show", job_id).stdout


def test_the_daemon_writes_issued_certificates_back_to_moodle_once_across_restarts(
    tmp_path, moodle, start_daemon
):
    site = moodle.site
    row = schedule(site, action_type="both", audience="completed",
                   suppress_course_completion=0, template_id="certificate")  # fmt: skip
    site.schedules[:] = [row]
    config = config_for(tmp_path, moodle.url, site.token)
    cli(config, "schedules", "sync")
    first = cli(config, "schedules", "run", "1", "--deliver").stdout
    assert ": done:" in first

    def certificates() -> int:
        with sqlite3.connect(tmp_path / "offload.db") as db:
            return db.execute("SELECT COUNT(*) FROM certificate").fetchone()[0]

    issued = certificates()
    assert issued > 0
    proc = start_daemon(config)
    deadline = time.monotonic() + 60
    while len(site.recorded_certificates) < issued:
        assert time.monotonic() < deadline, "the daemon did not write the certificates back"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0

    cli(config, "schedules", "run", "1", "--deliver", "--reissue")  # more, while it is down
    total = certificates()
    assert total == 2 * issued
    proc = start_daemon(config)  # restarted: records the new ones only
    deadline = time.monotonic() + 60
    while len(site.recorded_certificates) < total:
        assert time.monotonic() < deadline, "the restarted daemon did not write them back"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    urls = [r["url"] for r in site.recorded_certificates]
    assert len(urls) == len(set(urls)) == total
    with sqlite3.connect(tmp_path / "offload.db") as db:
        states = db.execute("SELECT DISTINCT record_state FROM certificate").fetchall()
    assert states == [("recorded",)]
