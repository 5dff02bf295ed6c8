"""One-click unsubscribe (RFC 8058): the headers and footer a learner's mail carries, the
`/unsubscribe/{token}` endpoint over real HTTP, and the jobs that then leave them out,
on SQLite, PostgreSQL and MariaDB."""

import re

import pytest
import requests

from sidecar import jobs, unsubscribe
from sidecar.config import Config
from sidecar.db import migrations
from sidecar.db.models import AuditLog, Batch, Job, OptOut, Recipient, SchemaVersion
from sidecar.delivery import DeliverySettings, LocalDelivery
from sidecar.errors import Conflict
from sidecar.render import Renderer
from sidecar.status import BatchStatus, JobStatus
from sidecar.status import RecipientStatus as R
from sidecar.web.app import make_app
from sidecar.web.server import HttpServer

from . import test_delivery
from .test_delivery import person, queue_job, smtp_opener

smtp_server = test_delivery.smtp_server  # the aiosmtpd sink fixture

KEY = "uJ0ZGmpcf1sv1Ktzi4Qev3Zdtzu5y2sXk0Gm3FA9oWY="  # a Fernet key for these tests only
PUBLIC = "https://offload.example"
TOKEN = r"[A-Za-z0-9._~-]+"


def config(**over) -> Config:
    base = {"server": {"public_url": PUBLIC}, "security": {"encryption_key": KEY}}
    return Config.model_validate({**base, **over})


@pytest.fixture
def links():
    return unsubscribe.links_for(config())


def deliver(clock, tmp_path, server, links, people, **spec) -> str:
    job_id = queue_job(clock, people, **spec)
    run_delivery(clock, tmp_path, server, links)
    return job_id


def run_delivery(clock, tmp_path, server, links) -> int:
    settings = DeliverySettings(
        sender="Academy <noreply@academy.example>", certificate_dir=tmp_path / "certs",
        public_url=PUBLIC, unsubscribe=links,
    )  # fmt: skip
    return LocalDelivery(
        settings, open_sender=smtp_opener(server.port), renderer=Renderer(), pdf=None, clock=clock
    ).run_once()


def bodies(msg) -> tuple[str, str]:
    return msg.get_body(("html",)).get_content(), msg.get_body(("plain",)).get_content()


def status_of(job_id) -> dict[int, tuple[str, str | None]]:
    rows = Recipient.select().where(Recipient.job == job_id)
    return {r.userid: (r.status, r.last_error) for r in rows}


def new_job(clock, type, template_id="reminder", certificate=False, people=(1, 2)) -> str:
    spec = jobs.JobSpec(type=type, template_id=template_id, source="test",
                        actions=jobs.Actions(email=True, certificate=certificate))  # fmt: skip
    return jobs.create_job(spec, [person(u) for u in people], batch_size=50, now=clock()).job_id


# --- configuration ---------------------------------------------------------------------------


def test_links_need_the_switch_an_encryption_key_and_a_public_url():
    assert unsubscribe.links_for(config()) is not None
    assert unsubscribe.unavailable(config()) is None
    off = config(unsubscribe={"enabled": False})
    assert unsubscribe.links_for(off) is None and unsubscribe.unavailable(off) is None
    keyless = Config.model_validate({"server": {"public_url": PUBLIC}})
    assert unsubscribe.links_for(keyless) is None
    assert "security.encryption_key" in unsubscribe.unavailable(keyless)
    # public_url defaults to http://{listen}: a learner cannot reach that, so no links
    nowhere = Config.model_validate({"security": {"encryption_key": KEY}})
    assert unsubscribe.links_for(nowhere) is None
    assert "server.public_url" in unsubscribe.unavailable(nowhere)


def test_a_token_names_learner_and_kind_and_only_its_own_key_reads_it(links):
    token = links.token(1001, "reengagement")
    assert links.read(token) == (1001, "reengagement")
    assert links.url(1001, "reengagement") == f"{PUBLIC}/unsubscribe/{token}"
    other = unsubscribe.links_for(
        config(security={"encryption_key": "4mK3yXc2qvA0pJ9sT1uW8bZ5nD6eF7gH0iL2oR3sU4w="})
    )
    assert other.read(token) is None
    # the raw Fernet key is not the HMAC key: a token made with it is refused
    from providers.signing import seal

    assert links.read(seal(KEY.encode(), "1001.reengagement")) is None


# --- what the mail carries -------------------------------------------------------------------


