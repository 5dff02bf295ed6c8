"""Schedules fire on time and exactly once, against the Moodle sandbox over HTTP, on a clock
the test moves (no sleeps), on SQLite, PostgreSQL and MariaDB."""

import math
import threading
from datetime import datetime, timedelta

import pytest

from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
from sidecar import runs, sync
from sidecar.config import Config
from sidecar.db.models import Job, Recipient, ScheduleRun
from sidecar.localrun import deliver_job
from sidecar.moodle import open_client
from sidecar.runtime import Runtime

from ..conftest import Clock, schedule_row

# 09:00 in London is 09:00 UTC in December.
START = datetime(2026, 12, 1, 8, 0, 0)


@pytest.fixture
def site():
    s = generate_site(SiteSpec(seed=11, learners=40, courses=2, companies=1))
    s.schedules[:] = []
    with SandboxServer(s) as server:
        s.server_url = server.url
        yield s


def schedule(site, **over) -> dict:
    return schedule_row(over.pop("courseid", site.main_course_id), **over)


@pytest.fixture
def make_runtime(db_url, tmp_path, site):
    made = []

    def make(clock, *, offload=None, aws=None, moodle=None, companies=(), **schedules_over):
        config = Config.model_validate({
            "companies": list(companies),
            "moodle": {"url": site.server_url, "token": site.token, "retry_attempts": 1,
                       **(moodle or {})},
            "database": {"url": db_url},
            "schedules": {"timezone": "Europe/London", **schedules_over},
            "offload": offload or {},
            **({"security": {"callback_secrets": ["runs-test-secret"]}} if aws else {}),
            "providers": {"local": {"from": "Academy <noreply@academy.example>",
                                    "maildir": str(tmp_path / "mail"),
                                    "certificate_dir": str(tmp_path / "certs")},
                          **({"aws": aws} if aws else {})},
        })  # fmt: skip
        rt = Runtime(config, clock=clock)
        rt.ready_db()
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


def do_sync(rt):
    results = sync.sync_all(rt.config, lambda: open_client(rt.config), rt.clock())
    assert not any(r.error for r in results), results
    return results


def start(site, make_runtime, *rows, **over):
    """The sandbox serving `rows`, a runtime on a clock at START, and a first sync."""
    site.schedules[:] = list(rows)
    clock = Clock(START)
    rt = make_runtime(clock, **over)
    do_sync(rt)
    return clock, rt


def recipients_of(run: ScheduleRun) -> set[int]:
    jobs = [j.id for j in Job.select().where(Job.run_id == run.id)]
    return {r.userid for r in Recipient.select().where(Recipient.job.in_(jobs))} if jobs else set()


def completed_in(site) -> set[int]:
    return {u for u, t in site.course_completions[site.main_course_id].items() if t}


def certificate_schedule(site) -> dict:
    return schedule(site, action_type="certificate", audience="completed",
                    suppress_course_completion=0)  # fmt: skip


def test_a_daily_schedule_fires_once_at_its_time_and_again_the_next_day(site, make_runtime):
    clock, rt = start(site, make_runtime, schedule(site))
    runner = runs.Runner(rt)
    clock.now = START.replace(hour=8, minute=59, second=59)
    assert runner.tick() == []
    clock.now = START.replace(hour=9, minute=0, second=20)
    [first] = runner.tick()
    assert first.status == "done" and first.due_at == START.replace(hour=9)
    for minutes in (1, 5, 60, 14 * 60):
        clock.advance(minutes * 60)
        assert runner.tick() == []
    clock.now = START.replace(hour=9) + timedelta(days=1, seconds=5)
    [second] = runner.tick()
    assert second.due_at == START.replace(hour=9) + timedelta(days=1)
    assert ScheduleRun.select().count() == 2
    assert Job.select().count() == 2


def test_a_new_schedule_does_not_fire_for_the_past(site, make_runtime):
    site.schedules[:] = [schedule(site)]
    clock = Clock(START.replace(hour=15))  # first seen after today's 09:00
    rt = make_runtime(clock)
    do_sync(rt)
    assert runs.Runner(rt).tick() == []
    clock.now = START.replace(hour=9) + timedelta(days=1, minutes=1)
    assert [o.status for o in runs.Runner(rt).tick()] == ["done"]


