"""Real processes: the `moodle-offload` CLI and daemon, an aiosmtpd server, NOTIFY_SOCKET."""

import os
import socket
import subprocess
import sys
import threading
from email import message_from_bytes
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parents[2]


class RecordingHandler:
    """Keeps (recipient, Message-ID) of every accepted message, and its bytes."""

    def __init__(self):
        self.seen: list[tuple[str, str]] = []
        self.messages: list[bytes] = []  # every accepted message as it came
        self.lock = threading.Lock()
        self.count = threading.Semaphore(0)

    async def handle_DATA(self, server, session, envelope):
        msg = message_from_bytes(envelope.original_content or envelope.content)
        with self.lock:
            self.messages.append(envelope.original_content or envelope.content)
            for rcpt in envelope.rcpt_tos:
                self.seen.append((rcpt, msg["Message-ID"]))
        self.count.release()
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    handler = RecordingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


class Notify:
    """A NOTIFY_SOCKET the test reads, as systemd would."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def wait_for(self, state: str, timeout: float = 60) -> None:
        self.sock.settimeout(timeout)
        while True:
            data = self.sock.recv(4096).decode()
            if state in data.split("\n"):
                return

    def close(self):
        self.sock.close()


def cli_env(config: Path, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["MOODLE_OFFLOAD_CONFIG"] = str(config)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NOTIFY_SOCKET", None)
    env.update(extra or {})
    return env


def cli(config: Path, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        env=cli_env(config),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"moodle-offload {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
        )
    return proc


@pytest.fixture
def start_daemon(tmp_path):
    procs = []

    def start(config: Path) -> subprocess.Popen:
        notify = Notify(tmp_path / f"notify-{len(procs)}.sock")
        log = open(tmp_path / f"daemon-{len(procs)}.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "run"],
            env=cli_env(config, {"NOTIFY_SOCKET": notify.path}),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        procs.append(proc)
        try:
            notify.wait_for("READY=1")
        finally:
            notify.close()
        proc.log_path = tmp_path / f"daemon-{len(procs) - 1}.log"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def write_config(
    tmp_path: Path, *, smtp_port: int | None = None, db_url: str | None = None, **local
) -> Path:
    lines = [
        "[database]",
        f'url = "{db_url or f"sqlite:///{tmp_path}/offload.db"}"',
        "[server]",
        f'listen = "127.0.0.1:{free_port()}"',
        "[security]",
        'callback_secrets = ["test-secret"]',
        "[offload.retry]",
        "max_attempts = 3",
        "backoff = [1, 1, 1]",
        "[providers.local]",
        'from = "Academy <noreply@academy.example>"',
        f'certificate_dir = "{tmp_path}/certificates"',
    ]
    if smtp_port:
        lines += ['smtp_host = "127.0.0.1"', f"smtp_port = {smtp_port}", 'smtp_security = "none"']
    else:
        lines.append(f'maildir = "{tmp_path}/mail"')
    for key, value in local.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_csv(path: Path, n: int, start: int = 1) -> Path:
    rows = ["userid,email,firstname,lastname"]
    rows += [f"{i},learner{i}@example.org,First{i},Last{i}" for i in range(start, start + n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def message_args(tmp_path: Path) -> list[str]:
    """Options of `send csv` for the custom template with a short message."""
    body = tmp_path / "message.txt"
    body.write_text("Dear {{ learner.firstname }},\n\nplease finish your course.\n")
    return ["--subject", "A reminder for {{ learner.firstname }}", "--message-file", str(body)]
