"""The password step of a welcome job: generate, seal, set in Moodle, then mail, then erase.

Each recipient who gets a password carries, in its ledger row (`vars["_welcome"]`), a
state and the password sealed with Fernet:

    new ──> generated ──> set ──> sent (sealed password erased)
     ^          │          │
     └─ erased <┴──────────┴── a failed send, a refusal by Moodle, or a cancel

- `generated`: the sealed password is committed before Moodle is asked to set it, so a
  crash while Moodle sets it leaves it in the ledger: the next attempt sets the same
  password again (setting it twice is harmless) before anything is mailed.
- `set`: Moodle confirmed it (core_user_update_users answered without a warning for the
  user). Only then is the email rendered (with the password opened in memory) and sent.
- `sent` / `erased`: the sealed password is removed in the transaction that records the
  outcome. A later attempt after a failed send finds `erased` and sets a new password
  (audited as `welcome_password_renewed`), never the old one.

docs/cli.md (`send welcome`) lists every crash window and what a restart does in each.
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from moodle_ws import functions
from moodle_ws.client import MoodleClient, RequestTally
from moodle_ws.errors import InvalidResponse, MoodleAPIError, MoodleUnavailable
from sidecar import crashpoints
from sidecar.config import PasswordPolicyConfig
from sidecar.db import store
from sidecar.db.models import Recipient, SendKey
from sidecar.status import RecipientStatus
from sidecar.temppasswords import Plain, Sealer, generate

log = logging.getLogger(__name__)

R = RecipientStatus
JOB_TYPE = "welcome"
SECRET_KEY = "_welcome"
#: form fields of one user's update: id, password, the preference's type and value
FIELDS_PER_UPDATE = 4
NEW, GENERATED, SET, SENT, ERASED = "new", "generated", "set", "sent", "erased"


def welcome_vars(username: str, gets_password: bool, auth: str) -> dict:
    """A new welcome recipient's variables: its username, and the password state."""
    return {
        "username": username,
        SECRET_KEY: {"password": gets_password, "auth": auth, "state": NEW},
    }


@dataclass
class Prepared:
    ready: list[Recipient]  # to mail now, in userid order
    passwords: dict[int, Plain] = field(default_factory=dict)  # in memory only
    failed: list[store.Update] = field(default_factory=list)
    pause: bool = False  # Moodle is unreachable: the others wait in the ledger


def _state(r: Recipient) -> dict:
    return dict((r.vars or {}).get(SECRET_KEY) or {})


def _write(r: Recipient, state: str, sealed: str | None, now: datetime) -> None:
    w = _state(r)
    w["state"] = state
    w.pop("sealed", None)
    if sealed:
        w["sealed"] = sealed
    r.vars = {**(r.vars or {}), SECRET_KEY: w}
    Recipient.update(vars=r.vars, updated_at=now).where(Recipient.id == r.id).execute()