@pytest.mark.parametrize("policy, statuses, jobs", [("run_once", ["done"], 1),
                                                    ("skip", ["skipped"], 0)])  # fmt: skip
def test_after_ten_days_down_a_missed_run_fires_once_or_is_skipped(
    site, make_runtime, policy, statuses, jobs
):
    site.schedules[:] = [schedule(site)]
    clock = Clock(START)
    rt = make_runtime(clock, catch_up=policy)
    do_sync(rt)
    clock.now = START.replace(hour=9, minute=1)
    runs.Runner(rt).tick()
    before = Job.select().count()
    clock.now = START.replace(hour=12) + timedelta(days=10)  # down for ten days
    outcomes = runs.Runner(rt).tick()
    assert [o.status for o in outcomes] == statuses
    assert Job.select().count() - before == jobs
    latest = ScheduleRun.select().order_by(ScheduleRun.due_at.desc()).first()
    assert latest.due_at == START.replace(hour=9) + timedelta(days=10)
    assert latest.missed == 9
    assert runs.Runner(rt).tick() == []


def test_a_schedule_re_enabled_after_a_week_does_not_fire_for_the_week_it_was_off(
    site, make_runtime
):
    clock, rt = start(site, make_runtime, schedule(site))
    clock.now = START.replace(hour=9, minute=1)
    runs.Runner(rt).tick()
    site.schedules[0]["enabled"] = 0
    clock.advance(3600)
    do_sync(rt)
    clock.now = START.replace(hour=12) + timedelta(days=7)
    site.schedules[0]["enabled"] = 1
    do_sync(rt)  # re-enabled at 12:00, after that day's 09:00
    assert runs.Runner(rt).tick() == []
    clock.now = START.replace(hour=9, minute=1) + timedelta(days=8)
    assert [o.status for o in runs.Runner(rt).tick()] == ["done"]
    assert ScheduleRun.select().count() == 2


