"""The password step of welcome jobs on every database backend, against the Moodle sandbox
over HTTP: generated, set in Moodle, sealed at rest, erased once settled, renewed after a
failed send, refused users failed with Moodle's reason."""

import itertools

import pytest
from cryptography.fernet import Fernet

from moodle_ws import functions
from moodle_ws.client import ClientSettings, MoodleClient
from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
from sidecar import jobs
from sidecar.config import PasswordPolicyConfig
from sidecar.db import store
from sidecar.db.models import AuditLog, Recipient
from sidecar.status import RecipientStatus as R
from sidecar.temppasswords import Sealer
from sidecar.welcomepasswords import WelcomePasswords, settle, welcome_vars


@pytest.fixture(scope="module")
def moodle():
    site = generate_site(SiteSpec(seed=4, learners=10, courses=1, companies=1))
    with SandboxServer(site) as server:
        server.site = site
        yield server


@pytest.fixture
def step(moodle, clock):
    client = MoodleClient(ClientSettings(url=moodle.url, token=moodle.site.token, attempts=1))
    yield WelcomePasswords(client, Sealer.of([Fernet.generate_key().decode()]),
                           PasswordPolicyConfig(), clock)  # fmt: skip
    client.close()


SEQ = itertools.count()


def welcome_job(moodle, clock, names, extra=()):
    names = [f"{n}{next(SEQ)}" for n in names]  # one sandbox for every backend
    client = MoodleClient(ClientSettings(url=moodle.url, token=moodle.site.token, attempts=1))
    made = functions.create_users(client, [
        {"username": n, "firstname": n, "lastname": "X", "email": f"{n}@example.org",
         "password": "First-123x"} for n in names
    ])  # fmt: skip
    client.close()
    people = [jobs.RecipientIn(uid, f"{n}@example.org", n, "X", welcome_vars(n, True, "manual"))
              for uid, n in made] + list(extra)  # fmt: skip
    spec = jobs.JobSpec(type="welcome", template_id="welcome", source="test",
                        idempotency_key="welcome")  # fmt: skip
    created = jobs.create_job(spec, people, batch_size=200, now=clock())
    return created.job_id, dict(made)


def rows(job_id):
    return list(Recipient.select().where(Recipient.job == job_id).order_by(Recipient.userid))


def test_passwords_are_set_in_moodle_sealed_and_erased_once_sent(db, clock, moodle, step):
    site = moodle.site
    job_id, made = welcome_job(moodle, clock, ["wp_a", "wp_b"])
    prepared = step.prepare(job_id, rows(job_id))
    assert [r.userid for r in prepared.ready] == sorted(made) and not prepared.failed
    for r in rows(job_id):
        state = r.vars["_welcome"]
        assert state["state"] == "set" and prepared.passwords[r.userid] not in state["sealed"]
        assert site.users[r.userid].password == prepared.passwords[r.userid]
        assert site.users[r.userid].preferences["auth_forcepasswordchange"] == "1"
    for r in rows(job_id):
        settle(r, R.SENT, clock())
    assert [r.vars["_welcome"] for r in rows(job_id)] == [
        {"password": True, "auth": "manual", "state": "sent"}
    ] * 2


def test_a_new_attempt_after_a_failed_send_gets_a_new_password(db, clock, moodle, step):
    site = moodle.site
    job_id, made = welcome_job(moodle, clock, ["wp_c"])
    first = step.prepare(job_id, rows(job_id)).passwords
    (r,) = rows(job_id)
    settle(r, R.FAILED, clock())
    assert "sealed" not in rows(job_id)[0].vars["_welcome"]
    second = step.prepare(job_id, rows(job_id)).passwords
    assert second[r.userid] != first[r.userid]
    assert site.users[r.userid].password == second[r.userid]
    events = [a.event for a in AuditLog.select().where(AuditLog.job_id == job_id)]
    assert "welcome_password_renewed" in events


def test_a_user_moodle_refuses_fails_with_its_reason_and_others_go(db, clock, moodle, step):
    ghost = jobs.RecipientIn(987654, "ghost@example.org", "G", "X",
                             welcome_vars("ghost", True, "manual"))  # fmt: skip
    sso = jobs.RecipientIn(987655, "sso@example.org", "S", "X", welcome_vars("sso", False, "saml2"))
    job_id, made = welcome_job(moodle, clock, ["wp_d"], [ghost, sso])
    prepared = step.prepare(job_id, rows(job_id))
    assert [r.userid for r in prepared.ready] == [*made, 987655]
    assert 987655 not in prepared.passwords  # single sign-on: no password
    (failed,) = prepared.failed
    assert failed.userid == 987654 and "invaliduserid" in failed.error


def test_a_cancel_erases_sealed_passwords_and_frees_the_keys(db, clock, moodle, step):
    job_id, made = welcome_job(moodle, clock, ["wp_e"])
    step.prepare(job_id, rows(job_id))
    jobs.cancel_job(job_id, clock())
    assert all("sealed" not in r.vars["_welcome"] for r in rows(job_id))
    assert store.taken_send_keys("welcome", list(made)) == {}
