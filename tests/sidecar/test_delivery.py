"""Local delivery through a real aiosmtpd server and into a Maildir, driven by a test clock."""

import mailbox
from dataclasses import replace
from email import message_from_bytes, policy
from io import BytesIO
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from pypdf import PdfReader

from providers.email import make_message_id
from providers.local.maildir import MaildirSender
from providers.local.settings import SmtpSettings
from providers.local.smtp import SmtpSender
from sidecar import jobs
from sidecar.db.models import Certificate, Job, Recipient
from sidecar.delivery import DeliverySettings, LocalDelivery
from sidecar.render import Renderer
from sidecar.status import JobStatus
from sidecar.status import RecipientStatus as R
from tests.e2e.conftest import free_port


class ScriptedHandler:
    """Answers each recipient address by a script: '250', '451 ...' or '550 ...'."""

    def __init__(self, script=None):
        self.script = script or {}
        self.accepted = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        answers = self.script.get(address)
        if answers:
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
            if not answer.startswith("250"):
                return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        self.accepted.append(message_from_bytes(raw, policy=policy.default))
        return "250 OK"


@pytest.fixture
def smtp_server():
    servers = []

    def start(script=None):
        handler = ScriptedHandler(script)
        controller = Controller(handler, hostname="127.0.0.1", port=free_port())
        controller.start()
        servers.append(controller)
        handler.port = controller.port
        return handler

    yield start
    for c in servers:
        c.stop()


def make_delivery(clock, tmp_path, open_sender, max_attempts=3):
    settings = DeliverySettings(
        sender="Academy <noreply@academy.example>",
        certificate_dir=tmp_path / "certs",
        public_url="https://offload.example",
        max_attempts=max_attempts,
        backoff=(60.0, 300.0),
    )
    return LocalDelivery(
        settings, open_sender=open_sender, renderer=Renderer(), pdf=None, clock=clock
    )


def queue_job(clock, people, **spec):
    course = {
        "fullname": "Safety 101",
        "shortname": "S101",
        "url": "https://moodle.example/course/view.php?id=5",
    }
    base = dict(type="send_reminder", template_id="reminder", source="test",
                template_data={"course": course})  # fmt: skip
    base.update(spec)
    created = jobs.create_job(jobs.JobSpec(**base), people, batch_size=200, now=clock())
    jobs.queue_local_batches(clock(), created.job_id)
    return created.job_id


def person(i, first="Ana", last="Silva"):
    return jobs.RecipientIn(i, f"learner{i}@example.org", first, last)


def smtp_opener(port):
    return lambda: SmtpSender(
        SmtpSettings(host="127.0.0.1", port=port, security="none", retry_backoff=(0.01,))
    )


def status_of(job_id):
    return {
        r.userid: (r.status, r.last_error, r.attempts)
        for r in Recipient.select().where(Recipient.job == job_id)
    }


def test_each_learner_gets_one_message_with_a_stable_message_id(db, clock, tmp_path, smtp_server):
    server = smtp_server()
    job_id = queue_job(clock, [person(1), person(2)])
    make_delivery(clock, tmp_path, smtp_opener(server.port)).run_once()
    assert [m["To"] for m in server.accepted] == ["learner1@example.org", "learner2@example.org"]
    msg = server.accepted[0]
    assert msg["Message-ID"].strip() == make_message_id(job_id, 1, "academy.example")
    kinds = {part.get_content_type() for part in msg.walk()}
    assert {"text/plain", "text/html"} <= kinds
    assert "Safety 101" in msg.get_body(("plain",)).get_content()
    assert Job.get_by_id(job_id).status == JobStatus.COMPLETED
    assert {s for s, _, _ in status_of(job_id).values()} == {R.SENT}


def test_5xx_fails_the_recipient_with_the_servers_reply(db, clock, tmp_path, smtp_server):
    server = smtp_server({"learner2@example.org": ["550 5.1.1 mailbox unavailable"]})
    job_id = queue_job(clock, [person(1), person(2)])
    make_delivery(clock, tmp_path, smtp_opener(server.port)).run_once()
    st = status_of(job_id)
    assert st[1][0] == R.SENT
    assert st[2][0] == R.FAILED and "550" in st[2][1] and "mailbox unavailable" in st[2][1]
    assert Job.get_by_id(job_id).status == JobStatus.PARTIAL_FAILURE


