"""The systemd watchdog against a real daemon and a NOTIFY_SOCKET the test holds: a healthy
daemon keeps sending WATCHDOG=1 (with a STATUS= line), also while its threads wait between
turns and while Moodle is slow but answers; one whose delivery thread, Moodle write-back
thread or schedule job hangs stops, so systemd (WatchdogSec=) would kill and restart it."""

import re
import subprocess
import sys
import time
import urllib.request

import pytest

from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
from tests.e2e.conftest import Notify, cli_env, write_config

#: what systemd passes for WatchdogSec=1: pings are due every half second
WATCHDOG_USEC = "1000000"


@pytest.fixture
def daemon(tmp_path):
    procs = []

    def start(extra: dict, moodle: str = "") -> tuple[subprocess.Popen, Notify]:
        config = write_config(tmp_path)
        config.write_text(config.read_text() + moodle)
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


@pytest.fixture
def moodle():
    site = generate_site(SiteSpec(seed=5, learners=5, courses=1, companies=1))
    site.schedules[:] = []
    with SandboxServer(site) as server:
        server.site = site
        yield server


def moodle_config(server, timeout: float) -> str:
    """[moodle] with one try a call, so a request may take 2 * timeout (connect, answer):
    the watchdog allows that much; schedules synced every 10 s and checked every 2 s."""
    return (f'[moodle]\nurl = "{server.url}"\ntoken = "{server.site.token}"\n'
            f"timeout = {timeout}\nretry_attempts = 1\n"
            "[schedules]\nsync_interval = 10\ntick_interval = 2\n")  # fmt: skip


def wait_for_line(path, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{log}"
        time.sleep(0.1)
    return log


def drain(notify: Notify) -> None:
    """Drop what the daemon sent before now."""
    notify.sock.setblocking(False)
    try:
        while notify.sock.recv(4096):
            pass
    except BlockingIOError:
        pass
    finally:
        notify.sock.setblocking(True)


def test_threads_waiting_and_a_slow_but_live_moodle_keep_the_pings(daemon, moodle, tmp_path):
    # the schedule sync waits 3 s for Moodle (timeout 5 s): longer than the watchdog's 1 s
    moodle.site.latency_by_function["local_manireports_get_schedules"] = 3.0
    proc, notify = daemon({}, moodle=moodle_config(moodle, timeout=5))
    got = messages(notify, 8.0)
    log = (tmp_path / "daemon.log").read_text()
    assert "schedule sync moodle" in log, log  # the slow sync ended within the window
    # by now the write-back thread has slept 5 s between turns, the schedule jobs have
    # waited for their next run and the alerts loop for its minute: none was taken for a
    # wedge
    assert "watchdog:" not in log, log
    assert len(pings(got, after=6.0)) >= 3, got
    assert proc.poll() is None


@pytest.mark.parametrize(
    "point, thread",
    [
        ("writeback.run", "write-back"),
        ("schedules.sync", "schedule-sync"),
        ("schedules.tick", "schedule-tick"),
    ],
)
def test_a_hung_moodle_thread_or_schedule_job_stops_the_pings(daemon, moodle, tmp_path,
                                                              point, thread):  # fmt: skip
    proc, notify = daemon({"MOODLE_OFFLOAD_HANG_AT": point},
                          moodle=moodle_config(moodle, timeout=1))  # fmt: skip
    # past its Moodle request budget (2 s) and one watchdog interval, the daemon says so
    log = wait_for_line(tmp_path / "daemon.log", f"watchdog: {thread} (no progress for")
    drain(notify)
    assert pings(messages(notify, 3.0)) == []  # and stays silent
    assert proc.poll() is None  # alive but silent: what systemd's watchdog kills
    assert "no WATCHDOG=1 sent, systemd restarts the service" in log
