"""Provider fixtures: moto in server mode (a real HTTP endpoint on 127.0.0.1)."""

import pytest
from moto.server import ThreadedMotoServer


@pytest.fixture(scope="module")
def moto():
    """The endpoint URL of a moto server started once per module, with dummy credentials.

    Credentials and config come from the environment only (never ~/.aws), and no proxy
    is used, so no traffic leaves 127.0.0.1. Queue names must be unique per test: the
    server's state lives for the whole module.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1",
        }.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS"):
            mp.delenv(name, raising=False)
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()
