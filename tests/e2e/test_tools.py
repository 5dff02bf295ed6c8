"""`send reengagement` and `certificates issue` end to end: the CLI against the Moodle
sandbox over HTTP, mail into a folder or the SMTP sink, PDFs read back."""

import mailbox
import sqlite3
import time
from io import BytesIO

import pytest
from pypdf import PdfReader

from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site

from ..conftest import schedule_row
from .conftest import cli, write_config

DAYS = 7


@pytest.fixture
def moodle():
    # Last accesses relative to the real clock, which the CLI reads.
    site = generate_site(
        SiteSpec(seed=5, learners=40, courses=2, companies=1, now=int(time.time()))
    )
    site.schedules[:] = []
    with SandboxServer(site) as server:
        server.site = site
        yield server


def config_for(tmp_path, moodle, smtp_port=None):
    path = write_config(tmp_path, smtp_port=smtp_port)
    path.write_text(path.read_text() + f'[moodle]\nurl = "{moodle.url}"\n'
                    f'token = "{moodle.site.token}"\n[schedules]\ntimezone = "UTC"\n')  # fmt: skip
    return path


def dry_block(out: str) -> str:
    """The dry run's lines under its heading: accounting, route, Moodle, sample."""
    lines = out.splitlines()
    start = next(i for i, x in enumerate(lines) if " learners: " in x)
    return "\n".join(lines[start:])


def recipients_in(out: str) -> int:
    line = next(x for x in out.splitlines() if " learners: " in x)
    return int(line.split(": ", 1)[1].split(" recipients")[0])


def mailed(tmp_path) -> list[str]:
    box = tmp_path / "mail"
    if not box.exists():
        return []
    return [m["To"].rsplit("<", 1)[-1].rstrip(">") for m in mailbox.Maildir(box, create=False)]


def inactive_completed(site) -> set[int]:
    """Learners of the main course who completed it and are inactive for DAYS: those
    --exclude-completed leaves out."""
    cid = site.main_course_id
    now = int(time.time())
    done = {u for u, t in site.course_completions.get(cid, {}).items() if t}
    return {
        u for u, e in site.enrolments[cid].items()
        if e.status == 0 and u in done and (e.lastaccess <= 0 or e.lastaccess < now - DAYS * 86400)
    }  # fmt: skip


@pytest.mark.parametrize("exclude_completed", [False, True])
def test_reengagement_previews_exactly_what_the_inactive_schedule_s_dry_run_shows(
    tmp_path, moodle, exclude_completed
):
    site = moodle.site
    site.schedules[:] = [schedule_row(
        site.main_course_id, name="Come back", audience="inactive", inactive_days=DAYS,
        suppress_course_completion=int(exclude_completed), template_id="reengagement",
    )]  # fmt: skip
    config = config_for(tmp_path, moodle)
    cli(config, "schedules", "sync")
    scheduled = cli(config, "schedules", "run", "1", "--dry-run").stdout
    args = ["send", "reengagement", "--course", str(site.main_course_id),
            "--inactive-days", str(DAYS)]  # fmt: skip
    args += ["--exclude-completed"] if exclude_completed else []
    proc = cli(config, *args, check=False)  # no terminal, no --yes: preview only
    assert proc.returncode == 1 and "not a terminal: pass --yes" in proc.stderr
    assert dry_block(proc.stdout) == dry_block(scheduled)
    dry = cli(config, *args, "--dry-run").stdout
    assert dry_block(dry).split("\ndry run: ")[0].rstrip() == dry_block(scheduled).rstrip()
    assert f"dry run: nothing sent; {recipients_in(dry)} to send under key " in dry
    assert "recently active " in dry_block(scheduled) and recipients_in(scheduled) > 0
    assert ("course completed " in scheduled) is exclude_completed
    assert "--- sample: " in proc.stdout
    with sqlite3.connect(tmp_path / "offload.db") as conn:
        assert conn.execute("SELECT count(*) FROM job").fetchone()[0] == 0
    assert mailed(tmp_path) == []


