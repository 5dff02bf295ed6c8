"""`moodle-offload suppression list | add | remove` as a real process, with `send csv` and
`jobs show` showing what an unsubscribe does to the next job."""

import mailbox
import re
from datetime import datetime

from .conftest import cli, message_args, write_config, write_csv

KEY = "uJ0ZGmpcf1sv1Ktzi4Qev3Zdtzu5y2sXk0Gm3FA9oWY="


def unsubscribe_config(tmp_path):
    path = write_config(tmp_path)
    text = path.read_text()
    text = text.replace("[server]", '[server]\npublic_url = "https://offload.example"')
    text = text.replace("[security]", f'[security]\nencryption_key = "{KEY}"')
    path.write_text(text + "[unsubscribe]\nenabled = true\n")
    return path


def send_csv(config, tmp_path) -> str:
    path = write_csv(tmp_path / "l.csv", 3)
    out = cli(config, "send", "csv", str(path), *message_args(tmp_path), "--yes", "--deliver")
    return re.search(r"job ([0-9a-f-]{36})", out.stdout).group(1)


def bounce(tmp_path, address):
    """What an SES bounce report leaves behind: the address on the suppression list."""
    from sidecar import suppression
    from sidecar.db import store
    from sidecar.db.connect import open_database

    db = open_database(f"sqlite:///{tmp_path}/offload.db")
    with store.atomic():
        suppression.suppress(address, "Email bounce: mailbox full", "ses_bounce", datetime.now())
    db.close()


def test_an_admin_unsubscribes_a_learner_lists_both_lists_and_lifts_both(tmp_path):
    config = unsubscribe_config(tmp_path)
    added = cli(config, "suppression", "add", "1", "--kind", "custom").stdout
    assert "user 1: unsubscribed from custom" in added
    assert "(already)" in cli(config, "suppression", "add", "1", "--kind", "custom").stdout

    job_id = send_csv(config, tmp_path)
    shown = cli(config, "jobs", "show", job_id).stdout
    line = next(x for x in shown.splitlines() if x.split()[:1] == ["1"])
    assert "suppressed" in line and "unsubscribed from custom" in line
    mails = list(mailbox.Maildir(tmp_path / "mail", create=False))
    assert sorted(m["To"] for m in mails) == ["learner2@example.org", "learner3@example.org"]
    assert all(m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in mails)
    assert all("https://offload.example/unsubscribe/" in m["List-Unsubscribe"] for m in mails)

    bounce(tmp_path, "learner2@example.org")
    listed = cli(config, "suppression", "list").stdout
    assert "suppressed addresses: 1" in listed and "learner2@example.org" in listed
    assert "ses_bounce" in listed and "mailbox full" in listed
    assert "unsubscribed: 1" in listed
    assert re.search(r"user 1\s+custom\s+cli\s+\d{4}-\d\d-\d\d", listed)

    removed = cli(config, "suppression", "remove", "--email", "LEARNER2@example.org").stdout
    assert "taken off the suppression list" in removed
    assert "1 unsubscribe(s) lifted" in cli(config, "suppression", "remove", "1").stdout
    listed = cli(config, "suppression", "list").stdout
    assert "suppressed addresses: 0" in listed and "unsubscribed: 0" in listed


def test_remove_says_what_is_not_there_and_asks_for_a_userid_or_an_email(tmp_path):
    config = unsubscribe_config(tmp_path)
    missing = cli(config, "suppression", "remove", "42", check=False)
    assert missing.returncode == 1 and "user 42 has no unsubscribe" in missing.stderr
    nobody = cli(config, "suppression", "remove", check=False)
    assert nobody.returncode == 2 and "USERID, or --email" in nobody.stderr
    address = cli(config, "suppression", "remove", "--email", "x@example.org", check=False)
    assert address.returncode == 1 and "not on the suppression list" in address.stderr
    kind = cli(config, "suppression", "add", "1", "--kind", "certificates", check=False)
    assert kind.returncode == 2 and "reminders" in kind.stderr


def test_the_cli_offers_exactly_the_kinds_of_mail_a_learner_can_leave():
    from sidecar.cli.suppression import KINDS
    from sidecar.unsubscribe import KINDS as SERVICE_KINDS

    assert KINDS == SERVICE_KINDS


def test_check_says_whether_links_go_out_and_why_not(tmp_path):
    config = unsubscribe_config(tmp_path)
    cli(config, "db", "upgrade")
    assert "ok   unsubscribe: one-click links to https://offload.example/unsubscribe/" in (
        cli(config, "check").stdout
    )
    config.write_text(config.read_text().replace('public_url = "https://offload.example"\n', ""))
    checked = cli(config, "check")  # a warning, not a failure: mail still goes, without links
    line = next(x for x in checked.stdout.splitlines() if "unsubscribe" in x)
    assert line.startswith("skip unsubscribe: bulk mail goes without links")
    assert "server.public_url is not set" in line and "unsubscribe.enabled = false" in line


def test_the_csv_preview_counts_who_is_left_out_and_asks_only_for_the_rest(tmp_path):
    config = unsubscribe_config(tmp_path)
    cli(config, "db", "upgrade")
    cli(config, "suppression", "add", "1", "--kind", "custom")
    bounce(tmp_path, "learner2@example.org")
    path = write_csv(tmp_path / "l.csv", 4)
    out = cli(config, "send", "csv", str(path), *message_args(tmp_path), "--yes").stdout
    assert "2 will not be sent: suppressed address (1), unsubscribed from custom (1)" in out
    assert "  2 to send" in out
    assert re.search(r"job [0-9a-f-]{36}: 2 to send in 1 batches, .*, 2 suppressed", out)


def test_an_idn_address_bounced_in_xn_form_is_removed_in_unicode_form(tmp_path):
    config = unsubscribe_config(tmp_path)
    cli(config, "suppression", "list")  # creates the database
    bounce(tmp_path, "joe@xn--mller-kva.de")  # the form SES reports: the form we send
    removed = cli(config, "suppression", "remove", "--email", "joe@müller.de").stdout
    assert "joe@müller.de: taken off the suppression list" in removed
    assert "suppressed addresses: 0" in cli(config, "suppression", "list").stdout