def test_a_reminder_carries_both_headers_and_a_footer_link_naming_no_address(
    db, clock, tmp_path, smtp_server, links
):
    server = smtp_server()
    deliver(clock, tmp_path, server, links, [person(1), person(2)])

    first, second = server.accepted
    header = first["List-Unsubscribe"].strip()  # folded: the URL is long
    assert re.fullmatch(rf"<{re.escape(PUBLIC)}/unsubscribe/{TOKEN}>", header), header
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = header[1:-1]
    assert links.read(url.rsplit("/", 1)[1]) == (1, "reminders")
    assert "learner1" not in url and "example.org" not in url
    assert second["List-Unsubscribe"].strip() != header  # each learner their own link
    html, text = bodies(first)
    assert f'href="{url}"' in html and url in text


LONG_PUBLIC = "https://learning-offload.academy-example.org"  # 45 characters
COURSE = "Sécurité au travail : les fondamentaux pour tous les employés du site de Lyon"


def raw_header(msg, name: str) -> str:
    """The header's value as it travelled: folding and RFC 2047 encoding left in."""
    (value,) = [v for k, v in msg.raw_items() if k.lower() == name.lower()]
    return value


def test_a_long_link_travels_as_one_plain_header_line_and_the_subject_is_still_encoded(
    db, clock, tmp_path, smtp_server
):
    server = smtp_server()
    links = unsubscribe.links_for(config(server={"public_url": LONG_PUBLIC}))
    course = {"fullname": COURSE, "shortname": "S", "url": "https://m.example/course/5"}
    deliver(clock, tmp_path, server, links, [person(12345)], template_data={"course": course})

    (msg,) = server.accepted
    url = links.url(12345, "reminders")
    assert len(f"List-Unsubscribe: <{url}>") > 78  # a line the policy would have folded
    assert raw_header(msg, "List-Unsubscribe") == f"<{url}>"  # not =?utf-8?q?=3Chttps...
    assert raw_header(msg, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    subject = raw_header(msg, "Subject")
    assert "=?utf-8?q?S=C3=A9curit=C3=A9?=" in subject and "\r\n " in subject  # still folded
    assert msg["Subject"] == f"Reminder: {COURSE}"


def test_without_our_links_a_sites_own_link_gets_list_unsubscribe_but_no_one_click(
    db, clock, tmp_path, smtp_server
):
    server = smtp_server()
    course = {"fullname": "Safety 101", "shortname": "S", "url": "https://m.example/course/5"}
    own = "https://moodle.example/local/unsub.php?u=1&k=abc"
    mailto = "mailto:unsubscribe@academy.example?subject=stop"
    people = [
        person(1),  # the job's variable
        jobs.RecipientIn(2, "learner2@example.org", "Ana", "Silva", {"unsubscribe_url": mailto}),
        jobs.RecipientIn(3, "learner3@example.org", "Ana", "Silva",
                         {"unsubscribe_url": "javascript:alert(1)"}),
    ]  # fmt: skip
    data = {"course": course, "unsubscribe_url": own}
    deliver(clock, tmp_path, server, None, people, template_data=data)

    got = {m["To"]: m for m in server.accepted}
    first, second, third = (got[f"learner{u}@example.org"] for u in (1, 2, 3))
    assert raw_header(first, "List-Unsubscribe") == f"<{own}>"
    assert raw_header(second, "List-Unsubscribe") == f"<{mailto}>"
    assert third["List-Unsubscribe"] is None  # not a link a mailbox provider can follow
    for msg in (first, second, third):
        assert msg["List-Unsubscribe-Post"] is None  # we cannot promise their one-click POST
    assert 'href="https://moodle.example/local/unsub.php?u=1&amp;k=abc"' in bodies(first)[0]


def test_with_our_links_on_ours_win_over_a_sites_own(db, clock, tmp_path, smtp_server, links):
    server = smtp_server()
    course = {"fullname": "Safety 101", "shortname": "S", "url": "https://m.example/course/5"}
    data = {"course": course, "unsubscribe_url": "https://moodle.example/unsub"}
    deliver(clock, tmp_path, server, links, [person(1)], template_data=data)

    (msg,) = server.accepted
    assert raw_header(msg, "List-Unsubscribe") == f"<{links.url(1, 'reminders')}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "moodle.example/unsub" not in "".join(bodies(msg))


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(dict(type="certificate", template_id="completion",
                          actions=jobs.Actions(email=True, certificate=True)), id="certificate"),
        pytest.param(dict(type="send_csv", template_id="completion",
                          actions=jobs.Actions(email=True, certificate=True)),
                     id="csv-with-certificate"),
        pytest.param(dict(type="send_welcome", template_id="welcome",
                          template_data={"site": {"name": "Academy", "url": "https://m.example"},
                                         "username": "ana", "temporary_password": "x"}),
                     id="welcome"),
    ],
)  # fmt: skip
def test_certificate_and_welcome_mail_carry_no_unsubscribe(
    db, clock, tmp_path, smtp_server, links, spec
):
    server = smtp_server()
    spec = dict(spec)  # the parameter is shared by every backend's run
    data = spec.pop(
        "template_data",
        {
            "course": {
                "fullname": "Safety 101",
                "shortname": "S",
                "url": "https://m.example/course/5",
            }
        },
    )
    data = {**data, "unsubscribe_url": "https://hand.example/unsub"}  # set by hand: ignored
    deliver(clock, tmp_path, server, links, [person(1)], template_data=data, **spec)

    (msg,) = server.accepted
    assert msg["List-Unsubscribe"] is None and msg["List-Unsubscribe-Post"] is None
    assert "unsub" not in "".join(bodies(msg)).lower()