def test_reengagement_twice_the_same_day_mails_nobody_twice(tmp_path, moodle, smtp):
    site = moodle.site
    cid = str(site.main_course_id)
    config = config_for(tmp_path, moodle, smtp_port=smtp.port)
    base = ["send", "reengagement", "--course", cid, "--inactive-days", str(DAYS), "--yes"]

    first = cli(config, *base, "--exclude-completed", "--deliver").stdout
    sent = recipients_in(first)
    left_out = inactive_completed(site)
    assert sent > 0 and left_out and f"course completed {len(left_out)}" in first
    assert len(smtp.seen) == sent, first
    first_to = {rcpt for rcpt, _ in smtp.seen}
    assert not first_to & {site.users[u].email for u in left_out}

    # The same again: everyone is already under the day's key.
    again = cli(config, *base, "--exclude-completed", "--deliver").stdout
    assert f"{sent} already sent under key reengagement:course:{cid}:inactive:{DAYS}:" in again
    assert "nothing to send" in again and len(smtp.seen) == sent

    # Without --exclude-completed the same day: only the completed learners are new.
    wider = cli(config, *base, "--deliver").stdout
    assert recipients_in(wider) == sent + len(left_out)
    assert len(smtp.seen) == sent + len(left_out)
    to = [rcpt for rcpt, _ in smtp.seen]
    assert len(to) == len(set(to))  # nobody twice
    assert set(to) - first_to == {site.users[u].email for u in left_out}

    # Another key is another campaign: the admin said so.
    other = cli(config, *base, "--key", "spring-campaign").stdout
    assert "already sent" not in other and "queued for the daemon" in other


