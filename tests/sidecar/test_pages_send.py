"""The send page over real HTTP with a session cookie, on every database backend: a CSV
uploaded from the browser is previewed as `send csv` previews it (invalid rows by line
number, nothing sent until confirmed), sent once under the CLI's idempotency key, and
only by a site administrator."""

import html
import re

import pytest
from cryptography.fernet import Fernet

from sidecar import uploads
from sidecar.config import Config
from sidecar.db.models import Job, Recipient
from sidecar.localrun import deliver_job
from sidecar.runtime import Runtime
from tests.sidecar.api_helpers import audit_events, serve_api
from tests.sidecar.test_pages_schedules import Pages

GOOD = (
    "userid,email,firstname,lastname,room\n"
    "101,ana@example.org,Ana,Silva,B12\n"
    "102,ben@example.org,Ben,Okafor,C3\n"
    "103,chloe@example.org,Chloé,Martin,A1\n"
)
BAD = GOOD + "104,not-an-address,Dan,Lee,D4\n"
MESSAGE = {"template": "custom", "subject": "Room change", "message": "Your room is {{ room }}."}


@pytest.fixture
def served(serve_app, db_url, db, clock, tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    config = Config.model_validate({
        "server": {"public_url": "https://offload.example.org"},
        "database": {"url": db_url},
        "security": {"encryption_key": Fernet.generate_key().decode()},
        "dashboard": {"enabled": True},
        "providers": {"local": {"from": "Academy <noreply@academy.example>",
                                "maildir": str(tmp_path / "mail"),
                                "certificate_dir": str(tmp_path / "certs")}},
    })  # fmt: skip
    rt = Runtime(config, clock=clock)
    rt.ready_db()
    api = serve_api(serve_app, clock, config, rt)
    api.runtime = rt
    return api


def upload(pages: Pages, text: str, csrf="auto", name="rooms.csv", **fields):
    data = {**MESSAGE, **fields}
    if csrf:
        data["csrf"] = pages.csrf if csrf == "auto" else csrf
    return pages.http.post(f"{pages.url}/send/csv", data=data, timeout=60, allow_redirects=False,
                           files={"file": (name, text.encode("utf-8"), "text/csv")})  # fmt: skip


def text_of(resp) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", resp.text))


def test_an_upload_is_previewed_and_nothing_is_sent_until_confirmed(served):
    pages = Pages(served)
    form = pages.get("/send")
    assert form.status_code == 200 and 'enctype="multipart/form-data"' in form.text
    resp = upload(pages, GOOD)
    assert resp.status_code == 303
    where = resp.headers["Location"]
    assert re.fullmatch(r"/send/csv/[A-Za-z0-9_-]{20,}", where)
    page = pages.get(where)
    assert page.status_code == 200
    words = " ".join(text_of(page).split())
    assert "Valid rows 3" in words and "Invalid rows 0" in words and "To send 3" in words
    assert "Subject: Room change" in words and "Your room is B12." in words  # row 1, rendered
    assert "room" in words  # the extra column, a template variable
    assert Job.select().count() == 0  # a preview commits nothing

    sent = pages.post(where)
    assert sent.status_code == 303 and sent.headers["Location"].startswith("/jobs/")
    job_id = sent.headers["Location"].rsplit("/", 1)[1]
    assert sorted(r.email for r in Recipient.select().where(Recipient.job == job_id)) == [
        "ana@example.org", "ben@example.org", "chloe@example.org"]  # fmt: skip
    ((event, detail),) = audit_events("csv_send")
    assert '"name": "alice"' in detail and '"via": "dashboard"' in detail and "rooms.csv" in detail
    # The staged copy is gone: the same preview link cannot send again.
    assert pages.get(where).status_code == 404
    assert pages.post(where).status_code == 404

    counts = deliver_job(served.runtime, job_id, show_progress=False)
    assert counts == {"sent": 3}
    mails = list((served.runtime.config.providers.local.maildir / "new").iterdir())
    assert len(mails) == 3 and any(b"Your room is C3." in m.read_bytes() for m in mails)


def test_invalid_rows_are_listed_by_line_and_block_the_send(served):
    pages = Pages(served)
    where = upload(pages, BAD).headers["Location"]
    assert Job.select().count() == 0
    page = pages.get(where)
    words = " ".join(text_of(page).split())
    assert "Invalid rows 1" in words and "line 5" in words
    assert "Nothing will be sent" in words
    assert f'action="{where}"' not in page.text  # no Send button
    refused = pages.post(where)  # a crafted confirmation is refused all the same
    assert refused.status_code == 400 and "invalid rows" in text_of(refused)
    assert Job.select().count() == 0

    # Ticked "send the valid rows": the three good ones go, the bad one is audited by line.
    where = upload(pages, BAD, skip_invalid="on").headers["Location"]
    assert "Send to 3 recipients" in pages.get(where).text
    assert pages.post(where).status_code == 303
    assert Recipient.select().count() == 3
    ((_, detail),) = audit_events("csv_rows_skipped")
    assert '"lines": [5]' in detail


def test_the_same_file_sent_twice_mails_nobody_twice(served):
    pages = Pages(served)
    assert pages.post(upload(pages, GOOD).headers["Location"]).status_code == 303
    again = upload(pages, GOOD).headers["Location"]
    words = " ".join(text_of(pages.get(again)).split())
    assert "Already sent 3" in words and "To send 0" in words and "Nothing to send" in words
    assert Recipient.select().count() == 3
    # A changed file is another send, unless it goes under the same key, as the CLI's --key:
    # then only its new row is sent.
    longer = GOOD + "105,eve@example.org,Eve,Adams,E5\n"
    assert "Send to 4 recipients" in pages.get(upload(pages, longer).headers["Location"]).text
    assert pages.post(upload(pages, GOOD, key="rooms").headers["Location"]).status_code == 303
    more = upload(pages, longer, key="rooms").headers["Location"]
    assert "To send 1" in " ".join(text_of(pages.get(more)).split())
    assert pages.post(more).status_code == 303
    pending = Recipient.select().where(Recipient.status == "pending")
    assert pending.count() == 3 + 3 + 1  # the first file under each key, then only Eve


def test_only_a_site_administrator_may_send_a_csv(served):
    manager = Pages(served, "carol", companies=(7,))
    page = manager.get("/send")  # a manager's send page has their tools, not the CSV
    assert page.status_code == 200 and 'action="/send/csv"' not in page.text
    assert upload(manager, GOOD).status_code == 403
    reader = Pages(served, "rita", read_only=True)
    assert reader.get("/send").status_code == 403
    assert upload(reader, GOOD).status_code == 403
    admin = Pages(served)
    assert 'href="/send"' in admin.get("/").text
    assert 'href="/send"' not in reader.get("/").text
    assert upload(admin, GOOD, csrf=None).status_code == 403  # no CSRF token
    # Another admin cannot see or confirm alice's upload.
    where = upload(admin, GOOD).headers["Location"]
    other = Pages(served, "bob")
    assert other.get(where).status_code == 404 and other.post(where).status_code == 404
    assert Job.select().count() == 0


def test_bad_uploads_get_a_clear_error_and_keep_nothing(served, monkeypatch):
    pages = Pages(served)
    no_subject = upload(pages, GOOD, subject="")
    assert no_subject.status_code == 400 and "needs a subject" in text_of(no_subject)
    unknown = upload(pages, GOOD, template="nope")
    assert unknown.status_code == 400 and "no such email template" in text_of(unknown)
    monkeypatch.setattr(uploads, "MAX_BYTES", 1000)
    big = upload(pages, GOOD * 20)
    assert big.status_code == 413
    assert list(uploads.root().iterdir()) == []  # nothing staged by any of them


# --- POST /api/v1/send/csv: the same preview and send for programs -------------------------


def api_send(caller, text: str, csrf="auto", **fields):
    return caller.post("/send/csv", csrf=csrf, data={**MESSAGE, **fields},
                       files={"file": ("rooms.csv", text.encode(), "text/csv")})  # fmt: skip


def test_the_api_previews_then_sends_once(served):
    program = served.token("crm")
    pv = api_send(program, BAD)
    assert pv.status_code == 200, pv.text
    body = pv.json()
    assert body["valid_rows"] == 3 and body["to_send"] == 3 and body["job"] is None
    assert body["invalid_rows"] == [{"line": 5, "message": body["invalid_rows"][0]["message"]}]
    assert "not-an-address" in body["invalid_rows"][0]["message"]
    assert body["sample"]["text"].strip() == "Your room is B12."
    refused = api_send(program, BAD, confirm="true")
    assert refused.status_code == 400 and "invalid rows" in refused.json()["error"]
    assert Job.select().count() == 0

    sent = api_send(program, GOOD, confirm="true")
    assert sent.status_code == 201, sent.text
    job = sent.json()["job"]
    assert job["pending"] == 3
    assert Recipient.select().where(Recipient.job == job["job_id"]).count() == 3
    ((_, detail),) = audit_events("csv_send")
    assert '"name": "crm"' in detail and '"via": "api"' in detail

    again = api_send(program, GOOD, confirm="true")  # the same file: nobody twice
    assert again.status_code == 201
    assert again.json()["already_sent"] == 3 and again.json()["job"]["pending"] == 0
    assert Recipient.select().where(Recipient.status == "pending").count() == 3
    assert list(uploads.root().iterdir()) == []  # the API keeps no file


def test_the_api_send_is_for_site_wide_principals_and_writers(served):
    assert api_send(served.token("acme", company=7), GOOD).status_code == 403
    reader = served.token("watcher", read_only=True)
    assert api_send(reader, GOOD).status_code == 200  # a preview changes nothing
    assert api_send(reader, GOOD, confirm="true").status_code == 403
    session = served.session("alice")
    assert api_send(session, GOOD, confirm="true").status_code == 201  # with X-CSRF-Token
    no_csrf = api_send(session, GOOD, confirm="true", csrf=None)
    assert no_csrf.status_code == 403
    assert Recipient.select().count() == 3
    missing = served.token("crm").post("/send/csv", data=MESSAGE)
    assert missing.status_code == 400 and missing.json()["error"].startswith("file:")