class WelcomePasswords:
    """Sets temporary passwords in Moodle for a batch about to be mailed."""

    def __init__(
        self,
        client: MoodleClient,
        sealer: Sealer,
        policy: PasswordPolicyConfig,
        clock: Callable[[], datetime],
        tally: RequestTally | None = None,
    ):
        self.client, self.sealer, self.policy, self.clock = client, sealer, policy, clock
        self.tally = tally

    def prepare(self, job_id: str, todo: Sequence[Recipient]) -> Prepared:
        """Give each recipient who needs one a password set in Moodle; returns who can be
        mailed now with their passwords, and who failed (Moodle refused their password)."""
        out = Prepared(ready=[])
        to_set: list[tuple[Recipient, Plain, str]] = []
        fresh: list[Recipient] = []
        renewed = 0
        for r in todo:
            w = _state(r)
            if not w.get("password"):
                out.ready.append(r)  # single sign-on: a welcome without a password
            elif w.get("state") == SET and w.get("sealed"):
                out.passwords[r.userid] = self.sealer.open(w["sealed"])
                out.ready.append(r)
            elif w.get("state") == GENERATED and w.get("sealed"):
                to_set.append((r, self.sealer.open(w["sealed"]), w["sealed"]))
            else:
                fresh.append(r)
                renewed += w.get("state") == ERASED
        if fresh:
            now = self.clock()
            with store.atomic():
                for r in fresh:
                    plain = generate(self.policy)
                    sealed = self.sealer.seal(plain)
                    _write(r, GENERATED, sealed, now)
                    to_set.append((r, plain, sealed))
                if renewed:
                    store.audit(
                        "welcome_password_renewed", now, job_id, recipients=renewed,
                        why="a new attempt after a failed send sets a new temporary password",
                    )  # fmt: skip
            if renewed:
                log.info(
                    "job %s: %d recipients get a new temporary password (their last send "
                    "failed)", job_id, renewed,
                )  # fmt: skip
            crashpoints.reach("welcome.generated")
        # As many users a request as max_input_vars allows (249 at PHP's default 1000): a
        # batch of offload.job_batch_size (200) takes one request.
        size = max(1, (self.client.settings.max_input_vars - 3) // FIELDS_PER_UPDATE)
        for start in range(0, len(to_set), size):
            chunk = to_set[start : start + size]
            try:
                warnings = functions.update_users(
                    self.client,
                    [functions.force_password_change(r.userid, plain) for r, plain, _ in chunk],
                    tally=self.tally,
                )
            except MoodleUnavailable as exc:
                log.warning("job %s: Moodle is unreachable, passwords wait: %s", job_id, exc)
                out.pause = True
                break
            except MoodleAPIError as exc:
                why = _refusal(exc)
                log.warning("job %s: %d temporary passwords not set: %s", job_id, len(chunk), why)
                out.failed += [_failure(r, why) for r, _, _ in chunk]
                continue
            crashpoints.reach("welcome.moodle_answered")
            refused = {w.itemid: w for w in warnings if w.item in (None, "user")}
            now = self.clock()
            with store.atomic():
                for r, plain, sealed in chunk:
                    if r.userid in refused:
                        w = refused[r.userid]
                        why = f"Moodle did not set the password: {w.warningcode}: {w.message}"
                        out.failed.append(_failure(r, why))
                    else:
                        _write(r, SET, sealed, now)
                        out.passwords[r.userid] = plain
                        out.ready.append(r)
            crashpoints.reach("welcome.set")
        out.ready.sort(key=lambda r: r.userid)
        return out

    def __repr__(self) -> str:
        return "WelcomePasswords(***)"


def _refusal(exc: MoodleAPIError) -> str:
    text = f"Moodle did not set the passwords: {exc}"
    if isinstance(exc, InvalidResponse):
        text += (
            " (a password the site's policy refuses gives this answer: make "
            "[moodle.password_policy] match the site's policy)"
        )
    return text


def _failure(r: Recipient, why: str) -> store.Update:
    return store.Update(r.userid, R.FAILED, error=why[:2000], attempts=r.attempts + 1)


def settle(r: Recipient, status: RecipientStatus, now: datetime) -> None:
    """Erase the sealed password of a recipient whose outcome is recorded (call in the
    outcome's transaction): `sent` after a delivery, `erased` after anything else."""
    w = _state(r)
    if not w.get("password") and "sealed" not in w:
        return
    _write(r, SENT if status == R.SENT else ERASED, None, now)


def forget_cancelled(job_id: str, now: datetime) -> int:
    """A cancelled welcome job: erase its cancelled recipients' passwords and free their
    welcome keys, so a later `send welcome` welcomes them. Call inside the cancel's
    transaction; returns how many were forgotten."""
    rows = list(Recipient.select().where(Recipient.job == job_id, Recipient.status == R.CANCELLED))
    for r in rows:
        if "sealed" in _state(r) or _state(r).get("state") in (GENERATED, SET):
            _write(r, ERASED, None, now)
    ids = [r.userid for r in rows]
    for start in range(0, len(ids), 900):
        SendKey.delete().where(
            SendKey.job_id == job_id, SendKey.userid.in_(ids[start : start + 900])
        ).execute()
    return len(rows)
