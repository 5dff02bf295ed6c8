"""`send license`: IOMAD licence allocations mailed once each, in each company's template and
sender, against the sandbox over HTTP and a real SMTP sink."""

from email import message_from_bytes, policy

import pytest

from moodle_ws.client import ClientSettings, MoodleClient
from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
from moodle_ws.sandbox.model import LicenseAllocation

from .conftest import cli, write_config

DAY = 86400
IOMAD = "block_iomad_company_admin_"
COMPANY_TEMPLATE = (
    "{% block subject %}Four Co: {{ license.name }} for {{ learner.firstname }}{% endblock %}\n"
    "{% block html %}<p>{{ company.name }} welcomes you to"
    "{% for c in courses %} {{ c.fullname }};{% endfor %}</p>{% endblock %}\n"
    "{% block text %}{{ company.name }} welcomes you to"
    "{% for c in courses %} {{ c.fullname }};{% endfor %}\n"
    "valid {{ license.validlength }} days, until {{ license.expirydate }}{% endblock %}\n"
)


@pytest.fixture
def moodle():
    site = generate_site(SiteSpec(seed=11, learners=60, courses=3, companies=2, now=None))
    with SandboxServer(site) as server:
        server.site = site
        yield server


def members(site, companyid: int, licenseid: int, n: int) -> list[int]:
    """`n` plain members of the company without a seat on the licence."""
    seated = {a.userid for a in site.allocations if a.licenseid == licenseid}
    ids = sorted(
        r.userid for r in site.company_users
        if r.companyid == companyid and r.managertype == 0 and r.userid not in seated
        and not site.users[r.userid].suspended
    )  # fmt: skip
    assert len(ids) >= n
    return ids[:n]


def allocate(server, entries: list[tuple[int, int, int]]) -> None:
    """Allocate seats through IOMAD's own web-service function."""
    client = MoodleClient(ClientSettings(url=server.url, token=server.site.token, attempts=1))
    try:
        licenses = [{"licenseid": lid, "userid": uid, "licensecourseid": cid}
                    for lid, uid, cid in entries]  # fmt: skip
        assert client.call(IOMAD + "allocate_licenses", {"licenses": licenses}) is True
    finally:
        client.close()


def config_for(tmp_path, server, smtp_port: int):
    templates = tmp_path / "templates" / "companies" / "4"
    templates.mkdir(parents=True)
    (templates / "license.html").write_text(COMPANY_TEMPLATE)
    path = write_config(tmp_path, smtp_port=smtp_port)
    path.write_text(
        path.read_text()
        + f'[moodle]\nurl = "{server.url}"\ntoken = "{server.site.token}"\n'
        + f'[templates]\ndir = "{tmp_path / "templates"}"\n'
        + '[[companies]]\nid = 4\nfrom = "Four Co Training <training@four.example>"\n'
    )
    return path


@pytest.fixture
def two_companies(moodle, tmp_path, smtp):
    """Seats allocated now in companies 4 (licence 15, two courses) and 5 (licence 19)."""
    site = moodle.site
    courses = site.licenses[15].courses
    four = members(site, 4, 15, 3)
    five = members(site, 5, 19, 2)
    allocate(moodle, [(15, uid, cid) for uid in four for cid in courses])
    allocate(moodle, [(19, uid, site.main_course_id) for uid in five])
    return four, five, config_for(tmp_path, moodle, smtp.port)


def by_recipient(smtp) -> dict[str, object]:
    parsed = [message_from_bytes(raw, policy=policy.default) for raw in smtp.messages]
    return {m["To"]: m for m in parsed}


