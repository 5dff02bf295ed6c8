"""Two `moodle-offload run` processes on one database both reach the daily report's time:
the admins get one report each, through the local route, to a real SMTP server."""

import subprocess
import sys
import time
from datetime import UTC, datetime
from email import message_from_bytes, policy

from tests.e2e.conftest import Notify, cli_env, write_config

ADMINS = ["ops@example.org", "boss@example.org"]


def start_two(tmp_path, configs):
    """Both daemons started at once (not one after the other's READY), then awaited."""
    notifies = [Notify(tmp_path / f"notify-{i}.sock") for i in range(len(configs))]
    procs = []
    for i, (config, notify) in enumerate(zip(configs, notifies, strict=True)):
        log = open(tmp_path / f"daemon-{i}.log", "w")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "sidecar", "run"],
                env=cli_env(config, {"NOTIFY_SOCKET": notify.path}),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        )
    try:
        for notify in notifies:
            notify.wait_for("READY=1")
    finally:
        for notify in notifies:
            notify.close()
    return procs


def test_two_daemons_on_one_database_send_one_daily_report(tmp_path, smtp, db_url):
    configs = []
    for i in range(2):
        home = tmp_path / f"d{i}"
        home.mkdir()
        path = write_config(home, smtp_port=smtp.port, db_url=db_url)
        path.write_text(
            path.read_text()
            + "\n[alerts]\n"
            + f"admin_emails = {ADMINS!r}\n".replace("'", '"')
            + 'daily_report_at = "00:00"\n'  # due at once, whatever the time of the run
        )
        configs.append(path)
    procs = start_two(tmp_path, configs)
    try:
        end = time.monotonic() + 60
        while len(smtp.seen) < len(ADMINS) and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(3)  # both daemons' delivery loops poll every second: time for a second
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
    logs = "".join((tmp_path / f"daemon-{i}.log").read_text() for i in range(2))
    assert sorted(r for r, _ in smtp.seen) == sorted(ADMINS), logs
    assert logs.count("daily report for") == 1, logs  # one daemon made it
    day = datetime.now(UTC).date().isoformat()
    msg = message_from_bytes(smtp.messages[0], policy=policy.default)
    assert msg["Subject"].startswith(f"moodle-offload daily report {day}: 0 jobs, 0 failures")
    text = msg.get_body(("plain",)).get_content()
    assert "Certificates issued: 0" in text and "Dashboard: http://127.0.0.1:" in text
    html = msg.get_body(("html",)).get_content()
    assert "Open the dashboard" in html
