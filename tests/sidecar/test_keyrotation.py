"""`keys rotate` on every database backend: what an old key sealed is sealed again under the
new one, what the new key sealed is left alone, what no key opens is named, and a row a
delivery moved on meanwhile is never given its password back."""

import pytest
from cryptography.fernet import Fernet

from sidecar import jobs, keyrotation, unsubscribe
from sidecar.config import Config
from sidecar.db.models import Recipient
from sidecar.errors import ConfigError
from sidecar.temppasswords import Sealer
from sidecar.welcomepasswords import SECRET_KEY

OLD, NEW, LOST = (Fernet.generate_key().decode() for _ in range(3))


def config(current: str | None, *previous: str, **more) -> Config:
    security = {"previous_encryption_keys": list(previous)}
    if current:
        security["encryption_key"] = current
    return Config.model_validate({"security": security, **more})


def welcome_job(clock, sealed_by: dict[int, str | None]) -> str:
    """A welcome job whose recipients hold a password sealed by the given key (None: sent,
    nothing sealed)."""
    people = []
    for userid, key in sealed_by.items():
        w = {"state": "sent"} if key is None else {
            "state": "set", "sealed": Sealer.of([key]).seal(f"pw-{userid}")
        }  # fmt: skip
        people.append(jobs.RecipientIn(userid, f"u{userid}@example.org", "F", "L",
                                       {"username": f"u{userid}", SECRET_KEY: w}))  # fmt: skip
    spec = jobs.JobSpec(type="welcome", template_id="welcome", source="test")
    return jobs.create_job(spec, people, batch_size=200, now=clock()).job_id


def sealed(job_id: str) -> dict[int, str]:
    return {
        r.userid: r.vars[SECRET_KEY]["sealed"]
        for r in Recipient.select().where(Recipient.job == job_id)
        if "sealed" in r.vars[SECRET_KEY]
    }


def test_what_the_old_key_sealed_opens_with_the_new_key_alone_after_rotate(db, clock):
    job = welcome_job(clock, {u: OLD for u in range(1, 451)} | {u: NEW for u in range(451, 461)}
                      | {u: None for u in range(461, 471)})  # fmt: skip
    before = sealed(job)

    dry = keyrotation.rotate(config(NEW, OLD), clock, dry_run=True)
    assert (dry.resealed, dry.current, dry.unreadable) == (450, 10, [])
    assert sealed(job) == before  # a dry run changes nothing
    assert "would re-encrypt 450" in dry.lines()[0]

    done = keyrotation.rotate(config(NEW, OLD), clock)
    assert (done.resealed, done.current, done.unreadable, done.raced) == (450, 10, [], 0)
    assert done.complete and "nothing in the ledger is under a previous key" in done.lines()[1]
    only_new = Sealer.from_config(config(NEW))
    after = sealed(job)
    assert sorted(after) == list(range(1, 461))  # the sent ones stay without a password
    assert {u: only_new.open(t) for u, t in after.items()} == {u: f"pw-{u}" for u in range(1, 461)}
    assert after[455] == before[455]  # already under the new key: not rewritten

    again = keyrotation.rotate(config(NEW, OLD), clock)
    assert (again.resealed, again.current) == (0, 460)  # idempotent


def test_a_password_no_configured_key_opens_is_named_and_left_as_it_was(db, clock):
    job = welcome_job(clock, {1: OLD, 2: LOST})
    lost = sealed(job)[2]
    done = keyrotation.rotate(config(NEW, OLD), clock)
    (ident,) = done.unreadable
    assert Recipient.get_by_id(ident).userid == 2 and sealed(job)[2] == lost
    assert done.resealed == 1 and not done.complete
    assert f"recipient ids {ident}" in " ".join(done.lines())
    assert "security.previous_encryption_keys" in " ".join(done.lines())


def test_a_row_a_delivery_settles_mid_rotation_is_not_given_its_password_back(
    db, clock, monkeypatch
):
    job = welcome_job(clock, {1: OLD, 2: OLD})
    reseal = Sealer.reseal

    def delivery_settles_user_1_meanwhile(self, token):
        r = Recipient.get((Recipient.job == job) & (Recipient.userid == 1))
        if "sealed" in r.vars[SECRET_KEY]:  # the daemon sent it and erased the password
            r.vars = {**r.vars, SECRET_KEY: {"state": "sent"}}
            Recipient.update(vars=r.vars).where(Recipient.id == r.id).execute()
        return reseal(self, token)

    monkeypatch.setattr(Sealer, "reseal", delivery_settles_user_1_meanwhile)
    done = keyrotation.rotate(config(NEW, OLD), clock)
    states = {r.userid: r.vars[SECRET_KEY] for r in Recipient.select()}
    assert states[1] == {"state": "sent"}  # the delivery's write stands
    assert Sealer.from_config(config(NEW)).open(states[2]["sealed"]) == "pw-2"
    assert done.resealed == 1 and done.raced == 0 and done.complete


def test_without_an_encryption_key_rotate_says_what_to_set(db, clock):
    with pytest.raises(ConfigError, match="security.encryption_key is not set"):
        keyrotation.rotate(config(None), clock)


def test_previous_keys_need_a_current_key_and_each_must_be_a_fernet_key():
    with pytest.raises(ValueError, match="previous_encryption_keys: set encryption_key too"):
        config(None, OLD)
    with pytest.raises(ValueError, match=r"\[1\] is not a Fernet key"):
        config(NEW, OLD, "not-a-key")


def test_an_unsubscribe_link_mailed_before_the_rotation_still_works_with_the_old_key_kept():
    def links(current, *previous):
        site = config(current, *previous, server={"public_url": "https://offload.example"})
        return unsubscribe.links_for(site)

    old_link = links(OLD).token(42, "reminders")
    assert links(NEW, OLD).read(old_link) == (42, "reminders")
    assert links(NEW).read(old_link) is None  # the old key dropped: the link is refused
    assert links(NEW, OLD).token(42, "reminders") == links(NEW).token(42, "reminders")