def test_when_the_feature_is_off_a_reminder_has_no_headers_and_no_link(
    db, clock, tmp_path, smtp_server
):
    server = smtp_server()
    deliver(clock, tmp_path, server, None, [person(1)])
    (msg,) = server.accepted
    assert msg["List-Unsubscribe"] is None and msg["List-Unsubscribe-Post"] is None
    assert "nsubscribe" not in "".join(bodies(msg))


# --- the endpoint ----------------------------------------------------------------------------


@pytest.fixture
def web(db, clock, links, serve_app):
    """The daemon's HTTP app on 127.0.0.1; `web(on=False)` serves it with the feature off."""

    def start(on=True):
        service = unsubscribe.UnsubscribeService(links, clock) if on else None
        return serve_app(handle_callback=lambda raw, sig: {}, health=lambda: (True, {}),
                         unsubscribe=service)  # fmt: skip

    return start


ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def nothing_recorded() -> bool:
    return (
        OptOut.select().count() == 0
        and not AuditLog.select().where(AuditLog.event == "unsubscribed").exists()
    )


def test_one_click_post_leaves_the_learner_out_of_later_reminders_but_not_other_mail(
    db, clock, web, links
):
    srv = web()
    url = f"{srv.url}/unsubscribe/{links.token(1, 'reminders')}"
    for _ in range(2):  # a mailbox provider may POST twice: the same outcome
        resp = requests.post(url, data=ONE_CLICK, timeout=10, allow_redirects=False)
        assert resp.status_code == 200, resp.text
    recorded = [(o.userid, o.kind, o.source) for o in OptOut.select()]
    assert recorded == [(1, "reminders", "one-click")]

    reminder = new_job(clock, "send_reminder")
    assert status_of(reminder) == {
        1: (R.SUPPRESSED, "unsubscribed from reminders"),
        2: (R.PENDING, None),
    }
    assert unsubscribe.opted_out([1, 2, 3], "reminders") == {1}
    for other in (new_job(clock, "send_reengagement", "reengagement"),
                  new_job(clock, "send_csv", "custom"),
                  new_job(clock, "certificate", "completion", certificate=True)):  # fmt: skip
        assert {s for s, _ in status_of(other).values()} == {R.PENDING}


def test_retry_records_a_failed_learner_who_has_since_unsubscribed_suppressed(
    db, clock, tmp_path, smtp_server, links
):
    refuse = ["550 5.2.2 mailbox full"]
    server = smtp_server({"learner1@example.org": refuse, "learner2@example.org": refuse})
    job_id = deliver(clock, tmp_path, server, links, [person(1), person(2)])
    unsubscribe.opt_out(1, "reminders", "one-click", clock())

    assert jobs.retry_job(job_id, clock()) == 1
    assert status_of(job_id) == {
        1: (R.SUPPRESSED, "unsubscribed from reminders"),
        2: (R.RETRY_PENDING, "550 5.2.2 mailbox full"),
    }


def test_retry_with_only_unsubscribed_failures_settles_them_and_the_job(
    db, clock, tmp_path, smtp_server, links
):
    server = smtp_server({"learner1@example.org": ["550 5.2.2 mailbox full"]})
    job_id = deliver(clock, tmp_path, server, links, [person(1), person(2)])
    assert Job.get_by_id(job_id).status == JobStatus.PARTIAL_FAILURE
    unsubscribe.opt_out(1, "reminders", "one-click", clock())

    with pytest.raises(Conflict, match="1 unsubscribed from reminders, now recorded suppressed"):
        jobs.retry_job(job_id, clock())
    assert status_of(job_id) == {
        1: (R.SUPPRESSED, "unsubscribed from reminders"),
        2: (R.SENT, None),
    }
    assert Job.get_by_id(job_id).status == JobStatus.COMPLETED  # nothing failed any more


