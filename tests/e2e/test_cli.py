"""The CLI as a real process: send csv previews, refuses, confirms; jobs commands; demo."""

import csv
import mailbox

import pytest

from sidecar.db import migrations

from .conftest import cli, message_args, write_config, write_csv


def maildir_count(tmp_path):
    path = tmp_path / "mail"
    return len(list(mailbox.Maildir(path, create=False))) if path.exists() else 0


def test_csv_with_invalid_rows_lists_them_by_line_and_sends_nothing(tmp_path):
    config = write_config(tmp_path)
    path = tmp_path / "l.csv"
    path.write_text(
        "userid,email,firstname,lastname\n"
        "1,ok1@example.org,Ana,Silva\n"
        "2,bob@@example.org,Bob,Jones\n"
        "x,ok3@example.org,Cy,Young\n"
        "4,ok4@example.org,Di,Prince\n"
    )
    proc = cli(
        config, "send", "csv", str(path), *message_args(tmp_path), "--yes", "--deliver", check=False
    )
    assert proc.returncode != 0
    assert "line 3" in proc.stdout and "line 4" in proc.stdout
    assert "nothing sent" in proc.stderr
    assert maildir_count(tmp_path) == 0
    listing = cli(config, "jobs", "list").stdout
    assert len(listing.strip().splitlines()) == 1  # header only: no job was created

    proc = cli(
        config,
        "send",
        "csv",
        str(path),
        *message_args(tmp_path),
        "--yes",
        "--deliver",
        "--skip-invalid",
    )
    assert maildir_count(tmp_path) == 2
    # the preview's sample and each email greet the learner by name
    assert "Subject: A reminder for Ana" in proc.stdout
    mails = list(mailbox.Maildir(tmp_path / "mail", create=False))
    assert sorted(m["Subject"] for m in mails) == ["A reminder for Ana", "A reminder for Di"]
    texts = [
        part.get_payload(decode=True).decode()
        for m in mails for part in m.walk() if part.get_content_type() == "text/plain"
    ]  # fmt: skip
    assert sorted(t.split(",")[0] for t in texts) == ["Dear Ana", "Dear Di"]


def test_csv_row_repeated_exactly_is_merged_and_mailed_once_another_address_is_refused(
    tmp_path,
):
    config = write_config(tmp_path)
    path = tmp_path / "l.csv"
    rows = "".join(f"{i},l{i}@example.org,F{i},L{i}\n" for i in (1, 2, 3))
    path.write_text("userid,email,firstname,lastname\n" + rows + "2,l2@example.org,F2,L2\n")
    sent = cli(config, "send", "csv", str(path), *message_args(tmp_path), "--yes", "--deliver")
    assert "3 valid rows, 0 invalid, 1 repeated rows merged" in sent.stdout
    assert "note: line 5 repeats line 3 (userid 2): merged, sent once" in sent.stdout
    assert maildir_count(tmp_path) == 3

    path.write_text("userid,email,firstname,lastname\n" + rows + "2,new2@example.org,F2,L2\n")
    refused = cli(config, "send", "csv", str(path), *message_args(tmp_path), "--yes", "--deliver",
                  check=False)  # fmt: skip
    assert refused.returncode == 1 and "nothing sent" in refused.stderr
    assert (
        "line 5: userid 2 already given on line 3 with another address "
        "('l2@example.org' on line 3, 'new2@example.org' on line 5)" in refused.stdout
    )
    assert maildir_count(tmp_path) == 3


def test_without_a_terminal_and_without_yes_the_send_is_refused(tmp_path):
    config = write_config(tmp_path)
    proc = cli(
        config,
        "send",
        "csv",
        str(write_csv(tmp_path / "l.csv", 3)),
        *message_args(tmp_path),
        check=False,
    )
    assert proc.returncode == 1 and "--yes" in proc.stderr
    assert maildir_count(tmp_path) == 0
    dry = cli(config, "send", "csv", str(tmp_path / "l.csv"), *message_args(tmp_path),
              "--dry-run", "--yes", "--deliver")  # fmt: skip
    assert "dry run: nothing sent; 3 to send" in dry.stdout
    assert maildir_count(tmp_path) == 0
    sent = cli(config, "send", "csv", str(tmp_path / "l.csv"), *message_args(tmp_path),
               "--yes", "--deliver")  # fmt: skip
    assert "0 already sent" in sent.stdout and maildir_count(tmp_path) == 3


