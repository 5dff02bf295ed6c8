"""A whole run's logs, as journald would keep them: `[logging] format = "json"` gives one
JSON object a line, and no secret the configuration holds is anywhere in them, even at
DEBUG while the daemon syncs with Moodle, delivers a job, answers callbacks good and bad
and refuses a metrics scrape with the wrong token."""

import json
import signal
import time

import requests
from cryptography.fernet import Fernet

from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
from providers.message import make_callback
from providers.signing import sign

from .conftest import cli, free_port, message_args, write_csv


def test_a_whole_run_logs_json_lines_and_no_secret(tmp_path, start_daemon):
    site = generate_site(SiteSpec(seed=3, learners=10, courses=1, companies=0))
    secrets = {
        "callback": "cb-secret-3f9a1c77e2",
        "encryption": Fernet.generate_key().decode(),
        "metrics": "metrics-token-58c0d2b4",
    }
    port = free_port()
    with SandboxServer(site) as moodle:
        secrets["moodle"] = site.token
        config = tmp_path / "config.toml"
        config.write_text(
            f'[database]\nurl = "sqlite:///{tmp_path}/offload.db"\n'
            f'[server]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n'
            f'[security]\ncallback_secrets = ["{secrets["callback"]}"]\n'
            f'encryption_key = "{secrets["encryption"]}"\n'
            f'[moodle]\nurl = "{moodle.url}"\ntoken = "{site.token}"\nretry_attempts = 1\n'
            f'[metrics]\ntoken = "{secrets["metrics"]}"\n'
            '[logging]\nformat = "json"\nlevel = "DEBUG"\n'
            '[providers.local]\nfrom = "Academy <noreply@academy.example>"\n'
            f'maildir = "{tmp_path}/mail"\ncertificate_dir = "{tmp_path}/certs"\n'
        )
        cli(config, "send", "csv", str(write_csv(tmp_path / "l.csv", 5)),
            *message_args(tmp_path), "--yes")  # fmt: skip
        daemon = start_daemon(config)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list((tmp_path / "mail" / "new").glob("*"))) < 5:
            time.sleep(0.2)
        updates = [{"userid": 1, "status": "sent"}]
        body = make_callback("00000000-0000-4000-8000-000000000001",
                             "00000000-0000-4000-8000-000000000002", updates,
                             timestamp=int(time.time()))  # fmt: skip
        kind = {"Content-Type": "application/json"}
        signed = {**kind, "X-Signature": sign(secrets["callback"], body)}
        forged = {**signed, "X-Signature": "0" * 64}
        good = requests.post(f"{base}/callback", data=body, timeout=10, headers=signed)
        bad = requests.post(f"{base}/callback", data=body, timeout=10, headers=forged)
        wrong = requests.get(f"{base}/metrics?token={secrets['metrics']}", timeout=10,
                             headers={"Authorization": "Bearer not-it"})  # fmt: skip
        assert (good.status_code, bad.status_code, wrong.status_code) == (404, 401, 401)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    log = daemon.log_path.read_text(encoding="utf-8")
    lines = [line for line in log.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert len(events) > 20
    assert all({"time", "level", "logger", "message"} <= set(e) for e in events)
    assert any(e["level"] == "DEBUG" for e in events)
    assert any("listening on" in e["message"] for e in events)
    assert len(list((tmp_path / "mail" / "new").glob("*"))) == 5
    for name, value in secrets.items():
        assert value not in log, f"the {name} secret is in the daemon's log"
