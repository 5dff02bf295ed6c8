"""Fixtures of the sidecar tests."""

import pytest

from sidecar.web.app import make_app
from sidecar.web.server import HttpServer
from tests.sidecar.api_helpers import api  # noqa: F401 - the JSON API tests' fixture


@pytest.fixture
def serve_app():
    """`serve_app(**kw)` serves `make_app(**kw)` on 127.0.0.1 (a free port) until the test
    ends; returns the server (its `url`)."""
    servers = []

    def start(**kw):
        srv = HttpServer(make_app(**kw), "127.0.0.1", 0)
        srv.start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()
