"""Fixtures of the sandbox tests."""

import pytest

from tests.moodle_ws.test_sandbox import make_moodle


@pytest.fixture
def m():
    """A sandbox with four courses over HTTP, with a `call(function, **params)` helper."""
    moodle = make_moodle(courses=4)
    yield moodle
    moodle.server.stop()
