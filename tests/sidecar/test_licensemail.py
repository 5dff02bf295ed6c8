"""`send license` in process, against the sandbox over HTTP, on every ledger backend: the
allocation's key holds across previews and runs, a user seated twice gets two emails, and
the route follows the company."""

from datetime import UTC, datetime, timedelta

import pytest

from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
from moodle_ws.sandbox.model import LicenseAllocation
from sidecar import licensemail
from sidecar.config import Config
from sidecar.db.models import Job, Recipient
from sidecar.runtime import Runtime
from sidecar.status import RecipientStatus as R

from ..conftest import Clock

DAY = 86400


@pytest.fixture
def site():
    s = generate_site(SiteSpec(seed=11, learners=40, courses=3, companies=2))
    with SandboxServer(s) as server:
        s.server_url = server.url
        yield s


@pytest.fixture
def rt(db_url, tmp_path, site):
    config = Config.model_validate({
        "moodle": {"url": site.server_url, "token": site.token, "retry_attempts": 1},
        "database": {"url": db_url},
        "companies": [{"id": 5, "enabled": False}],
        "providers": {"local": {"from": "Academy <noreply@academy.example>",
                                "maildir": str(tmp_path / "mail")}},
    })  # fmt: skip
    runtime = Runtime(
        config, clock=Clock(datetime.fromtimestamp(site.now(), UTC).replace(tzinfo=None))
    )
    runtime.ready_db()
    yield runtime
    runtime.close()


def seat(site, licenseid: int, ago: int, n: int = 1) -> list[int]:
    """Give `n` members of the licence's company a seat `ago` seconds back."""
    lic = site.licenses[licenseid]
    seated = {a.userid for a in site.allocations if a.licenseid == licenseid}
    ids = sorted(r.userid for r in site.company_users
                 if r.companyid == lic.companyid and r.managertype == 0 and r.userid not in seated
                 and not site.users[r.userid].suspended)[:n]  # fmt: skip
    for uid in ids:
        for cid in lic.courses:
            site.allocations.append(LicenseAllocation(licenseid, uid, cid, site.now() - ago))
    return ids


def options(rt, hours: int = 24, **over) -> licensemail.Options:
    return licensemail.Options(rt.clock() - timedelta(hours=hours), **over)


def test_a_stale_preview_committed_after_another_run_mails_nobody_twice(rt, site):
    seat(site, 15, 3600, n=2)
    first, stale = licensemail.preview(rt, options(rt)), licensemail.preview(rt, options(rt))
    assert first.to_send == stale.to_send == 2
    [(_, made)] = licensemail.commit(rt, first)
    [(_, late)] = licensemail.commit(rt, stale)
    assert (made.pending, late.pending, late.skipped_duplicate) == (2, 0, 2)
    assert licensemail.preview(rt, options(rt)).excluded == {licensemail.ALREADY_SENT: 2}


def test_a_licence_of_two_courses_is_one_email_and_a_second_seat_another(rt, site):
    [uid] = seat(site, 15, 7200)
    main = site.main_course_id
    site.allocations.append(LicenseAllocation(16, uid, main, site.now() - 60))  # another licence
    site.allocations.append(LicenseAllocation(15, uid, main, site.now() - 30))  # again, later
    pv = licensemail.preview(rt, options(rt))
    [plan] = [p for p in pv.plans if p.companyid == 4]
    assert [len(r) for r in plan.rounds] == [1, 1, 1]  # three emails: one job each
    first = plan.rounds[0][0]
    assert [c["id"] for c in first.vars["courses"]] == sorted(site.licenses[15].courses)
    assert first.send_key.startswith(f"license:15:{uid}:")
    made = licensemail.commit(rt, pv)
    assert sum(c.pending for _, c in made) == 3
    again = licensemail.preview(rt, options(rt, hours=48))
    assert again.to_send == 0 and again.excluded[licensemail.ALREADY_SENT] == 3


def test_company_and_licence_filters_and_the_route_by_company(rt, site):
    seat(site, 15, 600)
    five = seat(site, 19, 600, n=2)
    only = licensemail.preview(rt, options(rt, companyid=5))
    [plan] = only.plans
    assert plan.companyid == 5 and plan.recipients == 2
    assert (
        plan.route.route == "local" and "company 5 has cloud offload disabled" in plan.route.reason
    )
    assert plan.template == "license" and plan.sender_from == "providers.local.from"
    by_licence = licensemail.preview(rt, options(rt, licenseid=19))
    assert {r.userid for p in by_licence.plans for rnd in p.rounds for r in rnd} == set(five)
    [(_, made)] = licensemail.commit(rt, only)
    job = Job.get_by_id(made.job_id)
    assert (job.type, job.tenant_id, job.sender) == (
        "send_license",
        5,
        "Academy <noreply@academy.example>",
    )
    assert {r.status for r in Recipient.select().where(Recipient.job == job.id)} == {R.PENDING}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("24h", datetime(2025, 11, 17, 12)),
        ("2d", datetime(2025, 11, 16, 12)),
        ("90m", datetime(2025, 11, 18, 10, 30)),
        ("2025-11-01", datetime(2025, 11, 1)),
        ("2025-11-01T09:30", datetime(2025, 11, 1, 9, 30)),
        ("2025-11-01T09:30+01:00", datetime(2025, 11, 1, 8, 30)),
    ],
    ids=["hours", "days", "minutes", "date", "datetime", "offset"],
)
def test_since_is_a_duration_back_or_a_utc_date(text, expected):
    assert licensemail.parse_since(text, datetime(2025, 11, 18, 12)) == expected


@pytest.mark.parametrize("text", ["yesterday", "0h", "-2d", "24H"])
def test_a_since_that_means_nothing_is_refused(text):
    with pytest.raises(ValueError):
        licensemail.parse_since(text, datetime(2025, 11, 18, 12))