def test_resubmitted_file_mails_nobody_twice(tmp_path):
    config = write_config(tmp_path)
    path = write_csv(tmp_path / "l.csv", 5)
    args = ("send", "csv", str(path), *message_args(tmp_path), "--yes", "--deliver")
    cli(config, *args)
    again = cli(config, *args)
    assert "5 already sent" in again.stdout
    assert maildir_count(tmp_path) == 5


def test_jobs_show_export_and_retry(tmp_path):
    config = write_config(tmp_path)
    cli(
        config,
        "send",
        "csv",
        str(write_csv(tmp_path / "l.csv", 4)),
        *message_args(tmp_path),
        "--yes",
        "--deliver",
    )
    job_id = cli(config, "jobs", "list").stdout.splitlines()[1].split()[0]
    shown = cli(config, "jobs", "show", job_id).stdout
    assert "completed" in shown and "sent 4" in shown
    out = tmp_path / "export.csv"
    cli(config, "jobs", "export", job_id, "-o", str(out))
    rows = list(csv.DictReader(out.open()))
    assert [r["status"] for r in rows] == ["sent"] * 4
    retry = cli(config, "jobs", "retry", job_id, check=False)
    assert retry.returncode == 1 and "no failed recipient" in retry.stderr


def test_unknown_job_is_one_line_error(tmp_path):
    config = write_config(tmp_path)
    proc = cli(config, "jobs", "show", "00000000-0000-4000-8000-000000000000", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "not found" in proc.stderr


def test_bad_config_names_the_file_and_key(tmp_path):
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("[server]", "[server]\nlisten_port = 8000"))
    proc = cli(config, "check", check=False)
    assert proc.returncode == 1
    assert str(config) in proc.stderr and "server.listen_port" in proc.stderr


@pytest.mark.slow
def test_demo_once_fires_two_schedules_on_the_sandbox_and_delivers_mail_and_pdfs(tmp_path):
    import re
    from io import BytesIO

    from pypdf import PdfReader

    proc = cli(tmp_path / "unused.toml", "demo", "--once", "--dir", str(tmp_path / "demo"),
               "--learners", "60")  # fmt: skip
    out = proc.stdout
    assert "mail:" in out and "certificates:" in out
    # The demo has stopped when this prints: nothing to open but folders and files.
    assert "http://" not in out and "dashboard" not in out
    # The reminder suppressed exactly the learners the certificate schedule certified.
    suppressed = int(re.search(r"left out: [^;]*\bcourse completed (\d+)", out).group(1))
    certs = int(re.search(r"\(certificates\): sent (\d+)", out).group(1))
    reminders = int(re.search(r"\(reminders\): sent (\d+)", out).group(1))
    assert certs == suppressed > 0 and reminders > 0
    mails = list(mailbox.Maildir(tmp_path / "demo" / "mail", create=False))
    assert len(mails) == certs + reminders
    pdfs = list((tmp_path / "demo" / "certificates").rglob("*.pdf"))
    assert len(pdfs) == certs
    text = PdfReader(BytesIO(pdfs[0].read_bytes())).pages[0].extract_text()
    assert "Certificate of Completion" in text


def test_db_upgrade_then_check_pass_on_a_good_config(tmp_path):
    config = write_config(tmp_path)
    dry = cli(config, "db", "upgrade", "--dry-run").stdout
    assert "schema at version 0; `db upgrade` would apply:" in dry
    assert (
        f"  {migrations.LATEST}: {migrations.STEPS[-1][1]}" in dry and "  1: initial ledger" in dry
    )
    assert "applied migrations 1, 2, 3" in cli(config, "db", "upgrade").stdout
    nothing = cli(config, "db", "upgrade", "--dry-run").stdout
    assert f"schema at version {migrations.LATEST}: nothing to apply" in nothing
    again = cli(config, "db", "upgrade").stdout
    assert f"already at version {migrations.LATEST}" in again
    checked = cli(config, "check")
    assert f"ok   database: schema at version {migrations.LATEST}" in checked.stdout
    assert "ok   local delivery: maildir" in checked.stdout