def test_a_learner_who_unsubscribes_while_the_job_waits_gets_none_of_it(
    db, clock, tmp_path, smtp_server, links
):
    server = smtp_server()
    job_id = queue_job(clock, [person(1), person(2)])
    everyone = queue_job(clock, [person(3), person(4)])
    kept = queue_job(clock, [person(3)], type="send_csv", template_id="completion",
                     actions=jobs.Actions(email=True, certificate=True))  # fmt: skip
    for uid in (1, 3, 4):
        unsubscribe.opt_out(uid, "reminders", "one-click", clock())
    unsubscribe.opt_out(3, "custom", "one-click", clock())

    assert run_delivery(clock, tmp_path, server, links) == 2  # learner 2, and 3's certificate
    to = sorted(m["To"] for m in server.accepted)
    assert to == ["learner2@example.org", "learner3@example.org"]
    assert status_of(job_id) == {1: (R.SUPPRESSED, "unsubscribed from reminders"),
                                 2: (R.SENT, None)}  # fmt: skip
    assert Job.get_by_id(job_id).status == JobStatus.COMPLETED
    # a batch left with nobody closes, and its job completes
    assert {s for s, _ in status_of(everyone).values()} == {R.SUPPRESSED}
    assert Job.get_by_id(everyone).status == JobStatus.COMPLETED
    assert Batch.get(Batch.job == everyone).status == BatchStatus.DONE
    # a certificate, and the email carrying it, still go
    assert status_of(kept) == {3: (R.SENT, None)}


def test_get_shows_one_button_and_changes_nothing_until_it_is_pressed(db, clock, web, links):
    srv = web()
    url = f"{srv.url}/unsubscribe/{links.token(7, 'custom')}"
    for _ in range(3):  # a mail scanner following the link
        assert requests.head(url, timeout=10).status_code == 200
        page = requests.get(url, timeout=10)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.text.count("<form method=post>") == 1 and page.text.count("<button") == 1
    assert "announcements" in page.text and page.headers["Cache-Control"] == "no-store"
    assert nothing_recorded()

    fields = dict(re.findall(r"<input type=hidden name=([\w-]+) value=([\w-]+)>", page.text))
    done = requests.post(url, data=fields, timeout=10)  # the button, as a browser sends it
    assert done.status_code == 200 and "unsubscribed" in done.text
    assert [(o.userid, o.kind, o.source) for o in OptOut.select()] == [(7, "custom", "page")]


def _forge(links):
    good = links.token(1, "reminders")
    mac = good.rpartition(".")[2]
    return {
        "other learner": f"2.reminders.{mac}",
        "other kind": f"1.custom.{mac}",
        "mac changed": good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        "no mac": "1.reminders",
        "made with another key": unsubscribe.Links(b"k" * 32, PUBLIC).token(1, "reminders"),
        "unknown kind": f"1.welcome.{mac}",
        "garbage": "%00%0d%0a" + "x" * 300,
    }


@pytest.mark.parametrize(
    "case",
    ["other learner", "other kind", "mac changed", "no mac", "made with another key",
     "unknown kind", "garbage"],
)  # fmt: skip
def test_a_forged_altered_or_malformed_token_gets_400_and_changes_nothing(
    db, clock, web, links, case
):
    srv = web()
    url = f"{srv.url}/unsubscribe/{_forge(links)[case]}"
    assert requests.get(url, timeout=10).status_code == 400
    resp = requests.post(url, data=ONE_CLICK, timeout=10)
    assert resp.status_code == 400 and "not valid" in resp.text
    assert nothing_recorded()


FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    "body, content_type",
    [
        pytest.param(b"List-Unsubscribe=One-Click\r\n", FORM, id="trailing CRLF"),
        pytest.param(b"  List-Unsubscribe=One-Click \n", f"{FORM}; charset=utf-8",
                     id="spaces, charset"),
        pytest.param(None, None, id="multipart/form-data"),
        pytest.param(b"List-Unsubscribe=One-Click\r\n", "text/plain", id="text/plain"),
        pytest.param(b"List-Unsubscribe=One-Click", None, id="no Content-Type"),
    ],
)  # fmt: skip
def test_a_one_click_post_is_taken_in_every_form_rfc_8058_allows(
    db, clock, web, links, body, content_type
):
    srv = web()
    url = f"{srv.url}/unsubscribe/{links.token(4, 'reengagement')}"
    if body is None:  # what requests sends for a form with a file-like part: multipart
        resp = requests.post(url, files={"List-Unsubscribe": (None, "One-Click")}, timeout=10)
        assert resp.request.headers["Content-Type"].startswith("multipart/form-data")
    else:
        headers = {"Content-Type": content_type} if content_type else {}
        resp = requests.post(url, data=body, headers=headers, timeout=10)
        assert resp.request.headers.get("Content-Type") == content_type
    assert resp.status_code == 200, resp.text
    assert [(o.userid, o.kind, o.source) for o in OptOut.select()] == [
        (4, "reengagement", "one-click")
    ]


@pytest.mark.parametrize(
    "body, content_type",
    [
        pytest.param(b"List-Unsubscribe=One-Click&more=1", None, id="more than the line"),
        pytest.param(b"List-Unsubscribe=one-click", "text/plain", id="another value"),
        pytest.param(b'{"List-Unsubscribe": "One-Click"}', "application/json", id="JSON"),
    ],
)
def test_a_post_that_is_not_one_click_changes_nothing(db, clock, web, links, body, content_type):
    srv = web()
    url = f"{srv.url}/unsubscribe/{links.token(4, 'reengagement')}"
    headers = {"Content-Type": content_type} if content_type else {}
    assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 400
    assert nothing_recorded()


def test_a_post_without_one_click_in_its_body_changes_nothing(db, clock, web, links):
    srv = web()
    url = f"{srv.url}/unsubscribe/{links.token(1, 'reminders')}"
    assert requests.post(url, timeout=10).status_code == 400
    assert requests.post(url, data={"List-Unsubscribe": "no"}, timeout=10).status_code == 400
    big = requests.post(url, data={"List-Unsubscribe": "One-Click", "pad": "x" * 10_000},
                        timeout=10)  # fmt: skip
    assert big.status_code == 413
    assert nothing_recorded()


def test_with_the_feature_off_an_old_link_gets_a_404_page_pointing_at_the_site(
    db, clock, web, links
):
    srv = web(on=False)
    url = f"{srv.url}/unsubscribe/{links.token(1, 'reminders')}"
    assert requests.head(url, timeout=10).status_code == 404
    for resp in (requests.get(url, timeout=10), requests.post(url, data=ONE_CLICK, timeout=10)):
        assert resp.status_code == 404
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "handled by the site" in resp.text and "administrator" in resp.text
        assert '"error"' not in resp.text
    assert nothing_recorded()
    other = requests.get(f"{srv.url}/nowhere", timeout=10)  # elsewhere: the JSON error
    assert other.status_code == 404 and other.json()["status"] == 404


def test_a_failure_while_recording_answers_500_and_logs_no_token(db, clock, links, caplog):
    class Broken(unsubscribe.UnsubscribeService):
        def record(self, userid, kind, source):
            raise RuntimeError("database went away")

    app = make_app(handle_callback=lambda raw, sig: {}, health=lambda: (True, {}),
                   unsubscribe=Broken(links, clock))  # fmt: skip
    srv = HttpServer(app, "127.0.0.1", 0)
    srv.start()
    try:
        token = links.token(1, "reminders")
        resp = requests.post(f"{srv.url}/unsubscribe/{token}", data=ONE_CLICK, timeout=10)
    finally:
        srv.stop()
    assert resp.status_code == 500 and "database went away" in caplog.text
    assert token not in caplog.text and token.rpartition(".")[2] not in caplog.text


# --- the list --------------------------------------------------------------------------------


def test_an_opt_out_is_kept_once_and_lifted_by_kind_or_whole(db, clock):
    assert unsubscribe.opt_out(5, "reminders", "cli", clock())
    assert not unsubscribe.opt_out(5, "reminders", "one-click", clock())
    assert unsubscribe.opt_out(5, "custom", "cli", clock())
    assert [(o.kind, o.source) for o in unsubscribe.listing(5)] == [
        ("custom", "cli"),
        ("reminders", "cli"),
    ]
    assert unsubscribe.remove(5, "custom", clock()) == 1
    assert unsubscribe.opted_out([5], "custom") == set()
    assert unsubscribe.remove(5, None, clock()) == 1 and unsubscribe.listing() == []
    assert unsubscribe.opted_out([5], None) == set()


