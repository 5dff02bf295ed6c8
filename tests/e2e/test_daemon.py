"""The daemon as a real process: crash safety, graceful stop, reload."""

import signal
import time
from collections import Counter, defaultdict

import pytest

from sidecar.db.connect import open_database
from sidecar.db.models import Job, Recipient

from .conftest import cli, message_args, write_config, write_csv

pytestmark = pytest.mark.slow


def ledger(tmp_path):
    db = open_database(f"sqlite:///{tmp_path}/offload.db")
    db.connect(reuse_if_open=True)
    return db


def wait_until(predicate, timeout=120, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def job_status(tmp_path):
    db = ledger(tmp_path)
    try:
        job = Job.select().first()
        return job.status if job else None
    finally:
        db.close()


def test_sigkill_mid_delivery_loses_nobody_and_repeats_only_the_message_in_flight(
    tmp_path, smtp, start_daemon
):
    config = write_config(tmp_path, smtp_port=smtp.port)
    learners = write_csv(tmp_path / "l.csv", 2000)
    cli(config, "send", "csv", str(learners), *message_args(tmp_path), "--yes")

    daemon = start_daemon(config)
    wait_until(lambda: len(smtp.seen) >= 400, timeout=120, interval=0.01)
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(timeout=30)
    seen_at_kill = len(smtp.seen)
    assert seen_at_kill < 2000, "the kill came after delivery finished: nothing was tested"

    again = start_daemon(config)
    wait_until(lambda: job_status(tmp_path) == "completed", timeout=180)
    again.send_signal(signal.SIGTERM)
    assert again.wait(timeout=60) == 0

    db = ledger(tmp_path)
    statuses = Counter(r.status for r in Recipient.select())
    db.close()
    assert statuses == {"sent": 2000}
    per_address = defaultdict(list)
    for rcpt, message_id in smtp.seen:
        per_address[rcpt].append(message_id)
    assert len(per_address) == 2000
    twice = {a: ids for a, ids in per_address.items() if len(ids) > 1}
    assert len(twice) <= 1, f"more than the one message in flight was repeated: {sorted(twice)[:5]}"
    for ids in twice.values():
        assert len(set(ids)) == 1, "a repeated message must carry the same Message-ID"


def test_sigterm_mid_job_exits_0_and_keeps_every_recipient(tmp_path, smtp, start_daemon):
    config = write_config(tmp_path, smtp_port=smtp.port, rate_per_second=50)
    learners = write_csv(tmp_path / "l.csv", 600)
    cli(config, "send", "csv", str(learners), *message_args(tmp_path), "--yes")
    daemon = start_daemon(config)
    wait_until(lambda: len(smtp.seen) >= 20, interval=0.01)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0
    db = ledger(tmp_path)
    statuses = Counter(r.status for r in Recipient.select())
    db.close()
    assert sum(statuses.values()) == 600
    assert statuses["sent"] == len(smtp.seen) < 600
    assert statuses["queued"] == 600 - len(smtp.seen)


def test_sighup_with_a_broken_config_keeps_running_on_the_old_one(tmp_path, start_daemon):
    import requests

    config = write_config(tmp_path)
    daemon = start_daemon(config)
    text = config.read_text()
    port = int(text.split('listen = "127.0.0.1:')[1].split('"')[0])
    config.write_text(text.replace("max_attempts = 3", 'max_attempts = "three"'))
    daemon.send_signal(signal.SIGHUP)
    wait_until(lambda: "keeping the running configuration" in daemon.log_path.read_text())
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0
