"""The systemd watchdog against a real daemon and a NOTIFY_SOCKET the test holds: a healthy
daemon keeps sending WATCHDOG=1 (with a STATUS= line); one whose delivery thread hangs
stops, so systemd (WatchdogSec=) would kill and restart it."""

import re
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.e2e.conftest import Notify, cli_env, write_config

#: what systemd passes for WatchdogSec=1: pings are due every half second
WATCHDOG_USEC = "1000000"


@pytest.fixture
def daemon(tmp_path):
    procs = []

    def start(extra: dict) -> tuple[subprocess.Popen, Notify]:
        config = write_config(tmp_path)
        notify = Notify(tmp_path / f"notify-{len(procs)}.sock")
        env = cli_env(config, {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": WATCHDOG_USEC})
        proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "run"],
            env={**env, **extra},
            stdout=open(tmp_path / "daemon.log", "w"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        procs.append((proc, notify))
        notify.wait_for("READY=1")
        proc.listen = re.search(r'listen = "([^"]+)"', config.read_text()).group(1)
        return proc, notify

    yield start
    for proc, notify in procs:
        proc.kill()
        proc.wait()
        notify.close()


def messages(notify: Notify, seconds: float) -> list[tuple[float, str]]:
    """Every datagram for `seconds` from now, with the time it came (seconds from now)."""
    start = time.monotonic()
    out = []
    while (left := seconds - (time.monotonic() - start)) > 0:
        notify.sock.settimeout(left)
        try:
            data = notify.sock.recv(4096).decode()
        except TimeoutError:
            break
        out.append((time.monotonic() - start, data))
    return out


def pings(got: list[tuple[float, str]], after: float = 0.0) -> list[str]:
    return [data for at, data in got if at >= after and "WATCHDOG=1" in data.split("\n")]


def test_a_healthy_daemon_keeps_pinging_with_a_status_line(daemon):
    proc, notify = daemon({})
    # READY=1 came only once the database answered and the HTTP port was bound
    with urllib.request.urlopen(f"http://{proc.listen}/healthz", timeout=5) as answer:
        assert answer.status == 200
    got = messages(notify, 4.0)
    late = pings(got, after=2.0)
    assert len(late) >= 3, got  # every 0.5 s, on and on
    assert "STATUS=0 jobs running; no schedule sync yet" in late[-1].split("\n")
    assert proc.poll() is None


def test_a_wedged_delivery_thread_stops_the_pings(daemon, tmp_path):
    proc, notify = daemon({"MOODLE_OFFLOAD_HANG_AT": "delivery.run"})
    got = messages(notify, 4.0)
    # within one watchdog interval (1 s) of the hang the pings stop, and stay stopped
    assert pings(got, after=1.5) == [], got
    assert proc.poll() is None  # alive but silent: what systemd's watchdog kills
    log = (tmp_path / "daemon.log").read_text()
    assert "watchdog: delivery (no progress for" in log
    assert log.count("no WATCHDOG=1 sent") == 1  # said once, not every half second
