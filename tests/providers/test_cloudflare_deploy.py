"""providers/cloudflare/deploy.sh, offline: syntax, shellcheck, --help, secrets never taken
as arguments, and the queues and bucket it creates are the ones the Worker binds."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "providers" / "cloudflare" / "deploy.sh"
WRANGLER = ROOT / "providers" / "cloudflare" / "worker" / "wrangler.jsonc"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(DEPLOY), *args], capture_output=True, text=True)


def test_deploy_script_parses():
    assert subprocess.run(["bash", "-n", str(DEPLOY)]).returncode == 0


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_deploy_script_passes_shellcheck():
    result = subprocess.run(["shellcheck", str(DEPLOY)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_deploy_script_help_exits_0_and_names_the_secret_sources():
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for name in ("--callback-secret-file", "CALLBACK_SECRET", "EMAIL_API_KEY",
                 "CLOUDFLARE_API_TOKEN", "[providers.cloudflare]"):  # fmt: skip
        assert name in result.stdout


@pytest.mark.parametrize(
    "args",
    [["--callback-secret", "{s}"], ["--callback-secret={s}"], ["--email-api-key", "{s}"]],
)
def test_deploy_script_refuses_a_secret_as_an_argument_without_echoing_it(args):
    secret = "do-not-echo-0123456789abcdefghijklmnopqrstuv"
    result = run(*[a.format(s=secret) for a in args])
    assert result.returncode == 1
    assert "-file PATH" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_deploy_script_creates_the_queues_and_bucket_the_worker_binds():
    script = DEPLOY.read_text()
    config = json.loads(re.sub(r"^\s*//.*$", "", WRANGLER.read_text(), flags=re.M))
    queues = {q["queue"] for q in config["queues"]["producers"]}
    queues |= {q["dead_letter_queue"] for q in config["queues"]["consumers"]}
    created = set(re.search(r"^queues=\(([^)]*)\)", script, re.M).group(1).split())
    assert created == queues
    bucket = re.search(r'^bucket="([^"]+)"', script, re.M).group(1)
    assert [b["bucket_name"] for b in config["r2_buckets"]] == [bucket]
