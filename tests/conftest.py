"""Shared fixtures: the ledger on SQLite, PostgreSQL and MariaDB; a controllable clock; moto."""

import os
from datetime import datetime, timedelta

import pytest

from sidecar.db import migrations
from sidecar.db.connect import open_database
from sidecar.db.models import ALL_MODELS
from tests.browser import browser, open_page, page, pytest_runtest_makereport  # noqa: F401
from tests.motoserver import AWS_ENV, AWS_UNSET, moto_process

DB_ENV = {
    "postgres": "MOODLE_OFFLOAD_TEST_POSTGRES_URL",
    "mariadb": "MOODLE_OFFLOAD_TEST_MARIADB_URL",
}


def database_url(kind: str, tmp_path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    url = os.environ.get(DB_ENV[kind])
    if not url:
        pytest.skip(f"{DB_ENV[kind]} is not set: no {kind} server to test against")
    return url


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def db_url(request, tmp_path):
    """A database URL with an empty, fully migrated schema, for each backend."""
    url = database_url(request.param, tmp_path)
    db = open_database(url)
    db.drop_tables(list(ALL_MODELS), safe=True)
    migrations.upgrade(db)
    db.close()
    yield url
    db = open_database(url)
    if request.param != "sqlite":
        db.drop_tables(list(ALL_MODELS), safe=True)
    db.close()


@pytest.fixture
def db(db_url):
    database = open_database(db_url)
    database.connect(reuse_if_open=True)
    yield database
    database.close()


class Clock:
    """A clock tests move by hand: naive UTC like the ledger."""

    def __init__(self, start: datetime = datetime(2025, 11, 18, 12, 0, 0)):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return Clock()


def schedule_row(courseid: int, **over) -> dict:
    """A raw companion schedule row as Moodle returns it: a daily 09:00 reminder to every
    participant, stopped by course completion; `over` changes any key."""
    row = dict(
        id=1, name="Daily reminder", enabled=1, companyid=0, courseid=courseid,
        frequency="daily", custom_interval=0, timeofday=9 * 3600, weekday=1, monthday=1,
        action_type="email", cloud_preference="auto", suppresstarget=0,
        suppress_course_completion=1, audience="enrolled", inactive_days=0,
        template_id="reminder_v1", subject="", timemodified=1764547200,
    )  # fmt: skip
    row.update(over)
    return row


@pytest.fixture(scope="session")
def moto_server():
    """The endpoint URL of one moto server process for the whole session.

    Its state lives as long as the session: name queues, buckets and tables uniquely.
    """
    with moto_process() as url:
        yield url


@pytest.fixture
def moto(moto_server, monkeypatch):
    """moto's endpoint URL, with dummy credentials in the environment (never ~/.aws) and
    no proxy, so no traffic leaves 127.0.0.1."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    for name in AWS_UNSET:
        monkeypatch.delenv(name, raising=False)
    return moto_server
