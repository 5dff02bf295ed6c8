"""The bulk tools on the dashboard's Send page, over real HTTP against the Moodle sandbox,
on every database backend: each previews as the CLI does and sends nothing until
confirmed; the confirm commits what the preview showed, under the CLI's keys (a tool run
twice, or a confirm pressed twice, mails nobody twice); a preview that changed meanwhile
is shown again, not sent; company managers run them for their own companies only."""

from datetime import UTC, datetime

import pytest

from moodle_ws import functions
from moodle_ws.client import ClientSettings, MoodleClient
from sidecar import tools
from sidecar.db.models import Certificate, Job, Recipient
from sidecar.localrun import deliver_job
from tests.sidecar.api_helpers import audit_events
from tests.sidecar.test_api_schedules import site  # noqa: F401 - the sandbox fixture
from tests.sidecar.test_pages_schedules import Pages, make_served, text

IOMAD = "block_iomad_company_admin_"


@pytest.fixture
def served(serve_app, db_url, tmp_path, site):  # noqa: F811
    site.schedules[:] = []
    api = make_served(serve_app, db_url, tmp_path, site)
    yield api
    api.runtime.close()


def to_send(page) -> int:
    words = text(page.text)
    return int(words.split("To send ", 1)[1].split()[0])


def jobs_of(location: str) -> str:
    assert location.startswith("/jobs/"), location
    return location.rsplit("/", 1)[1]


def confirm(pages: Pages, page, kind: str, **over):
    """Press Send on a preview page: its hidden fields, as the browser posts them."""
    import re

    form = page.text.split(f'action="/send/{kind}"', 1)[1].split("</form>", 1)[0]
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', form))
    fields.pop("csrf")
    return pages.post(f"/send/{kind}", **{**fields, **over})


def moodle_client(site) -> MoodleClient:  # noqa: F811
    return MoodleClient(ClientSettings(url=site.server_url, token=site.token, attempts=1))


def test_reengagement_is_previewed_then_sent_once_and_a_second_confirm_sends_nothing(
    served,
    site,  # noqa: F811
):
    pages = Pages(served)
    course = site.main_course_id
    assert 'action="/send/reengagement"' in pages.get("/send").text
    page = pages.get("/send/reengagement", course=course, inactive_days=30)
    assert page.status_code == 200, page.text
    n = to_send(page)
    words = text(page.text)
    tool = tools.reengagement(course, 30, now=served.runtime.clock())
    expected = tools.preview(served.runtime, tool)
    assert n == expected.to_send > 0
    assert "Nothing is sent until you press Send" in words and "Route local" in words
    assert f"Key reengagement:course:{course}:inactive:30:2026-12-01" in words
    assert "Subject:" in words  # the rendered sample
    assert Job.select().count() == 0  # a preview commits nothing

    sent = confirm(pages, page, "reengagement")
    assert sent.status_code == 303, sent.text
    job_id = jobs_of(sent.headers["Location"])
    assert Recipient.select().where(Recipient.job == job_id).count() == n
    ((_, detail),) = audit_events("tool_send")
    assert '"tool": "reengagement"' in detail and '"via": "dashboard"' in detail

    again = confirm(pages, page, "reengagement")  # the same confirm, pressed twice
    assert again.status_code == 409 and "preview changed" in text(again.text)
    assert Job.select().count() == 1
    later = pages.get("/send/reengagement", course=course, inactive_days=30)
    assert to_send(later) == 0 and f"{n} under key" in text(later.text)
    assert "Nothing to send" in text(later.text)

    counts = deliver_job(served.runtime, job_id, show_progress=False)
    assert counts == {"sent": n}


def test_a_preview_that_changed_is_shown_again_and_nothing_is_sent(served, site):  # noqa: F811
    pages = Pages(served)
    page = pages.get("/send/reengagement", course=site.main_course_id, inactive_days=30)
    n = to_send(page)
    stale = confirm(pages, page, "reengagement", expected=str(n + 3))
    assert stale.status_code == 409
    words = text(stale.text)
    assert f"It showed {n + 3} to send; now it is {n}" in words
    assert f"Send to {n} recipients" in words  # confirm the new preview from here
    assert Job.select().count() == 0
    assert pages.post("/send/reengagement", course=str(site.main_course_id),
                      inactive_days="30").status_code == 400  # no count: no send  # fmt: skip
    assert Job.select().count() == 0


