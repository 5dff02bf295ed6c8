"""Learners on internal, reserved and internationalised domains are mailed, as Moodle mails
them: a schedule run and `send csv`, delivered to a real SMTP server."""

import pytest

from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site

from ..conftest import schedule_row
from .conftest import cli, message_args, write_config

# Moodle's validate_email() accepts all of these; the site's relay decides what it delivers.
DOMAINS = ["corp.local", "example.test", "intranet.internal", "bücher.example"]
# What the relay is asked for: the IDN domain in its ASCII form.
ON_THE_WIRE = ["corp.local", "example.test", "intranet.internal", "xn--bcher-kva.example"]


@pytest.fixture
def moodle():
    site = generate_site(SiteSpec(seed=5, learners=30, courses=2, companies=1))
    for i, user in enumerate(sorted(site.users.values(), key=lambda u: u.id)):
        user.email = f"learner{user.id}@{DOMAINS[i % len(DOMAINS)]}"
    with SandboxServer(site) as server:
        server.site = site
        yield server


def test_a_schedule_run_mails_learners_on_local_test_internal_and_idn_domains(
    tmp_path, moodle, smtp
):
    site = moodle.site
    site.schedules[:] = [schedule_row(site.main_course_id)]
    config = write_config(tmp_path, smtp_port=smtp.port)
    config.write_text(
        config.read_text() + f'[moodle]\nurl = "{moodle.url}"\ntoken = "{site.token}"\n'
        '[schedules]\ntimezone = "UTC"\n'
    )
    cli(config, "schedules", "sync")
    ran = cli(config, "schedules", "run", "1", "--deliver").stdout
    assert ": done:" in ran, ran
    rcpts = [rcpt for rcpt, _ in smtp.seen]
    assert rcpts and {r.split("@")[1] for r in rcpts} == set(ON_THE_WIRE)
    job_id = cli(config, "jobs", "list").stdout.splitlines()[1].split()[0]
    shown = cli(config, "jobs", "show", job_id).stdout
    assert f"sent {len(rcpts)}" in shown and "invalid address" not in shown


def test_send_csv_mails_learners_on_local_test_internal_and_idn_domains(tmp_path, smtp):
    config = write_config(tmp_path, smtp_port=smtp.port)
    path = tmp_path / "l.csv"
    path.write_text(
        "userid,email,firstname,lastname\n"
        + "".join(f"{i + 1},jane{i + 1}@{d},Jane,Doe\n" for i, d in enumerate(DOMAINS))
        # Moodle refuses non-ASCII before the @ and never mails it: neither do we
        + "9,zoë@example.org,Zoë,Doe\n",
        encoding="utf-8",
    )
    sent = cli(config, "send", "csv", str(path), *message_args(tmp_path), "--yes", "--deliver",
               "--skip-invalid")  # fmt: skip
    assert "4 valid rows, 1 invalid" in sent.stdout and "delivered: sent 4" in sent.stdout
    assert "zoë@example.org" in sent.stdout and "non-ASCII characters before the @" in sent.stdout
    assert sorted(rcpt for rcpt, _ in smtp.seen) == sorted(
        f"jane{i + 1}@{d}" for i, d in enumerate(ON_THE_WIRE)
    )
