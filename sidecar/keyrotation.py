"""`keys rotate`: re-seal under `security.encryption_key` what a previous key sealed.

What the ledger holds encrypted is the temporary password of a welcome email between the
moment it is set in Moodle and the moment its email is sent (sidecar.welcomepasswords):
a few hundred at most, unless a run was interrupted. A rotation:

1. the admin makes a new key (`keys new`), puts it in `security.encryption_key`, moves the
   old one to `security.previous_encryption_keys` and restarts the daemon: from then on
   everything new is sealed with the new key and anything old still opens;
2. `keys rotate` re-seals each sealed value still under an old key. It runs beside the
   daemon: each row is rewritten by a compare-and-set on the value it read, so a delivery
   that moved the row on meanwhile (sent, and its password erased) wins, and the row is
   read again on the next pass rather than given its password back;
3. once `keys rotate` says nothing is left under an old key, the old key may leave the
   config, except that unsubscribe links already mailed were signed with a key derived
   from it: they keep working only while it stays in `previous_encryption_keys`.

Batches are short transactions (a few hundred rows), so callbacks and deliveries keep
flowing on SQLite while it runs.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from peewee import OP, Expression, Value

from sidecar.config import Config
from sidecar.db.models import Recipient
from sidecar.errors import ConfigError
from sidecar.temppasswords import Sealer
from sidecar.welcomepasswords import SECRET_KEY

log = logging.getLogger(__name__)

BATCH = 200  # rows per transaction
PASSES = 5  # rows that raced a delivery are read again, at most this many times


@dataclass
class Rotation:
    resealed: int = 0  # sealed again under the current key
    current: int = 0  # already under the current key
    unreadable: list[int] = field(default_factory=list)  # recipient ids no key opens
    raced: int = 0  # changed by a delivery while read; left to the next pass
    previous_keys: int = 0
    dry_run: bool = False

    @property
    def complete(self) -> bool:
        """Nothing in the ledger is left under a previous key (or under none)."""
        return not self.unreadable and not self.raced and not self.dry_run

    def lines(self) -> list[str]:
        verb = "would re-encrypt" if self.dry_run else "re-encrypted"
        out = [
            f"{verb} {self.resealed} temporary password(s) with security.encryption_key; "
            f"{self.current} already under it"
        ]
        if self.unreadable:
            ids = ", ".join(map(str, self.unreadable[:20]))
            more = " …" if len(self.unreadable) > 20 else ""
            out.append(
                f"{len(self.unreadable)} sealed with a key that is no longer configured "
                f"(recipient ids {ids}{more}): their welcome emails cannot be sent; put that "
                "key back in security.previous_encryption_keys, or cancel the job "
                "(`jobs cancel`) and send the welcome again"
            )
        if self.raced:
            out.append(
                f"{self.raced} changed by a delivery while being re-encrypted: run "
                "`keys rotate` again"
            )
        if self.complete:
            if self.previous_keys:
                out.append(
                    "nothing in the ledger is under a previous key any more. Unsubscribe "
                    "links already mailed were signed with a key derived from a previous "
                    "key: keep it in security.previous_encryption_keys while they may be "
                    "clicked. Dashboard sessions signed with it have ended."
                )
            else:
                out.append("no previous key is configured: nothing else to do")
        return out


# the JSON text holds a "sealed" key (compared as text: the field's own converter would
# encode the pattern as JSON)
_HOLDS_SEALED = Expression(Recipient.vars, OP.ILIKE, Value('%"sealed":%', converter=False))


def _sealed(r: Recipient) -> str | None:
    return ((r.vars or {}).get(SECRET_KEY) or {}).get("sealed")


def _one_pass(sealer: Sealer, dry_run: bool, now: datetime, out: Rotation) -> None:
    db = Recipient._meta.database
    after = 0
    while True:
        rows = list(
            Recipient.select(Recipient.id, Recipient.vars)
            .where(Recipient.id > after, _HOLDS_SEALED)
            .order_by(Recipient.id)
            .limit(BATCH)
        )
        if not rows:
            return
        after = rows[-1].id
        with db.atomic():
            for r in rows:
                token = _sealed(r)
                if not token:
                    continue
                if sealer.is_current(token):
                    out.current += 1
                    continue
                try:
                    fresh = sealer.reseal(token)
                except ConfigError:
                    out.unreadable.append(r.id)
                    continue
                if dry_run:
                    out.resealed += 1
                    continue
                w = dict(r.vars[SECRET_KEY])
                w["sealed"] = fresh
                changed = (
                    Recipient.update(vars={**r.vars, SECRET_KEY: w}, updated_at=now)
                    .where(Recipient.id == r.id, Recipient.vars == r.vars)
                    .execute()
                )
                if changed:
                    out.resealed += 1
                else:
                    out.raced += 1


def rotate(config: Config, clock: Callable[[], datetime], *, dry_run: bool = False) -> Rotation:
    """Re-seal every sealed value the current key did not seal (the ledger bound to the
    models' database). Raises ConfigError when no encryption key is configured."""
    sealer = Sealer.from_config(config)
    previous = len(config.security.previous_encryption_keys)
    done = Rotation(previous_keys=previous, dry_run=dry_run)
    for _ in range(PASSES):
        this = Rotation(previous_keys=previous, dry_run=dry_run)
        _one_pass(sealer, dry_run, clock(), this)
        done.resealed += this.resealed
        done.unreadable = this.unreadable
        done.raced = this.raced
        if not this.raced:
            # this pass also found the rows the passes before re-sealed
            done.current = this.current - (done.resealed - this.resealed)
            break
    log.info(
        "keys rotate: resealed=%d current=%d unreadable=%d raced=%d dry_run=%s",
        done.resealed, done.current, len(done.unreadable), done.raced, dry_run,
    )  # fmt: skip
    return done