def test_certificates_name_who_has_not_completed_and_a_reissue_confirmed_twice_issues_once(
    served,
    site,  # noqa: F811
):
    pages = Pages(served)
    course = site.main_course_id
    enrolled = [
        u
        for u, e in site.enrolments[course].items()
        if site.is_active_enrolment(e, site.now()) and not site.users[u].suspended
    ]
    done = sorted(u for u, t in site.course_completions.get(course, {}).items()
                  if t and u in enrolled)  # fmt: skip
    not_done = next(u for u in enrolled if u not in done)
    listed = f"{done[0]}, {done[1]}, {not_done}"
    page = pages.get("/send/certificates", course=course, users=listed)
    assert page.status_code == 200, page.text
    words = text(page.text)
    assert "Listed but not sent" in words and f"user {not_done} (" in words
    assert "not completed" in words and to_send(page) == 2
    job_id = jobs_of(confirm(pages, page, "certificates").headers["Location"])
    assert Job.get_by_id(job_id).type == "certificate"
    assert deliver_job(served.runtime, job_id, show_progress=False) == {"sent": 2}
    assert Certificate.select().count() == 2

    page = pages.get("/send/certificates", course=course, users=f"{done[0]}")
    assert to_send(page) == 0  # once per course
    page = pages.get("/send/certificates", course=course, users=f"{done[0]}", reissue="on")
    assert to_send(page) == 1
    first = confirm(pages, page, "certificates")
    assert first.status_code == 303
    twice = confirm(pages, page, "certificates")  # the reissue's key came from the preview
    assert twice.status_code == 409 and Job.select().count() == 2


def test_licence_emails_are_sent_once_per_allocation(served, site):  # noqa: F811
    pages = Pages(served)
    first, _ = served.companies
    lic = next(lic for lic in site.licenses.values() if lic.companyid == first)
    seated = {a.userid for a in site.allocations if a.licenseid == lic.id}
    members = sorted(r.userid for r in site.company_users
                     if r.companyid == first and r.managertype == 0 and r.userid not in seated
                     and not site.users[r.userid].suspended)[:3]  # fmt: skip
    client = moodle_client(site)
    try:
        seats = [{"licenseid": lic.id, "userid": u, "licensecourseid": lic.courses[0]}
                 for u in members]  # fmt: skip
        assert client.call(IOMAD + "allocate_licenses", {"licenses": seats}) is True
    finally:
        client.close()
    since = datetime.fromtimestamp(site.now() - 3600, UTC).strftime("%Y-%m-%dT%H:%M")
    page = pages.get("/send/license", since=since, license=lic.id)
    assert page.status_code == 200, page.text
    assert to_send(page) == 3 and f"company {first}" in text(page.text)
    sent = confirm(pages, page, "license")
    assert sent.status_code == 303
    assert sorted(r.userid for r in Recipient.select()) == members
    again = pages.get("/send/license", since=since, license=lic.id)
    assert to_send(again) == 0 and "already sent (an earlier run) 3" in text(again.text)