def test_two_opt_outs_at_once_keep_the_first_source_and_time_and_audit_once(db, clock, monkeypatch):
    first = clock()
    assert unsubscribe.opt_out(8, "custom", "page", first)
    clock.advance(60)
    # the second request looked before the first committed (possible on PostgreSQL and
    # MariaDB): whatever it saw then, the row the first wrote stands
    monkeypatch.setattr(OptOut, "get_or_none", classmethod(lambda cls, *where: None))
    assert not unsubscribe.opt_out(8, "custom", "one-click", clock())

    assert [(o.userid, o.kind, o.source, o.created_at) for o in OptOut.select()] == [
        (8, "custom", "page", first)
    ]
    assert AuditLog.select().where(AuditLog.event == "unsubscribed").count() == 1


def test_migration_5_adds_the_opt_out_list_to_a_version_4_database(db, clock):
    db.drop_tables([OptOut])
    SchemaVersion.delete().where(SchemaVersion.version == 5).execute()
    assert 5 not in migrations.applied_versions(db)  # later steps stay recorded

    assert migrations.upgrade(db) == [5]
    assert migrations.upgrade(db) == []
    assert unsubscribe.opt_out(1, "reminders", "cli", clock())
    assert unsubscribe.opted_out([1], "reminders") == {1}


# --- a scheduled reminder, end to end --------------------------------------------------------


@pytest.fixture
def site():
    from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site

    from ..conftest import schedule_row

    s = generate_site(SiteSpec(seed=11, learners=12, courses=1, companies=1))
    s.schedules[:] = [schedule_row(s.main_course_id, suppress_course_completion=0)]
    with SandboxServer(s) as server:
        s.server_url = server.url
        yield s


def test_the_link_in_a_delivered_reminder_keeps_that_learner_out_of_the_next_run(
    db_url, db, tmp_path, site
):
    import mailbox
    from datetime import datetime, timedelta

    from sidecar import runs, sync
    from sidecar.config import load
    from sidecar.daemon import Daemon
    from sidecar.db.models import Job, database
    from sidecar.localrun import deliver_job
    from sidecar.moodle import open_client
    from sidecar.runtime import Runtime
    from tests.e2e.conftest import free_port

    from ..conftest import Clock

    path = tmp_path / "offload.toml"
    path.write_text(
        f'[moodle]\nurl = "{site.server_url}"\ntoken = "{site.token}"\n'
        f'[database]\nurl = "{db_url}"\n'
        f'[server]\nlisten = "127.0.0.1:{free_port()}"\npublic_url = "{PUBLIC}"\n'
        f'[security]\nencryption_key = "{KEY}"\n'
        '[schedules]\ntimezone = "Europe/London"\n'
        f'[providers.local]\nfrom = "noreply@academy.example"\nmaildir = "{tmp_path}/mail"\n'
        f'certificate_dir = "{tmp_path}/certs"\n'
    )
    config = load(path)
    clock = Clock(datetime(2026, 12, 1, 8, 0, 0))
    rt = Runtime(config, clock=clock)
    rt.ready_db()
    sync.sync_all(config, lambda: open_client(config), clock())
    clock.now = datetime(2026, 12, 1, 9, 1)
    [first] = runs.Runner(rt).tick()
    deliver_job(rt, first.jobs[0])
    mails = list(mailbox.Maildir(tmp_path / "mail", create=False))
    assert len(mails) > 2
    chosen = mails[0]
    userid = int(chosen["Message-ID"].split(".")[1].split("@")[0])
    url = chosen["List-Unsubscribe"].strip()[1:-1]

    daemon = Daemon(config, path)  # the daemon serves the link learners click
    daemon.start(schedules=False)
    try:
        local = url.replace(PUBLIC, daemon.http.url)  # what the reverse proxy does
        assert requests.post(local, data=ONE_CLICK, timeout=10).status_code == 200
    finally:
        daemon.shutdown()

    database.initialize(rt.db)  # the models back on this runtime's connection
    clock.now += timedelta(days=1)
    [second] = runs.Runner(rt).tick()
    (job,) = [Job.get_by_id(j) for j in second.jobs]
    got = status_of(job.id)
    # The run leaves the learner out, counted by reason; everyone else is reminded again.
    assert second.counts["left_out"].get("unsubscribed") == 1
    assert userid not in got and len(got) == len(mails) - 1
    assert all(s == R.PENDING for s, _ in got.values())
    rt.close()
