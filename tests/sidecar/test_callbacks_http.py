"""POST /callback over real HTTP against the ledger: every rejection changes nothing."""

import json
import uuid

import pytest
import requests

from providers.signing import sign
from sidecar import jobs
from sidecar.callbacks import CallbackService, CallbackSettings
from sidecar.db.models import AuditLog, Batch, Recipient, SeenCallback
from sidecar.status import JobStatus
from sidecar.status import RecipientStatus as R
from sidecar.web.app import make_app
from sidecar.web.server import HttpServer

SECRETS = ["new-secret-3f9a", "old-secret-77c1"]
MAX_BYTES = 64 * 1024


@pytest.fixture
def ledger(db, clock):
    people = [
        jobs.RecipientIn(i, f"u{i}@example.org", f"F{i}", f"L{i}") for i in (1001, 1002, 1003)
    ]
    created = jobs.create_job(
        jobs.JobSpec(type="send_reminder", template_id="reminder", source="test", route="aws"),
        people, batch_size=200, now=clock(),
    )  # fmt: skip
    batch = Batch.get(Batch.job == created.job_id)
    Batch.update(status="queued").where(Batch.id == batch.id).execute()
    Recipient.update(status=R.QUEUED).where(Recipient.job == created.job_id).execute()
    return created.job_id, batch.id


@pytest.fixture
def server(db, clock):
    service = CallbackService(CallbackSettings(SECRETS, max_skew=300, max_bytes=MAX_BYTES), clock)
    app = make_app(handle_callback=service.handle, health=lambda: (True, {}), max_body=MAX_BYTES)
    srv = HttpServer(app, "127.0.0.1", 0)
    srv.start()
    yield srv
    srv.stop()


def body(job_id, batch_id, updates, *, clock, callback_id=None, ts=None):
    return json.dumps(
        {
            "schema": "offload.callback.v1",
            "callback_id": callback_id or str(uuid.uuid4()),
            "job_id": job_id,
            "batch_id": batch_id,
            "recipient_updates": updates,
            "timestamp": ts if ts is not None else _epoch(clock()),
        }
    ).encode()


def _epoch(dt):
    from datetime import UTC

    return int(dt.replace(tzinfo=UTC).timestamp())


def post(server, raw, secret=SECRETS[0], signature=None):
    sig = signature if signature is not None else sign(secret, raw)
    return requests.post(
        f"{server.url}/callback", data=raw, timeout=10,
        headers={"Content-Type": "application/json", "X-Signature": sig},
    )  # fmt: skip


def snapshot(job_id):
    rows = Recipient.select().where(Recipient.job == job_id).order_by(Recipient.userid)
    return [(r.userid, r.status, r.external_id, r.last_error, r.attempts) for r in rows]


SENT = {"userid": 1001, "status": "sent", "external_id": "ses-1", "timesent": 1700308800}


def test_valid_callback_is_applied_and_answers_counts(server, ledger, clock):
    job_id, batch_id = ledger
    bounced = {
        "userid": 1002,
        "status": "failed",
        "error_message": "Email bounce: invalid address",
        "attempts": 3,
    }
    raw = body(job_id, batch_id, [SENT, bounced], clock=clock)
    resp = post(server, raw)
    assert resp.status_code == 200 and resp.json() == {"accepted": 2, "ignored": 0}
    st = {r[0]: r for r in snapshot(job_id)}
    assert st[1001][1:3] == (R.SENT, "ses-1")
    assert st[1002][1] == R.PERMANENTLY_FAILED and st[1002][3] == "Email bounce: invalid address"
    assert st[1003][1] == R.QUEUED


def test_second_of_two_rotated_secrets_verifies(server, ledger, clock):
    job_id, batch_id = ledger
    resp = post(server, body(job_id, batch_id, [SENT], clock=clock), secret=SECRETS[1])
    assert resp.status_code == 200


def assert_rejected(server, job_id, raw, status, **kw):
    before = snapshot(job_id)
    seen = SeenCallback.select().count()
    audits = AuditLog.select().where(AuditLog.event == "callback_rejected").count()
    resp = post(server, raw, **kw)
    assert resp.status_code == status, resp.text
    assert resp.json()["status"] == status and resp.json()["error"]
    assert snapshot(job_id) == before
    assert SeenCallback.select().count() == seen
    assert AuditLog.select().where(AuditLog.event == "callback_rejected").count() == audits + 1
    line = AuditLog.select().order_by(AuditLog.id.desc()).first().detail
    assert all(s not in line for s in SECRETS)
    return resp


def test_wrong_secret_is_401(server, ledger, clock):
    job_id, batch_id = ledger
    raw = body(job_id, batch_id, [SENT], clock=clock)
    assert_rejected(server, job_id, raw, 401, secret="guessed")