def test_welcome_previews_a_placeholder_and_welcomes_each_new_user_once(served, site):  # noqa: F811
    pages = Pages(served)
    client = moodle_client(site)
    try:
        made = functions.create_users(client, [
            {"username": "new1", "firstname": "N", "lastname": "One",
             "email": "new1@example.org", "password": "First-123x"},
            {"username": "sso2", "firstname": "S", "lastname": "Two",
             "email": "sso2@example.org", "auth": "oauth2"},
        ])  # fmt: skip
    finally:
        client.close()
    since = datetime.fromtimestamp(site.now() - 60, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    page = pages.get("/send/welcome", since=since)
    assert page.status_code == 200, page.text
    words = text(page.text)
    assert to_send(page) == 2
    assert "With a temporary password 1" in words and "Without (single sign-on) 1" in words
    assert "(temporary password: set when the email is sent)" in words
    assert Job.select().count() == 0
    job_id = jobs_of(confirm(pages, page, "welcome").headers["Location"])
    assert sorted(r.userid for r in Recipient.select().where(Recipient.job == job_id)) == sorted(
        u for u, _ in made)  # fmt: skip
    by_ids = pages.get("/send/welcome", users=",".join(str(u) for u, _ in made))
    assert to_send(by_ids) == 0 and "already welcomed 2" in text(by_ids.text)
    both = pages.get("/send/welcome", users=str(made[0][0]), since=since)
    assert both.status_code == 400 and "either since or users" in text(both.text)


def test_a_company_manager_runs_the_tools_for_their_own_company_only(served, site):  # noqa: F811
    first, second = served.companies
    pages = Pages(served, "carol", companies=(first,))
    form = pages.get("/send")
    assert form.status_code == 200
    assert 'action="/send/reengagement"' in form.text and 'action="/send/license"' in form.text
    assert 'action="/send/welcome"' not in form.text and 'action="/send/csv"' not in form.text
    course = site.main_course_id
    assert pages.get("/send/welcome", since="24h").status_code == 403
    other = pages.get("/send/reengagement", course=course, inactive_days=30, company=second)
    assert other.status_code == 403 and f"company {second} is not one you manage" in other.text
    none = pages.get("/send/reengagement", course=course, inactive_days=30)
    assert none.status_code == 400 and "company: required" in text(none.text)
    own = pages.get("/send/reengagement", course=course, inactive_days=30, company=first)
    assert own.status_code == 200, own.text
    members = {r.userid for r in site.company_users if r.companyid == first}
    job_id = jobs_of(confirm(pages, own, "reengagement").headers["Location"])
    got = {r.userid for r in Recipient.select().where(Recipient.job == job_id)}
    assert got and got <= members
    forged = confirm(pages, own, "reengagement", company=str(second))
    assert forged.status_code == 403 and Job.select().count() == 1


def test_without_the_daemon_or_write_access_nothing_runs(serve_app, db_url, tmp_path, site):  # noqa: F811
    site.schedules[:] = []
    api = make_served(serve_app, db_url, tmp_path, site, runtime=False)
    try:
        pages = Pages(api)
        down = pages.get("/send/reengagement", course=site.main_course_id, inactive_days=30)
        assert down.status_code == 503 and "needs the daemon" in text(down.text)
        reader = Pages(api, "rita", read_only=True)
        assert reader.get("/send").status_code == 403
        assert reader.get("/send/license", since="24h").status_code == 403
        bad = pages.get("/send/reengagement", course="x", inactive_days=30)
        assert bad.status_code == 400 and "course: a whole number" in text(bad.text)
    finally:
        api.runtime.close()


# --- POST /api/v1/send/{kind}: the same preview and send for programs -----------------------


def test_the_api_previews_then_sends_what_the_preview_said_once(served, site):  # noqa: F811
    token = served.token("ops")
    course = site.main_course_id
    ask = {"course": course, "inactive_days": 30, "exclude_completed": True}
    pv = token.post("/send/reengagement", json=ask)
    assert pv.status_code == 200, pv.text
    preview = pv.json()["preview"]
    assert pv.json()["jobs"] == [] and Job.select().count() == 0
    n = preview["to_send"]
    assert n > 0 and preview["route"] == "local" and preview["sample"]["subject"]
    assert preview["counts"]["left_out"]["course_completed"] > 0
    assert preview["fields"]["key"] == f"reengagement:course:{course}:inactive:30:2026-12-01"

    stale = token.post("/send/reengagement", json={**preview["fields"], "confirm": True,
                                                    "expected": n + 1})  # fmt: skip
    assert stale.status_code == 409 and "preview changed" in stale.json()["error"]
    assert Job.select().count() == 0
    sent = token.post("/send/reengagement", json={**preview["fields"], "confirm": True,
                                                   "expected": n})  # fmt: skip
    assert sent.status_code == 201, sent.text
    (job_id,) = sent.json()["jobs"]
    assert Recipient.select().where(Recipient.job == job_id).count() == n
    ((_, detail),) = audit_events("tool_send")
    assert '"name": "ops"' in detail and '"via": "api"' in detail
    again = token.post("/send/reengagement", json={**preview["fields"], "confirm": True})
    assert again.status_code == 409 and "nothing to send" in again.json()["error"]
    assert Job.select().count() == 1


def test_the_api_refuses_bad_fields_and_tokens_that_may_not_send(served, site):  # noqa: F811
    first, second = served.companies
    admin = served.token("ops")
    typo = admin.post("/send/reengagement", json={"course": 2, "inactive_day": 3})
    assert typo.status_code == 400 and "inactive_day: not a field" in typo.json()["error"]
    missing = admin.post("/send/reengagement", json={"course": 2})
    assert missing.status_code == 400 and missing.json()["error"] == "inactive_days: required"
    assert admin.post("/send/welcome", data="[1]").status_code == 400
    reader = served.token("audit", read_only=True)
    ask = {"course": site.main_course_id, "inactive_days": 30}
    assert reader.post("/send/reengagement", json=ask).status_code == 200  # may look
    assert reader.post("/send/reengagement", json={**ask, "confirm": True}).status_code == 403
    company = served.token("acme", company=first)
    other = company.post("/send/reengagement", json={**ask, "company": second})
    assert other.status_code == 403
    assert company.post("/send/welcome", json={"since": "24h"}).status_code == 403
    assert company.post("/send/reengagement", json={**ask, "company": first}).status_code == 200
    assert Job.select().count() == 0


# --- users import: create the accounts of a CSV in Moodle, then welcome them ---------------


def import_csv(rows: int, start: int = 1, extra: str = "") -> bytes:
    body = "".join(
        f"webuser{i},webuser{i}@example.org,Web{i},User{i}\n" for i in range(start, start + rows)
    )
    return ("username,email,firstname,lastname\n" + body + extra).encode("utf-8")


def upload_users(pages: Pages, data: bytes, **fields):
    return pages.http.post(
        f"{pages.url}/send/users", data={"csrf": pages.csrf, **fields}, timeout=60,
        files={"file": ("staff.csv", data, "text/csv")}, allow_redirects=False,
    )  # fmt: skip


def test_users_import_creates_nothing_until_confirmed_then_creates_and_welcomes_once(
    served,
    site,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    pages = Pages(served)
    bad = upload_users(pages, import_csv(3, extra="Bad Name,x@example.org,B,C\n"))
    where = bad.headers["Location"]
    refused = pages.get(where)
    assert refused.status_code == 400 and "line 5: username Bad Name must be lower case" in text(
        refused.text)  # fmt: skip
    users_before = len(site.users)

    where = upload_users(pages, import_csv(4)).headers["Location"]
    page = pages.get(where)
    assert page.status_code == 200, page.text
    words = text(page.text)
    assert "Accounts to create 4" in words and "Already in Moodle 0" in words
    assert "(temporary password: set when the email is sent)" in words
    assert len(site.users) == users_before and Job.select().count() == 0

    made = pages.post(where, expected="4")
    assert made.status_code == 303, made.text
    job_id = jobs_of(made.headers["Location"])
    names = {u.username: u for u in site.users.values()}
    assert all(f"webuser{i}" in names for i in range(1, 5))
    welcomed = {r.userid for r in Recipient.select().where(Recipient.job == job_id)}
    assert welcomed == {names[f"webuser{i}"].id for i in range(1, 5)}
    ((_, detail),) = audit_events("users_import")
    assert '"created": 4' in detail and "staff.csv" in detail
    assert pages.post(where, expected="4").status_code == 404  # the file is gone

    # The same file and two more rows: only the two are created, only they are welcomed.
    where = upload_users(pages, import_csv(6)).headers["Location"]
    words = text(pages.get(where).text)
    assert "Accounts to create 2" in words and "Already in Moodle 4" in words
    job2 = jobs_of(pages.post(where, expected="2").headers["Location"])
    assert Recipient.select().where(Recipient.job == job2).count() == 2


def test_users_import_refuses_a_changed_preview_and_non_administrators(
    served,
    site,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    pages = Pages(served)
    where = upload_users(pages, import_csv(3)).headers["Location"]
    assert "Accounts to create 3" in text(pages.get(where).text)
    client = moodle_client(site)
    try:  # someone creates one of them in Moodle meanwhile
        functions.create_users(client, [{"username": "webuser2", "firstname": "W",
                                         "lastname": "U", "email": "webuser2@example.org",
                                         "password": "First-123x"}])  # fmt: skip
    finally:
        client.close()
    stale = pages.post(where, expected="3")
    assert stale.status_code == 409
    assert "It showed 3 accounts to create; now it is 2" in text(stale.text)
    assert Job.select().count() == 0

    manager = Pages(served, "carol", companies=served.companies[:1])
    assert upload_users(manager, import_csv(1)).status_code == 403
    assert manager.get(where).status_code == 403
    assert 'action="/send/users"' not in manager.get("/send").text


def test_a_moodle_without_a_function_a_tool_needs_is_named_and_nothing_runs(
    served,
    site,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    pages = Pages(served)
    site.remove_function("core_enrol_get_enrolled_users")
    page = pages.get("/send/reengagement", course=site.main_course_id, inactive_days=30)
    assert page.status_code == 502
    assert "core_enrol_get_enrolled_users" in text(page.text)
    assert "Add it to the service" in text(page.text)
    site.remove_function("local_manireports_get_new_users")
    page = pages.get("/send/welcome", since="24h")
    assert page.status_code == 502 and "local_manireports_get_new_users" in text(page.text)
    site.remove_function("core_user_update_users")
    where = upload_users(pages, import_csv(2)).headers["Location"]
    page = pages.get(where)
    assert page.status_code == 502 and "core_user_update_users" in text(page.text)
    api = served.token("ops").post("/send/welcome", json={"users": [3]})
    assert api.status_code == 502 and "core_user_update_users" in api.json()["error"]
    assert Job.select().count() == 0
