"""moto in server mode as a separate process on 127.0.0.1, for tests and benchmarks.

Run as `python -m tests.motoserver PORT`. The one change to moto's behaviour: its SES
send quota is fixed at 200 a day and 1 a second, far below what a 1,000-recipient test
sends; `MOTO_SES_MAX_24H` and `MOTO_SES_MAX_RATE` set it (a real account's quota is
whatever AWS granted it; the sidecar reads it and plans under 95% of it).
"""

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import requests

#: the environment every boto3 client in tests and benchmarks runs under: dummy
#: credentials, no ~/.aws, no proxy, so no request leaves 127.0.0.1
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
AWS_UNSET = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "HTTPS_PROXY", "HTTP_PROXY")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_process(*, max_24h: int = 1_000_000, max_rate: int = 10_000):
    """Start `python -m tests.motoserver` on a free port; yields its endpoint URL."""
    port = free_port()
    env = {**os.environ, **AWS_ENV, "MOTO_SES_MAX_24H": str(max_24h),
           "MOTO_SES_MAX_RATE": str(max_rate)}  # fmt: skip
    for name in AWS_UNSET:
        env.pop(name, None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.motoserver", str(port)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/moto-api/data.json", timeout=2)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ses_sent(url: str) -> list[dict]:
    """Every message moto's SES has accepted (simple and raw), oldest first."""
    data = requests.get(f"{url}/moto-api/data.json", timeout=30).json().get("ses", {})
    return list(data.get("Message", [])) + list(data.get("RawMessage", []))


def reset(url: str) -> None:
    """Forget every resource and sent message (moto's own reset endpoint)."""
    requests.post(f"{url}/moto-api/reset", timeout=30)


def _main() -> None:
    from moto.server import main
    from moto.ses import models as ses_models

    max_24h = int(os.environ.get("MOTO_SES_MAX_24H", "200"))
    max_rate = int(os.environ.get("MOTO_SES_MAX_RATE", "1"))
    init = ses_models.SESQuota.__init__

    def quota(self, sent: int) -> None:
        init(self, sent)
        self.max24_hour_send = max_24h
        self.max_send_rate = max_rate

    ses_models.SESQuota.__init__ = quota
    main(["-H", "127.0.0.1", "-p", sys.argv[1]])


if __name__ == "__main__":
    _main()