def test_missing_signature_is_401(server, ledger, clock):
    job_id, batch_id = ledger
    assert_rejected(server, job_id, body(job_id, batch_id, [SENT], clock=clock), 401, signature="")


def test_body_altered_after_signing_is_401(server, ledger, clock):
    job_id, batch_id = ledger
    raw = body(job_id, batch_id, [SENT], clock=clock)
    sig = sign(SECRETS[0], raw)
    assert_rejected(server, job_id, raw.replace(b"ses-1", b"ses-2"), 401, signature=sig)


@pytest.mark.parametrize("offset", [-301, 301], ids=["too-old", "too-far-ahead"])
def test_timestamp_outside_skew_is_401(server, ledger, clock, offset):
    job_id, batch_id = ledger
    raw = body(job_id, batch_id, [SENT], clock=clock, ts=_epoch(clock()) + offset)
    assert_rejected(server, job_id, raw, 401)


def test_replayed_callback_id_is_409(server, ledger, clock):
    job_id, batch_id = ledger
    cid = str(uuid.uuid4())
    first = body(job_id, batch_id, [SENT], clock=clock, callback_id=cid)
    assert post(server, first).status_code == 200
    other = {"userid": 1003, "status": "sent", "external_id": "ses-3"}
    replay = body(job_id, batch_id, [other], clock=clock, callback_id=cid)
    assert_rejected(server, job_id, replay, 409)


def test_oversized_body_is_413(server, ledger, clock):
    job_id, batch_id = ledger
    big = [dict(SENT, external_id="x" * 200, userid=1001)] * 400
    raw = body(job_id, batch_id, big, clock=clock)
    assert len(raw) > MAX_BYTES
    before = snapshot(job_id)
    resp = post(server, raw)
    assert resp.status_code == 413 and snapshot(job_id) == before


def test_malformed_json_is_400(server, ledger, clock):
    job_id, _ = ledger
    assert_rejected(server, job_id, b'{"schema": "offload.callback.v1", ', 400)


@pytest.mark.parametrize(
    "update",
    [
        {"userid": "1001", "status": "sent"},
        {"userid": 1001, "status": "delivered"},
        {"userid": 1001, "status": "failed", "attempts": "three"},
        {"userid": True, "status": "sent"},
    ],
    ids=["userid-string", "unknown-status", "attempts-string", "userid-bool"],
)
def test_wrong_types_are_400(server, ledger, clock, update):
    job_id, batch_id = ledger
    assert_rejected(server, job_id, body(job_id, batch_id, [update], clock=clock), 400)


def test_unknown_job_is_404(server, ledger, clock):
    job_id, batch_id = ledger
    assert_rejected(server, job_id, body(str(uuid.uuid4()), batch_id, [SENT], clock=clock), 404)


def test_unknown_batch_is_404(server, ledger, clock):
    job_id, _ = ledger
    assert_rejected(server, job_id, body(job_id, str(uuid.uuid4()), [SENT], clock=clock), 404)


def test_userid_not_in_batch_is_ignored_and_audited(server, ledger, clock):
    job_id, batch_id = ledger
    stranger = {"userid": 999999, "status": "sent", "external_id": "ses-x"}
    resp = post(server, body(job_id, batch_id, [SENT, stranger], clock=clock))
    assert resp.status_code == 200 and resp.json() == {"accepted": 1, "ignored": 1}
    assert Recipient.select().where(Recipient.userid == 999999).count() == 0
    assert AuditLog.select().where(AuditLog.event == "callback_unknown_users").count() == 1


def test_sent_then_failed_stays_sent(server, ledger, clock):
    job_id, batch_id = ledger
    answer = post(server, body(job_id, batch_id, [SENT], clock=clock)).json()
    assert answer == {"accepted": 1, "ignored": 0}
    failed = {"userid": 1001, "status": "failed", "error_message": "late bounce", "attempts": 1}
    answer = post(server, body(job_id, batch_id, [failed], clock=clock)).json()
    assert answer == {"accepted": 0, "ignored": 1}
    r = Recipient.get(Recipient.job == job_id, Recipient.userid == 1001)
    assert r.status == R.SENT and r.external_id == "ses-1" and r.last_error is None


def test_last_outcome_settles_the_job(server, ledger, clock):
    from sidecar.db.models import Job

    job_id, batch_id = ledger
    updates = [dict(SENT, userid=u, external_id=f"ses-{u}") for u in (1001, 1002, 1003)]
    assert post(server, body(job_id, batch_id, updates, clock=clock)).json()["accepted"] == 3
    assert Job.get_by_id(job_id).status == JobStatus.COMPLETED