def test_check_on_a_fresh_install_passes_and_says_run_creates_the_database(tmp_path):
    config = write_config(tmp_path)
    proc = cli(config, "check", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   database: not created yet: `db upgrade` or `run` creates it" in proc.stdout
    assert "FAIL" not in proc.stdout


def _sql(tmp_path, statement):
    import sqlite3

    with sqlite3.connect(tmp_path / "offload.db") as conn:
        conn.execute(statement)


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("INSERT INTO schema_version (version, name, applied_at) "
         "VALUES (99, 'future', '2030-01-01 00:00:00')",
         f"schema at version 99 is newer than this moodle-offload knows "
         f"(latest {migrations.LATEST})"),
        ("DELETE FROM schema_version WHERE version = 3",
         "a schema upgrade stopped half way (step 3 not recorded): "
         "run `moodle-offload db upgrade`"),
        ("DELETE FROM schema_version",
         "tables named like moodle-offload's exist but none of its schema steps is recorded "
         "({tables}): they may belong to another application: give moodle-offload a "
         "database of its own (database.url); if they are moodle-offload's, from a first "
         "`db upgrade` that stopped half way, run `moodle-offload db upgrade` to finish it"),
    ],
    ids=["newer-than-the-code", "step-missing", "tables-without-record"],
)  # fmt: skip
def test_check_fails_on_a_schema_newer_than_the_code_or_half_upgraded(
    tmp_path, statement, expected
):
    config = write_config(tmp_path)
    cli(config, "db", "upgrade")
    import sqlite3

    with sqlite3.connect(tmp_path / "offload.db") as conn:
        tables = ", ".join(
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        )
    assert "job" in tables and "schema_version" in tables
    _sql(tmp_path, statement)
    proc = cli(config, "check", check=False)
    assert proc.returncode == 1
    assert f"FAIL database: {expected.replace('{tables}', tables)}" in proc.stdout


def test_check_and_db_upgrade_name_another_applications_table_and_create_nothing(tmp_path):
    config = write_config(tmp_path)
    _sql(tmp_path, "CREATE TABLE job (id INTEGER PRIMARY KEY, queue TEXT, payload TEXT)")
    expected = (
        "the database holds tables of another application under names moodle-offload uses: "
        "job (columns payload, queue); give moodle-offload a database of its own (database.url)"
    )
    checked = cli(config, "check", check=False)
    assert checked.returncode == 1 and f"FAIL database: {expected}" in checked.stdout
    upgraded = cli(config, "db", "upgrade", check=False)
    assert upgraded.returncode == 1 and upgraded.stderr.strip() == f"Error: {expected}"
    import sqlite3

    with sqlite3.connect(tmp_path / "offload.db") as conn:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("job",)]


def test_check_fails_with_a_fix_when_the_smtp_server_is_unreachable(tmp_path):
    from .conftest import free_port

    config = write_config(tmp_path, smtp_port=free_port())
    proc = cli(config, "check", check=False)
    assert proc.returncode == 1
    assert "FAIL local delivery" in proc.stdout and "providers.local.smtp_host" in proc.stdout


def test_cancel_stops_a_queued_job(tmp_path):
    config = write_config(tmp_path)
    cli(
        config,
        "send",
        "csv",
        str(write_csv(tmp_path / "l.csv", 3)),
        *message_args(tmp_path),
        "--yes",
    )
    job_id = cli(config, "jobs", "list").stdout.splitlines()[1].split()[0]
    assert "3 recipients will not be sent" in cli(config, "jobs", "cancel", job_id).stdout
    assert "cancelled" in cli(config, "jobs", "show", job_id).stdout