def test_4xx_waits_for_backoff_then_succeeds(db, clock, tmp_path, smtp_server):
    script = {"learner1@example.org": ["451 4.3.0 try later", "451 4.3.0 try later", "250"]}
    server = smtp_server(script)
    job_id = queue_job(clock, [person(1)])
    delivery = make_delivery(clock, tmp_path, smtp_opener(server.port))
    delivery.run_once()
    assert status_of(job_id)[1][0] == R.RETRY_PENDING
    delivery.run_once()  # not due yet: nothing happens
    assert status_of(job_id)[1][0] == R.RETRY_PENDING and server.accepted == []
    clock.advance(61)
    delivery.run_once()
    assert status_of(job_id)[1][0] == R.SENT and len(server.accepted) == 1


def test_repeated_4xx_ends_permanently_failed_with_last_error(db, clock, tmp_path, smtp_server):
    server = smtp_server({"learner1@example.org": ["451 4.3.0 greylisted"]})
    job_id = queue_job(clock, [person(1)])
    delivery = make_delivery(clock, tmp_path, smtp_opener(server.port), max_attempts=2)
    delivery.run_once()
    clock.advance(61)
    delivery.run_once()
    status, error, attempts = status_of(job_id)[1]
    assert status == R.PERMANENTLY_FAILED and "greylisted" in error and attempts == 2
    assert Job.get_by_id(job_id).status == JobStatus.FAILED


def test_smtp_server_down_keeps_recipients_queued_for_later(db, clock, tmp_path):
    job_id = queue_job(clock, [person(1), person(2)])
    make_delivery(clock, tmp_path, smtp_opener(free_port())).run_once()
    st = status_of(job_id)
    assert st[1][0] == R.RETRY_PENDING and st[2][0] == R.QUEUED


def test_a_job_cancelled_while_its_batch_is_being_sent_stops_sending(
    db, clock, tmp_path, smtp_server
):
    """A cancel (CLI, API or dashboard) lands while the worker holds the batch: what is
    not sent yet stays cancelled and is never sent (a later `sent` would win over it)."""
    server = smtp_server()
    job_id = queue_job(clock, [person(i) for i in range(1, 6)])
    opened = smtp_opener(server.port)

    class CancelAfterTwo:
        def __init__(self):
            self.inner, self.sent = opened(), 0

        def send(self, msg):
            self.inner.send(msg)
            self.sent += 1
            if self.sent == 2:
                jobs.cancel_job(job_id, clock(), by={"name": "ops"})

        def close(self):
            self.inner.close()

    delivery = make_delivery(clock, tmp_path, CancelAfterTwo)
    delivery.settings = replace(delivery.settings, cancel_check_seconds=0)
    delivery.run_once()
    assert len(server.accepted) == 2
    assert {uid: s for uid, (s, _, _) in status_of(job_id).items()} == {
        1: "sent", 2: "sent", 3: "cancelled", 4: "cancelled", 5: "cancelled"}  # fmt: skip
    assert Job.get_by_id(job_id).status == JobStatus.CANCELLED


def test_certificate_is_rendered_attached_and_verifiable(db, clock, tmp_path):
    names = [("Łukasz", "Żółć"), ("Дмитрий", "Иванов"), ("Ελένη", "Παπαδοπούλου")]
    people = [person(i + 1, f, last) for i, (f, last) in enumerate(names)]
    job_id = queue_job(clock, people, actions=jobs.Actions(email=True, certificate=True))
    maildir = tmp_path / "mail"
    make_delivery(clock, tmp_path, lambda: MaildirSender(maildir)).run_once()
    messages = list(mailbox.Maildir(maildir, create=False))
    assert len(messages) == 3
    assert Job.get_by_id(job_id).status == JobStatus.COMPLETED
    # each certificate is recorded against this job and its learner: what /verify/{code} looks up
    certs = list(
        Certificate.select().where(Certificate.job_id == job_id).order_by(Certificate.userid)
    )
    assert [c.userid for c in certs] == [1, 2, 3]
    for (first, last), cert in zip(names, certs, strict=True):
        pdf = Path(tmp_path / "certs" / cert.key)
        text = "".join(page.extract_text() for page in PdfReader(pdf).pages)
        assert f"{first} {last}" in text and cert.code in text
    msg = next(
        m for m in messages if m["To"].endswith("learner1@example.org>") or "learner1@" in m["To"]
    )
    pdfs = [p for p in msg.walk() if p.get_content_type() == "application/pdf"]
    assert len(pdfs) == 1
    text = PdfReader(BytesIO(pdfs[0].get_payload(decode=True))).pages[0].extract_text()
    assert "Łukasz Żółć" in text
