"""Issued certificates written back to Moodle ({prefix}_record_certificate), against the
sandbox over real HTTP, on every database backend: once each, whatever the number of runs
or restarts; tried again only when Moodle cannot have run the call."""

import socket
import time
from datetime import timedelta

import pytest

from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
from sidecar import certificates, jobs
from sidecar.config import Config
from sidecar.db import store
from sidecar.db.models import Certificate, Recipient
from sidecar.moodle import open_client
from sidecar.writeback import STALE, WriteBack, pending
from tests.sidecar.api_helpers import audit_events

FUNCTION = "local_manireports_record_certificate"


@pytest.fixture
def site():
    s = generate_site(SiteSpec(seed=5, learners=12, courses=1, companies=0))
    with SandboxServer(s) as server:
        s.server_url = server.url
        yield s


def make_config(db_url: str, url: str, token: str, **moodle) -> Config:
    return Config.model_validate({
        "moodle": {"url": url, "token": token, "retry_attempts": 1, **moodle},
        "database": {"url": db_url},
        "server": {"public_url": "https://offload.example.org"},
    })  # fmt: skip


def writeback(config: Config, clock) -> WriteBack:
    return WriteBack(config, lambda: open_client(config), clock)


def issue(site, clock, n: int, *, sent: bool = True) -> dict[int, str]:
    """A certificate job of the site's first `n` learners of its course, delivered
    (`sent`) or not yet; {userid: code}."""
    course = site.main_course_id
    userids = sorted(site.enrolments[course])[:n]
    people = [jobs.RecipientIn(u, f"u{u}@example.org", "F", "L") for u in userids]
    spec = jobs.JobSpec(type="certificate", template_id="custom", source="test", courseid=course,
                        actions=jobs.Actions(certificate=True))  # fmt: skip
    job = jobs.create_job(spec, people, batch_size=100, now=clock()).job_id
    if sent:
        Recipient.update(status="sent").where(Recipient.job == job).execute()
        store.settle(job, clock())
    issued = certificates.reserve_many(job, userids, course, "local", f"{job}/", clock())
    return {uid: c.code for uid, c in issued.items()}


def states() -> dict[str, str | None]:
    return {c.code: c.record_state for c in Certificate.select()}


def test_each_delivered_certificate_is_recorded_once_whatever_the_runs_and_restarts(
    site, db, db_url, clock
):
    config = make_config(db_url, site.server_url, site.token)
    codes = issue(site, clock, 5)
    undelivered = issue(site, clock, 2, sent=False)  # not issued yet: not recorded
    wb = writeback(config, clock)
    first = wb.run_once()
    assert first.recorded == 5 and not first.unknown
    assert wb.run_once().recorded == 0  # the loop again
    assert writeback(config, clock).run_once().recorded == 0  # a restarted daemon
    recorded = site.recorded_certificates
    assert len(recorded) == 5
    assert sorted((r["userid"], r["url"]) for r in recorded) == sorted(
        (u, f"https://offload.example.org/certificates/{c}") for u, c in codes.items()
    )
    assert {r["courseid"] for r in recorded} == {site.main_course_id}
    job_id = Certificate.get_by_id(codes[min(codes)]).job_id
    assert {r["jobid"] for r in recorded} == {job_id}
    assert all(states()[c] == "recorded" for c in codes.values())
    assert all(states()[c] is None for c in undelivered.values())
    # delivered later: recorded then, once
    Recipient.update(status="sent").execute()
    assert writeback(config, clock).run_once().recorded == 2
    assert len(site.recorded_certificates) == 7


def test_not_retried_after_a_5xx_or_a_timeout_where_it_may_have_run(site, db, db_url, clock):
    config = make_config(db_url, site.server_url, site.token, timeout=0.5)
    wb = writeback(config, clock)
    (answered_503,) = issue(site, clock, 1).values()
    site.fail_next(FUNCTION, 1, 503)  # HTTP 503: Moodle may have run it
    assert wb.run_once().unknown == 1
    (timed_out,) = issue(site, clock, 1).values()
    site.latency_by_function[FUNCTION] = 1.0  # no answer within moodle.timeout...
    assert wb.run_once().unknown == 1
    wait_until(lambda: len(site.recorded_certificates) == 1)  # ...but Moodle ran it
    site.latency_by_function.clear()
    assert wb.run_once().recorded == 0 and writeback(config, clock).run_once().recorded == 0
    assert states() == {answered_503: "unknown", timed_out: "unknown"}
    assert len(site.recorded_certificates) == 1  # not twice
    unknown = [d for _, d in audit_events("certificate_record_unknown")]
    assert len(unknown) == 2 and "HTTP 503" in unknown[0] and "no answer" in unknown[1]


def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_retried_when_moodle_cannot_have_run_it(site, db, db_url, clock):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    codes = issue(site, clock, 2)
    down = writeback(make_config(db_url, closed, site.token), clock)
    down._has_function = (clock(), True)  # known from before Moodle went away
    tally = down.run_once()
    assert tally.deferred == 1 and tally.recorded == 0  # stops at the first: Moodle is down
    assert set(states().values()) == {None}
    site.maintenance = True  # refused before anything runs: tried again too
    up = writeback(make_config(db_url, site.server_url, site.token), clock)
    up._has_function = (clock(), True)
    assert up.run_once().deferred == 1
    site.maintenance = False
    assert up.run_once().recorded == 2
    assert sorted(r["userid"] for r in site.recorded_certificates) == sorted(codes)


def test_a_claim_left_by_a_daemon_stopped_mid_call_becomes_unknown(site, db, db_url, clock):
    config = make_config(db_url, site.server_url, site.token)
    codes = issue(site, clock, 1)
    (code,) = codes.values()
    Certificate.update(record_state="sending", record_at=clock()).execute()  # the crash
    wb = writeback(config, clock)
    assert wb.run_once().recorded == 0 and states() == {code: "sending"}
    clock.advance((STALE + timedelta(seconds=1)).total_seconds())
    wb.run_once()
    assert states() == {code: "unknown"} and site.recorded_certificates == []
    assert len(audit_events("certificate_record_unknown")) == 1


def test_a_site_without_the_function_is_skipped_silently(site, db, db_url, clock):
    config = make_config(db_url, site.server_url, site.token)
    site.remove_function(FUNCTION)
    issue(site, clock, 2)
    tally = writeback(config, clock).run_once()
    assert tally.skipped == f"{FUNCTION} is not in the token's service"
    assert site.recorded_certificates == [] and len(pending(10)) == 2


def test_each_request_to_moodle_tells_the_watchdog_how_long_the_next_may_take(
    site, db, db_url, clock
):
    # one try a call, 4 s timeout: a connect and an answer of 4 s each
    config = make_config(db_url, site.server_url, site.token, timeout=4)
    issue(site, clock, 3)
    told: list[float] = []
    wb = WriteBack(config, lambda: open_client(config, progress=told.append), clock)
    assert wb.run_once().recorded == 3
    assert told == [8.0] * 4  # the site's function list, then the three certificates