def test_a_tool_against_a_moodle_without_a_function_names_it_and_the_service(tmp_path, moodle):
    site = moodle.site
    site.remove_function("core_enrol_get_enrolled_users")
    config = config_for(tmp_path, moodle)
    for args in (["send", "reengagement", "--inactive-days", "3"], ["certificates", "issue"]):
        proc = cli(config, *args, "--course", str(site.main_course_id), "--yes", check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        line = proc.stderr.strip()
        assert len(line.splitlines()) == 1
        assert "core_enrol_get_enrolled_users" in line and "learners cannot be read" in line
        assert "External services" in line
    assert mailed(tmp_path) == []


def completed_learners(site) -> set[int]:
    cid = site.main_course_id
    done = {u for u, t in site.course_completions.get(cid, {}).items() if t}
    return {u for u, e in site.enrolments[cid].items() if e.status == 0 and u in done}


def certificates_held(tmp_path) -> dict[int, list[str]]:
    held: dict[int, list[str]] = {}
    with sqlite3.connect(tmp_path / "offload.db") as conn:
        for code, userid in conn.execute("SELECT code, userid FROM certificate ORDER BY code"):
            held.setdefault(userid, []).append(code)
    return held


def test_certificates_issue_once_per_course_and_reissue_gives_new_codes(tmp_path, moodle):
    site = moodle.site
    cid = site.main_course_id
    config = config_for(tmp_path, moodle)
    completed = completed_learners(site)
    not_completed = min(
        u for u, e in site.enrolments[cid].items() if e.status == 0 and u not in completed
    )
    someone = site.users[not_completed]

    listed = cli(config, "certificates", "issue", "--course", str(cid), "--user",
                 str(not_completed), "--yes").stdout  # fmt: skip
    assert (f"user {not_completed} ({someone.firstname} {someone.lastname}): not completed"
            in listed)  # fmt: skip
    assert "nothing to send" in listed and certificates_held(tmp_path) == {}

    first = cli(config, "certificates", "issue", "--course", str(cid), "--yes", "--deliver").stdout
    issued = recipients_in(first)
    held = certificates_held(tmp_path)
    assert issued > 0 and set(held) <= completed and len(held) == issued
    assert "with a certificate" in first and "sent" in first
    pdfs = sorted((tmp_path / "certificates").rglob("*.pdf"))
    assert len(pdfs) == issued and len(mailed(tmp_path)) == issued
    text = PdfReader(BytesIO(pdfs[0].read_bytes())).pages[0].extract_text()
    assert "Certificate of Completion" in text
    names = {f"{site.users[u].firstname} {site.users[u].lastname}" for u in held}
    assert any(name in text for name in names)

    second = cli(config, "certificates", "issue", "--course", str(cid), "--yes", "--deliver").stdout
    assert f"already given this certificate {issued}" in second and "nothing to send" in second
    assert certificates_held(tmp_path) == held and len(mailed(tmp_path)) == issued

    again = cli(config, "certificates", "issue", "--course", str(cid), "--reissue", "--yes",
                "--deliver").stdout  # fmt: skip
    assert recipients_in(again) == issued
    after = certificates_held(tmp_path)
    assert set(after) == set(held)
    for userid, codes in after.items():
        assert len(codes) == 2 and held[userid][0] in codes  # a new code beside the old one
    assert len(mailed(tmp_path)) == 2 * issued


def test_a_company_s_reengagement_reaches_its_users_only_and_is_routed_as_its_own(tmp_path, moodle):
    site = moodle.site
    company = min(site.companies)
    site.schedules[:] = [schedule_row(
        site.main_course_id, audience="inactive", inactive_days=DAYS, companyid=company,
        suppress_course_completion=0, template_id="reengagement",
    )]  # fmt: skip
    config = config_for(tmp_path, moodle)
    cli(config, "schedules", "sync")
    scheduled = cli(config, "schedules", "run", "1", "--dry-run").stdout
    assert "other company " in scheduled
    ran = cli(config, "send", "reengagement", "--course", str(site.main_course_id),
              "--inactive-days", str(DAYS), "--company", str(company), "--yes").stdout  # fmt: skip
    assert dry_block(ran).split("\njob ")[0].rstrip() == dry_block(scheduled).rstrip()
    with sqlite3.connect(tmp_path / "offload.db") as conn:
        jobs = conn.execute("SELECT tenant_id, schedule_id, run_id, idempotency_key FROM job "
                            "WHERE schedule_id IS NULL").fetchall()  # fmt: skip
    assert len(jobs) == 1 and jobs[0][0] == company and jobs[0][2] is None
    assert jobs[0][3].startswith(f"reengagement:course:{site.main_course_id}:inactive:{DAYS}:")


def on_a_terminal(config, args, answer: str) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal (stdin, stdout and stderr: Python writes input()'s
    prompt to stderr without readline), answer its question, and return its exit status
    and what it showed."""
    import os
    import pty
    import select
    import subprocess
    import sys

    from .conftest import cli_env

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "sidecar", *args], env=cli_env(config),
                            stdin=slave, stdout=slave, stderr=slave)  # fmt: skip
    os.close(slave)
    shown, answered = b"", False
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            proc.kill()
            raise AssertionError(f"no question within 120 s:\n{shown.decode()}")
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
        if not answered and b"recipients? [y/N]" in shown:
            os.write(master, answer.encode() + b"\n")
            answered = True
    os.close(master)
    proc.wait(timeout=120)
    return proc.returncode, shown.decode(errors="replace")


@pytest.mark.parametrize("answer, jobs", [("n", 0), ("y", 1)])
def test_on_a_terminal_the_tool_asks_before_it_commits_and_shows_its_progress(
    tmp_path, moodle, answer, jobs
):
    config = config_for(tmp_path, moodle)
    args = ["send", "reengagement", "--course", str(moodle.site.main_course_id),
            "--inactive-days", str(DAYS)]  # fmt: skip
    status, shown = on_a_terminal(config, [*args, "--deliver"], answer)
    n = recipients_in(shown)
    assert f"Send to {n} recipients? [y/N]" in shown
    assert status == (0 if jobs else 1)
    assert ("delivering" in shown) is bool(jobs)  # the progress bar, on the terminal
    assert len(mailed(tmp_path)) == (n if jobs else 0)
    with sqlite3.connect(tmp_path / "offload.db") as conn:
        assert conn.execute("SELECT count(*) FROM job").fetchone()[0] == jobs
        held = conn.execute("SELECT count(*) FROM recipient").fetchone()[0]
    assert held == (n if jobs else 0)
