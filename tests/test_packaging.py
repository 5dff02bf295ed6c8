"""packaging/: the systemd unit, sysusers and tmpfiles snippets, checked by systemd's own tools.

Without systemd's binaries (`apt-get install systemd`) these tests SKIP; CI (`.ci/run`)
installs them and sets MOODLE_OFFLOAD_REQUIRE_SYSTEMD=1, which turns a skip into a failure.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
UNIT = PACKAGING / "moodle-offload.service"
REQUIRE_ENV = "MOODLE_OFFLOAD_REQUIRE_SYSTEMD"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} not found (apt-get install systemd)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1: systemd's tools are required here)")
        pytest.skip(reason)
    return path


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` on the unit, its ExecStart pointed at an executable that
    exists here (verify checks it); systemd reports a bad line on stderr, exit code 0."""
    unit = tmp_path / "moodle-offload.service"
    unit.write_text(text.replace("/usr/local/bin/moodle-offload", "/bin/true"))
    return subprocess.run(
        [tool("systemd-analyze"), "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )


def test_the_unit_passes_systemd_analyze_verify_with_nothing_to_say(tmp_path):
    result = verify(tmp_path, UNIT.read_text())
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == "", result.stderr


def test_verify_would_catch_a_mistyped_line(tmp_path):
    """The check above can fail: systemd names the line it could not parse."""
    result = verify(tmp_path, UNIT.read_text().replace("Type=notify", "Type=notfy"))
    assert "Failed to parse service type" in result.stderr


def test_the_unit_is_notify_with_watchdog_reload_credentials_and_hardening():
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"]
    assert int(d["WatchdogSec"][0]) >= 60
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # sidecar.daemon: SIGHUP reloads
    assert d["StateDirectory"] == ["moodle-offload"]
    assert {c.split(":")[0] for c in d["LoadCredential"]} >= {"moodle-token", "callback-secrets"}
    assert d["ProtectSystem"] == ["strict"]
    assert d["ProtectHome"] == ["yes"]
    assert d["PrivateTmp"] == ["yes"]
    assert d["NoNewPrivileges"] == ["yes"]
    assert d["CapabilityBoundingSet"] == [""]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert d["User"] == ["moodle-offload"]


@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles sets owners: needs root")
def test_sysusers_and_tmpfiles_make_the_user_and_its_folders(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    sysusers = PACKAGING / "moodle-offload.sysusers"
    subprocess.run([tool("systemd-sysusers"), f"--root={root}", str(sysusers)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    entry = next(
        line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
        if line.startswith("moodle-offload:")
    )
    uid, gid, shell = int(entry[2]), int(entry[3]), entry[6]
    assert shell == "/usr/sbin/nologin"
    tmpfiles = PACKAGING / "moodle-offload.tmpfiles"
    subprocess.run([tool("systemd-tmpfiles"), f"--root={root}", "--create", str(tmpfiles)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    state = (root / "var/lib/moodle-offload").stat()
    assert (state.st_uid, state.st_gid, state.st_mode & 0o777) == (uid, gid, 0o750)
    assert (root / "var/lib/moodle-offload/certificates").is_dir()
    etc = (root / "etc/moodle-offload").stat()
    assert (etc.st_uid, etc.st_gid, etc.st_mode & 0o777) == (0, gid, 0o750)