def test_two_companies_are_mailed_once_each_in_their_own_template_and_sender(
    moodle, two_companies, smtp
):
    four, five, config = two_companies
    site = moodle.site
    run = cli(config, "send", "license", "--since", "24h", "--yes", "--deliver").stdout
    assert "5 found, 5 to send" in run
    assert f"licences: 15 {site.licenses[15].name!r} (3)" in run
    assert "template: companies/4/license.html; from: Four Co Training" in run
    assert "template: license.html; from: Academy <noreply@academy.example>" in run
    assert "route: local: offload.enabled is false" in run and "--- sample (company 4) ---" in run
    mails = by_recipient(smtp)
    assert len(smtp.messages) == 5 and len(mails) == 5
    titles = [site.courses[c].fullname for c in site.licenses[15].courses]
    for uid in four:
        msg = mails[site.users[uid].email]
        assert msg["From"] == "Four Co Training <training@four.example>"
        assert (
            msg["Subject"] == f"Four Co: {site.licenses[15].name} for {site.users[uid].firstname}"
        )
        text = msg.get_body(("plain",)).get_content()
        assert site.companies[4].name in text and all(t in text for t in titles)
        assert f"valid {site.licenses[15].validlength} days" in text
    for uid in five:
        msg = mails[site.users[uid].email]
        assert msg["From"] == "Academy <noreply@academy.example>"
        assert msg["Subject"].startswith(f"{site.companies[5].name}: you have been given access")
        text = msg.get_body(("plain",)).get_content()
        assert site.licenses[19].name in text and "days from when you start" in text
        assert "List-Unsubscribe" not in msg  # account mail: nobody opts out of it

    again = cli(config, "send", "license", "--since", "24h", "--yes", "--deliver").stdout
    assert "nothing to send" in again and "already sent (an earlier run) (5)" in again
    assert len(smtp.messages) == 5


def test_the_since_window_and_a_wider_one_never_mail_anyone_twice(moodle, two_companies, smtp):
    four, five, config = two_companies
    site = moodle.site
    older = members(site, 5, 19, 3)[-1]
    site.allocations.append(LicenseAllocation(19, older, site.main_course_id, site.now() - 3 * DAY))
    site.users[five[0]].suspended = 1
    first = cli(config, "send", "license", "--since", "24h", "--yes", "--deliver").stdout
    assert "5 found, 4 to send" in first and "suspended account (1)" in first
    assert site.users[older].email not in by_recipient(smtp)
    assert len(smtp.messages) == 4

    wider = cli(config, "send", "license", "--since", "4d", "--company", "5", "--yes",
                "--deliver").stdout  # fmt: skip
    assert "3 found, 1 to send" in wider and "already sent (an earlier run) (1)" in wider
    assert len(smtp.messages) == 5 and site.users[older].email in by_recipient(smtp)

    site.users[five[0]].suspended = 0  # reinstated: its allocation is still owed one email
    last = cli(config, "send", "license", "--since", "7d", "--yes", "--deliver").stdout
    assert "6 found, 1 to send" in last and "already sent (an earlier run) (5)" in last
    assert len(smtp.messages) == 6 and len(by_recipient(smtp)) == 6


def test_without_a_terminal_or_yes_nothing_is_sent(moodle, two_companies, smtp):
    _, _, config = two_companies
    proc = cli(config, "send", "license", "--since", "24h", check=False)
    assert proc.returncode == 1 and "pass --yes" in proc.stderr
    assert "5 to send" in proc.stdout and not smtp.messages
    dry = cli(config, "send", "license", "--since", "24h", "--dry-run", "--yes")
    assert "dry run: nothing sent; 5 to send" in dry.stdout and not smtp.messages
    run = cli(config, "send", "license", "--since", "24h", "--yes", "--deliver")
    assert len(smtp.messages) == 5, run.stdout  # the dry run committed nothing


@pytest.mark.parametrize(
    "remove, named",
    [
        ("local_manireports_get_license_allocations", "local_manireports_get_license_allocations"),
        (IOMAD + "get_license_from_id", IOMAD + "get_license_from_id"),
    ],
)
def test_a_site_without_a_function_gets_one_line_naming_it(moodle, tmp_path, smtp, remove, named):
    moodle.site.remove_function(remove)
    config = config_for(tmp_path, moodle, smtp.port)
    proc = cli(config, "send", "license", "--since", "24h", "--yes", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "external service" in lines[0]
    assert not smtp.messages


def test_a_bad_since_is_refused_before_moodle_is_asked(moodle, tmp_path, smtp):
    config = config_for(tmp_path, moodle, smtp.port)
    moodle.site.reset_counts()
    proc = cli(config, "send", "license", "--since", "yesterday", "--yes", check=False)
    assert proc.returncode == 2 and "--since" in proc.stderr
    assert moodle.site.request_count == 0