def test_two_daemons_on_one_database_never_fire_the_same_run_twice(site, make_runtime):
    site.schedules[:] = [schedule(site), schedule(site, id=2, name="Second", timeofday=9 * 3600)]
    clock = Clock(START)
    first, second = make_runtime(clock), make_runtime(clock)
    do_sync(first)
    do_sync(second)
    a, b = runs.Runner(first), runs.Runner(second)
    a.owner, b.owner = "host-a:1", "host-b:2"
    fired: list = []
    for day in range(4):
        clock.now = START.replace(hour=9, second=30) + timedelta(days=day)
        barrier = threading.Barrier(2)

        def tick(runner, barrier=barrier):
            barrier.wait()
            with runner.rt.db.connection_context():
                fired.extend(runner.tick())

        threads = [threading.Thread(target=tick, args=(r,)) for r in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(fired) == 8  # 2 schedules x 4 days, each fired by exactly one daemon
    assert ScheduleRun.select().count() == 8
    assert Job.select().count() == 8
    per_user = {}
    for r in Recipient.select():
        per_user[(r.job_id, r.userid)] = per_user.get((r.job_id, r.userid), 0) + 1
    assert set(per_user.values()) == {1}


def test_course_completion_suppression_uses_completion_fetched_at_fire_time(site, make_runtime):
    clock, rt = start(site, make_runtime, schedule(site))
    clock.now = START.replace(hour=9, minute=1)
    [run1] = runs.Runner(rt).tick()
    mailed = recipients_of(ScheduleRun.get(ScheduleRun.due_at == run1.due_at))
    done = completed_in(site)
    assert mailed and done and not mailed & done
    assert run1.counts["left_out"]["course_completed"] == len(done & _participants(site))
    # A learner completes between this run and the next: the next run must not mail them.
    newly = sorted(mailed)[0]
    site.set_course_completion(site.main_course_id, newly, 1764700000)
    clock.now = START.replace(hour=9, minute=1) + timedelta(days=1)
    [run2] = runs.Runner(rt).tick()
    mailed2 = recipients_of(ScheduleRun.get(ScheduleRun.due_at == run2.due_at))
    assert newly not in mailed2 and not mailed2 & completed_in(site)
    assert mailed2 == mailed - {newly}


def _participants(site) -> set[int]:
    course = site.main_course_id
    now = site.now()
    return {u for u, e in site.enrolments[course].items() if site.is_active_enrolment(e, now)}


def test_activity_suppression_counts_states_1_2_and_3_as_complete(site, make_runtime):
    course = site.main_course_id
    cmid = next(a.id for a in site.course_activities(course) if a.completion)
    learners = sorted(_participants(site) - completed_in(site) - set(site.teacher_ids))[:4]
    for state, userid in enumerate(learners):
        site.set_activity_state(cmid, userid, state)
    clock, rt = start(
        site,
        make_runtime,
        schedule(site, suppress_course_completion=0, suppresstarget=cmid, audience="not_completed"),
    )
    clock.now = START.replace(hour=9, minute=1)
    [run] = runs.Runner(rt).tick()
    mailed = recipients_of(ScheduleRun.get(ScheduleRun.due_at == run.due_at))
    assert learners[0] in mailed  # state 0: not complete
    assert not set(learners[1:]) & mailed  # 1 complete, 2 pass, 3 fail: all complete
    assert run.counts["left_out"]["activity_completed"] >= 3


def test_certificates_are_issued_once_per_course(site, make_runtime):
    clock, rt = start(site, make_runtime, certificate_schedule(site))
    clock.now = START.replace(hour=9, minute=1)
    [run1] = runs.Runner(rt).tick()
    assert run1.counts["certificate"] == len(completed_in(site) & _participants(site)) > 0
    for job_id in run1.jobs:
        deliver_job(rt, job_id, show_progress=False)
    clock.now += timedelta(days=1)
    [run2] = runs.Runner(rt).tick()
    assert run2.counts["certificate"] == 0 and run2.jobs == []
    assert run2.counts["left_out"]["already_issued"] == run1.counts["certificate"]


def test_certificate_mode_local_keeps_certificates_here_and_sends_other_emails_by_the_cloud(
    site, make_runtime, moto
):
    import uuid

    import boto3

    sqs = boto3.client("sqs", region_name="eu-west-1", endpoint_url=moto)
    queue = sqs.create_queue(QueueName=f"jobs-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.close()
    aws = {"region": "eu-west-1", "sqs_queue_url": queue, "s3_bucket": "certs",
           "ses_from": "noreply@academy.example", "endpoint_url": moto}  # fmt: skip
    offload = {"enabled": True, "provider": "aws", "threshold": 1, "certificate_mode": "local"}
    row = schedule(site, action_type="both", suppress_course_completion=0)
    clock, rt = start(site, make_runtime, row, offload=offload, aws=aws)
    clock.now = START.replace(hour=9, minute=1)
    [run] = runs.Runner(rt).tick()

    by_type = {j.type: j for j in Job.select().where(Job.id.in_(run.jobs))}
    certified = by_type.pop("certificate")
    assert certified.route == "local"
    assert "certificate_mode = local: certificates are rendered here" in certified.route_reason
    [mail] = by_type.values()
    assert mail.route == "aws" and "certificate_mode" not in mail.route_reason
    assert run.counts["certificates_rendered"] == "local"


def test_a_certificate_job_not_yet_delivered_is_not_queued_again(site, make_runtime):
    clock, rt = start(site, make_runtime, certificate_schedule(site))
    clock.now = START.replace(hour=9, minute=1)
    [run1] = runs.Runner(rt).tick()
    clock.now += timedelta(days=1)  # the daemon was busy: nothing delivered yet
    [run2] = runs.Runner(rt).tick()
    assert run1.counts["certificate"] > 0 and run2.counts["certificate"] == 0


def test_reissue_gives_certificates_again(site, make_runtime):
    clock, rt = start(site, make_runtime, certificate_schedule(site))
    from sidecar.schedulelist import find_schedule

    first = runs.Runner(rt).fire_now(find_schedule(1))
    clock.advance(1)
    again = runs.Runner(rt).fire_now(find_schedule(1), reissue=True)
    assert again.counts["certificate"] == first.counts["certificate"] > 0


def test_a_run_moodle_cannot_serve_is_retried_later_and_sends_once(site, make_runtime):
    clock, rt = start(site, make_runtime, schedule(site))
    site.fail_next("*", 1, status=503)
    clock.now = START.replace(hour=9, minute=1)
    [failed] = runs.Runner(rt).tick()
    assert failed.status == "retry" and "503" in failed.error
    assert Job.select().count() == 0
    clock.advance(60)
    assert runs.Runner(rt).tick() == []  # not before RETRY_AFTER
    clock.advance(runs.RETRY_AFTER.total_seconds())
    [retried] = runs.Runner(rt).tick()
    assert retried.status == "done" and retried.due_at == START.replace(hour=9)
    assert ScheduleRun.select().count() == 1 and Job.select().count() == 1


def test_a_malformed_schedule_does_not_stop_the_others_from_firing(site, make_runtime):
    site.schedules[:] = [schedule(site, id=1, frequency="hourly"),
                         schedule(site, id=2, name="Good one")]  # fmt: skip
    clock = Clock(START)
    rt = make_runtime(clock)
    [result] = do_sync(rt)
    assert result.new == 1 and "schedule 1" in result.skipped[0]
    clock.now = START.replace(hour=9, minute=1)
    assert [o.schedule.id for o in runs.Runner(rt).tick()] == [2]


def test_dry_run_shows_counts_route_and_a_sample_and_sends_nothing(site, make_runtime):
    clock, rt = start(site, make_runtime, schedule(site))
    runner = runs.Runner(rt)
    from sidecar.schedulelist import find_schedule

    record = find_schedule(1)
    outcome = runner.prepare(runs._schedule(record), clock())
    assert outcome.recipients > 0 and "course_completed" in outcome.counts["left_out"]
    assert outcome.route.route == "local" and "offload.enabled is false" in outcome.route.reason
    assert outcome.sample.subject.startswith("Reminder:")
    assert ScheduleRun.select().count() == 0 and Job.select().count() == 0


def test_a_manual_run_moodle_cannot_serve_fails_and_is_not_retried_behind_the_admin(
    site, make_runtime
):
    from sidecar.schedulelist import find_schedule

    clock, rt = start(site, make_runtime, schedule(site))
    site.fail_next("*", 1, status=503)
    failed = runs.Runner(rt).fire_now(find_schedule(1))
    assert failed.status == "failed"
    clock.advance(1)
    again = runs.Runner(rt).fire_now(find_schedule(1))
    assert again.status == "done"
    clock.advance(3 * 3600)  # 11:00: long past any retry delay; today's 09:00 is due
    assert [o.status for o in runs.Runner(rt).tick()] == ["done"]
    statuses = [r.status for r in ScheduleRun.select().order_by(ScheduleRun.id)]
    assert statuses == ["failed", "done", "done"]  # the failed manual run stays failed
    assert Job.select().count() == 2


def test_a_manual_run_does_not_swallow_the_scheduled_one(site, make_runtime):
    from sidecar.schedulelist import find_schedule

    clock, rt = start(site, make_runtime, schedule(site))
    clock.now = START.replace(hour=9, minute=30)  # 09:00 passed, the tick has not come yet
    runs.Runner(rt).fire_now(find_schedule(1))
    [scheduled] = runs.Runner(rt).tick()
    assert scheduled.due_at == START.replace(hour=9)


def test_a_claim_left_by_a_dead_daemon_on_this_host_is_taken_over_at_once(site, make_runtime):
    import socket

    clock, rt = start(site, make_runtime, schedule(site))
    clock.now = START.replace(hour=9, minute=1)
    from sidecar.db.models import ScheduleRecord

    rec = ScheduleRecord.get()
    ScheduleRun.insert(schedule=rec.id, due_at=START.replace(hour=9), status="claimed",
                       owner=f"{socket.gethostname()}:999999:dead", claimed_at=clock.now,
                       counts={}).execute()  # fmt: skip
    clock.advance(30)
    [taken] = runs.Runner(rt).tick()
    assert taken.status == "done" and taken.due_at == START.replace(hour=9)
    assert ScheduleRun.select().count() == 1


def test_a_fresh_claim_of_another_host_is_left_to_it_until_it_is_stale(site, make_runtime):
    clock, rt = start(site, make_runtime, schedule(site))
    clock.now = START.replace(hour=9, minute=1)
    from sidecar.db.models import ScheduleRecord

    rec = ScheduleRecord.get()
    ScheduleRun.insert(schedule=rec.id, due_at=START.replace(hour=9), status="claimed",
                       owner="other-host:42:abcd", claimed_at=clock.now,
                       counts={}).execute()  # fmt: skip
    clock.advance(3600)
    assert runs.Runner(rt).tick() == []
    clock.advance(runs.STALE_CLAIM.total_seconds())
    assert [o.status for o in runs.Runner(rt).tick()] == ["done"]


def test_a_run_waiting_for_a_retry_is_dropped_when_its_schedule_is_disabled(site, make_runtime):
    clock, rt = start(site, make_runtime, schedule(site))
    site.fail_next("*", 1, status=503)
    clock.now = START.replace(hour=9, minute=1)
    assert [o.status for o in runs.Runner(rt).tick()] == ["retry"]
    site.schedules[0]["enabled"] = 0
    do_sync(rt)
    clock.advance(3600)
    assert runs.Runner(rt).tick() == []
    assert ScheduleRun.get().status == "failed" and Job.select().count() == 0


def test_an_email_schedule_without_suppression_does_not_ask_for_completion(site, make_runtime):
    site.remove_function("local_manireports_get_course_completions")  # per-learner path
    clock, rt = start(
        site,
        make_runtime,
        schedule(site, courseid=site.no_criteria_course_id, suppress_course_completion=0),
    )
    clock.now = START.replace(hour=9, minute=1)
    site.reset_counts()
    [run] = runs.Runner(rt).tick()
    assert run.status == "done" and run.recipients > 0
    assert "tool_mobile_call_external_functions" not in site.requests_by_function


def _make_unmailable(site) -> dict[str, int]:
    """Among the main course's completers and non-completers alike, one learner each with a
    suspended account, a nologin account, a suspended enrolment, an invalid address and a
    bounced address; returns {way: userid}."""
    cid = site.main_course_id
    enrolled, done = site.enrolments[cid], completed_in(site)
    planted = {}
    for group, tag in ((done, "done"), (set(enrolled) - done, "open")):
        free = [u for u in sorted(group) if enrolled[u].status == 0 and u != site.token_user_id]
        ways = ("account", "nologin", "enrolment", "invalid", "bounced")
        planted.update({f"{way}_{tag}": u for way, u in zip(ways, free, strict=False)})
    for tag in ("done", "open"):
        site.users[planted[f"account_{tag}"]].suspended = 1
        site.users[planted[f"nologin_{tag}"]].auth = "nologin"
        enrolled[planted[f"enrolment_{tag}"]].status = 1
        site.users[planted[f"invalid_{tag}"]].email = "a@b@c"
    return planted


@pytest.mark.parametrize(
    "action, audience, each",  # each: learners the audience holds of each planted kind
    [("email", "not_completed", 1), ("certificate", "completed", 1), ("both", "enrolled", 2)],
)
def test_the_dry_run_recipients_are_exactly_the_emails_the_run_delivers(
    site, make_runtime, tmp_path, action, audience, each
):
    import mailbox

    from sidecar.db import store
    from sidecar.schedulelist import find_schedule, run_counts
    from sidecar.suppression import suppress

    planted = _make_unmailable(site)
    row = schedule(site, action_type=action, audience=audience, suppress_course_completion=0)
    clock, rt = start(site, make_runtime, row)
    with store.atomic():
        for tag in ("done", "open"):
            suppress(site.users[planted[f"bounced_{tag}"]].email, "bounced", "ses_bounce",
                     clock())  # fmt: skip
    runner = runs.Runner(rt)
    dry = runner.prepare(runs._schedule(find_schedule(1)), clock())
    learners = len(site.enrolments[site.main_course_id])
    left_out = dry.counts["left_out"]
    assert dry.counts["learners"] == learners
    assert dry.recipients + sum(left_out.values()) == learners
    assert left_out["account_suspended"] == left_out["nologin"] == each
    assert left_out["invalid_email"] == left_out["suppressed"] == each
    assert left_out["enrolment_suspended"] >= 2

    clock.advance(60)
    run = runner.fire_now(find_schedule(1))
    assert run.status == "done" and run.recipients == dry.recipients > 0
    for job_id in run.jobs:
        deliver_job(rt, job_id, show_progress=False)
    delivered = list(mailbox.Maildir(tmp_path / "mail", create=False))
    assert len(delivered) == dry.recipients
    mailed = {m["To"].rsplit("<", 1)[-1].rstrip(">") for m in delivered}
    never = {site.users[u].email for way, u in planted.items() if not way.startswith("enrolment")}
    assert not mailed & never
    recorded = ScheduleRun.get(ScheduleRun.id == run_id_of(run))
    assert recorded.counts["left_out"] == left_out and recorded.counts["learners"] == learners
    assert run_counts(recorded).startswith(f"{learners} learners: {dry.recipients} recipients")


def test_a_run_under_a_low_max_input_vars_reads_the_accounts_in_requests_that_fit(
    site, make_runtime
):
    # PHP drops the variables past max_input_vars: every request must stay under it.
    site.max_input_vars = 30
    clock, rt = start(site, make_runtime, schedule(site, suppress_course_completion=0),
                      moodle={"max_input_vars": 30})  # fmt: skip
    clock.now = START.replace(hour=9, minute=1)
    site.reset_counts()
    [run] = runs.Runner(rt).tick()
    learners = len(site.enrolments[site.main_course_id])
    assert run.status == "done", run.error
    assert run.recipients > 26  # more than one request of 30 - 4 user ids
    assert site.requests_by_function["core_user_get_users_by_field"] == math.ceil(
        run.recipients / 26
    )
    assert run.counts["learners"] == learners


def test_learners_whose_profiles_moodle_cannot_return_are_mailed_named_and_counted(
    site, make_runtime, caplog
):
    # Moodle checks its answer: one bad profile turns a whole request into invalidresponse.
    bad = sorted(set(site.enrolments[site.main_course_id]) - completed_in(site))[3:6]
    site.users[bad[0]].country = "U.K."
    site.users[bad[1]].city = "<b>Leeds</b>"
    site.users[bad[2]].email += " "
    clock, rt = start(site, make_runtime, schedule(site, suppress_course_completion=0))
    clock.now = START.replace(hour=9, minute=1)
    [run] = runs.Runner(rt).tick()
    assert run.status == "done", run.error
    assert run.counts["warnings"] == {"account_refused": 3}
    assert "; warnings: account lookup refused by Moodle 3 (" in run.summary
    assert set(bad[:2]) <= recipients_of(ScheduleRun.get())  # their state is unknown: mailed
    for userid in bad:
        assert f"user {userid}: Moodle cannot return the account" in caplog.text


def test_an_address_with_spaces_around_it_is_counted_and_mailed_trimmed(
    site, make_runtime, tmp_path
):
    import mailbox

    uid = sorted(set(site.enrolments[site.main_course_id]) - completed_in(site))[3]
    address = site.users[uid].email
    site.users[uid].email = f" {address}\t"
    clock, rt = start(site, make_runtime, schedule(site, suppress_course_completion=0))
    clock.now = START.replace(hour=9, minute=1)
    [run] = runs.Runner(rt).tick()
    assert run.status == "done", run.error
    assert uid in recipients_of(ScheduleRun.get())
    for job_id in run.jobs:
        deliver_job(rt, job_id, show_progress=False)
    delivered = list(mailbox.Maildir(tmp_path / "mail", create=False))
    assert len(delivered) == run.recipients
    assert address in {m["To"].rsplit("<", 1)[-1].rstrip(">") for m in delivered}


def test_any_other_moodle_error_of_the_account_lookup_still_fails_the_run(site, make_runtime):
    clock, rt = start(site, make_runtime, schedule(site, suppress_course_completion=0))
    site.remove_function("core_user_get_users_by_field")
    clock.now = START.replace(hour=9, minute=1)
    [run] = runs.Runner(rt).tick()
    assert run.status == "failed" and "core_user_get_users_by_field" in run.error
    assert Job.select().count() == 0


@pytest.mark.parametrize(
    "capability, hiddenuserfields, warning, unseen",
    [
        ("moodle/user:viewalldetails", set(), "auth_hidden", "nologin"),
        ("moodle/user:viewhiddendetails", {"suspended"}, "suspended_hidden", "account"),
    ],
)
def test_a_run_that_cannot_see_account_states_warns_with_the_capability_to_give(
    site, make_runtime, capability, hiddenuserfields, warning, unseen
):
    from sidecar.schedulelist import find_schedule, run_counts

    planted = _make_unmailable(site)
    clock, rt = start(site, make_runtime, schedule(site, suppress_course_completion=0))
    site.hiddenuserfields = hiddenuserfields
    site.capabilities.discard(capability)
    runner = runs.Runner(rt)
    dry = runner.prepare(runs._schedule(find_schedule(1)), clock())
    # Moodle leaves the field out: the account is mailed, and the run says why
    assert planted[f"{unseen}_open"] in {lr.userid for lr in dry.selection.recipients}
    assert dry.counts["warnings"] == {warning: dry.recipients}
    assert f"({runs.WARNINGS[warning][1]})" in dry.summary and capability in dry.summary
    clock.advance(60)
    runner.fire_now(find_schedule(1))
    assert capability in run_counts(ScheduleRun.get(ScheduleRun.manual == True))  # noqa: E712


def test_without_enrolreview_the_dry_run_warns_that_suspended_enrolments_are_not_visible(
    site, make_runtime
):
    from sidecar.schedulelist import find_schedule

    planted = _make_unmailable(site)
    clock, rt = start(site, make_runtime, schedule(site, suppress_course_completion=0))
    site.capabilities.discard("moodle/course:enrolreview")
    dry = runs.Runner(rt).prepare(runs._schedule(find_schedule(1)), clock())
    # Moodle lists the suspended enrolment as a participant: mailed, and the run says so
    assert planted["enrolment_open"] in {lr.userid for lr in dry.selection.recipients}
    assert "enrolment_suspended" not in dry.counts["left_out"]
    assert dry.counts["warnings"] == {"enrolments_hidden": dry.recipients}
    assert "suspended enrolments not visible" in dry.summary
    assert "moodle/course:enrolreview" in dry.summary


@pytest.mark.parametrize("action, audience, wording", [
    ("email", "enrolled", "{n} recipients ({n} emails);"),
    ("certificate", "completed", "{n} recipients ({n} emails, {n} with a certificate);"),
])  # fmt: skip
def test_the_dry_run_says_every_recipient_gets_an_email_and_counts_every_moodle_request(
    site, make_runtime, action, audience, wording
):
    from sidecar.schedulelist import find_schedule

    row = schedule(site, action_type=action, audience=audience, suppress_course_completion=0,
                   companyid=min(site.companies))  # fmt: skip
    clock, rt = start(site, make_runtime, row)
    site.reset_counts()
    dry = runs.Runner(rt).prepare(runs._schedule(find_schedule(1)), clock())
    assert dry.recipients > 0
    assert wording.format(n=dry.recipients) in dry.summary
    assert dry.counts["moodle_requests"] == site.request_count
    assert site.requests_by_function["core_webservice_get_site_info"] == 1
    assert any(f.startswith("block_iomad") for f in site.requests_by_function)


@pytest.mark.parametrize("unmailable, lookups", [(True, 0), (False, 1)])
def test_with_the_companion_s_unmailable_list_the_run_asks_moodle_for_no_account(
    site, make_runtime, unmailable, lookups
):
    from sidecar.schedulelist import find_schedule

    planted = _make_unmailable(site)
    site.companion_unmailable = unmailable  # False: a companion plugin without the field
    clock, rt = start(site, make_runtime, schedule(site))  # stopped by course completion
    site.reset_counts()
    dry = runs.Runner(rt).prepare(runs._schedule(find_schedule(1)), clock())
    assert dry.counts["completion_method"] == "companion"
    assert site.requests_by_function["core_user_get_users_by_field"] == lookups
    assert dry.counts["left_out"]["account_suspended"] == 1  # the open one; done: completed
    assert dry.counts["left_out"]["nologin"] == 1
    assert planted["account_open"] not in {lr.userid for lr in dry.selection.recipients}
    assert "warnings" not in dry.counts


def test_a_recipient_moodle_leaves_out_of_the_account_answer_is_a_warning():
    # e.g. moodle/user:viewdetails given in the course's category, not at system level:
    # the enrolled users are readable, their accounts are not
    from moodle_ws.accounts import Accounts
    from moodle_ws.types import User
    from schedules.selection import Learner, Selection

    seen = User(1, None, "A", "B", "A B", "a@x.test", False, True, "manual", "en", None, 0, 0)
    sel = Selection((Learner(1, "a@x.test", "A", "B"), Learner(2, "b@x.test", "C", "D"),
                     Learner(3, "c@x.test", "E", "F")), (), {}, 3, 3)  # fmt: skip
    looked = Accounts({1: seen}, {3: "core_user_get_users_by_field: invalidresponse: ..."})
    warnings = runs._warnings(sel, looked)
    assert warnings == {"account_refused": 1, "account_hidden": 1}
    assert "account not visible 1 (give the token's user moodle/user:viewdetails)" in (
        runs.accounting({"learners": 3, "recipients": 3, "warnings": warnings})
    )


def run_id_of(outcome) -> int:
    return Job.get(Job.id == outcome.jobs[0]).run_id


def test_a_learner_who_unsubscribed_from_reminders_is_counted_and_not_reminded_but_certified(
    site, make_runtime, tmp_path
):
    import mailbox

    from sidecar.schedulelist import find_schedule
    from sidecar.unsubscribe import opt_out

    done = sorted(completed_in(site) - {site.token_user_id})
    open_ = sorted(set(site.enrolments[site.main_course_id]) - completed_in(site)
                   - {site.token_user_id})  # fmt: skip
    row = schedule(site, action_type="both", audience="enrolled", suppress_course_completion=0)
    clock, rt = start(site, make_runtime, row)
    # One learner of each kind opted out of reminders, one of re-engagement mail only.
    opt_out(open_[0], "reminders", "one-click", clock())
    opt_out(done[0], "reminders", "one-click", clock())
    opt_out(open_[1], "reengagement", "one-click", clock())
    runner = runs.Runner(rt)
    dry = runner.prepare(runs._schedule(find_schedule(1)), clock())
    assert dry.counts["left_out"].get("unsubscribed") == 1
    assert "unsubscribed 1" in dry.summary

    clock.advance(60)
    run = runner.fire_now(find_schedule(1))
    assert run.recipients == dry.recipients
    for job_id in run.jobs:
        deliver_job(rt, job_id, show_progress=False)
    to = {m["To"].rsplit("<", 1)[-1].rstrip(">") for m in mailbox.Maildir(tmp_path / "mail")}
    assert len(to) == dry.recipients
    assert site.users[open_[0]].email not in to  # a reminder only: none
    assert site.users[done[0]].email in to  # the certificate and its email still go
    assert site.users[open_[1]].email in to  # another kind of mail


def test_a_re_engagement_schedule_s_emails_say_how_many_days(site, make_runtime, tmp_path):
    import mailbox

    from sidecar.schedulelist import find_schedule

    row = schedule(site, audience="inactive", inactive_days=3, suppress_course_completion=0,
                   template_id="reengagement")  # fmt: skip
    clock, rt = start(site, make_runtime, row)
    run = runs.Runner(rt).fire_now(find_schedule(1))
    assert run.status == "done" and run.recipients > 0
    for job_id in run.jobs:
        assert deliver_job(rt, job_id, show_progress=False) == {"sent": run.recipients}
    mails = list(mailbox.Maildir(tmp_path / "mail", create=False))
    assert len(mails) == run.recipients
    body = mails[0].get_payload(0).get_payload(decode=True).decode()
    assert "It has been 3 days since you last visited" in body


def test_a_company_s_schedule_mails_from_the_company_s_own_sender(site, make_runtime):
    from sidecar.localrun import deliver_job

    company = min(site.companies)
    rows = (schedule(site, id=1), schedule(site, id=2, name="Company", companyid=company))
    sender = "Company Training <training@company.example>"
    clock, rt = start(site, make_runtime, *rows,
                      companies=[{"id": company, "from": sender}])  # fmt: skip
    clock.now = START.replace(hour=9, minute=0, second=5)
    fired = runs.Runner(rt).tick()
    assert sorted(r.status for r in fired) == ["done", "done"]
    by_schedule = {j.schedule_id: j for j in Job.select()}
    assert by_schedule[2].sender == sender
    assert by_schedule[1].sender == "Academy <noreply@academy.example>"
    deliver_job(rt, by_schedule[2].id, show_progress=False)
    mails = list((rt.config.providers.local.maildir / "new").iterdir())
    assert mails and all(b"From: Company Training <training@company.example>" in m.read_bytes()
                         for m in mails)  # fmt: skip
