"""The suppression list: addresses SES reported bounced or complained about.

A permanent bounce or a complaint marks the recipient `permanently_failed` (even after
`sent`: the message provably did not reach, or was refused by, its reader: the one
exception to "never backwards"; the worker's `sent` report, which can arrive after the
bounce, does not undo it) and puts the address on the list; later jobs record such
a learner as `suppressed` with the reason, and `jobs retry` leaves them alone.

An address is kept, looked up and taken off in one form, `key(address)`: the job ledger's
(an IDN domain in its xn-- form), lowercased whole because SES may report another case.
After `purge-user` (sidecar.privacy) the row keeps only `hashed(key(address))`: the address
stays suppressed without being stored, and every lookup tries both forms.
"""

import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime

from sidecar.csvinput import validate_email
from sidecar.db import store
from sidecar.db.models import Recipient, SuppressedAddress
from sidecar.status import RecipientStatus

log = logging.getLogger(__name__)

R = RecipientStatus
#: statuses a bounce or complaint may move to permanently_failed
_BOUNCEABLE = [R.SENT.value, R.QUEUED.value, R.PENDING.value, R.RETRY_PENDING.value, R.FAILED.value]


def key(email: str) -> str:
    """The list's form of `email`: csvinput.validate_email's (the ledger's), lowercased; an
    address that refuses, trimmed and lowercased (a bounce report is kept whatever it says)."""
    address = email.strip()
    try:
        address = validate_email(address)
    except ValueError:
        pass
    return address.lower()[:254]


HASH_PREFIX = "sha256:"


def hashed(address: str) -> str:
    """The form a purged user's address is kept in: SHA-256 of its key, hex."""
    return _hash_of_key(key(address))


def _hash_of_key(address_key: str) -> str:
    return HASH_PREFIX + hashlib.sha256(address_key.encode()).hexdigest()


def _forms(address: str) -> list[str]:
    k = key(address)
    return [k, _hash_of_key(k)]


def suppress(
    email: str, reason: str, source: str, now: datetime,
    job_id: str | None = None, userid: int | None = None,
) -> bool:  # fmt: skip
    """Put `email` on the list (the first reason is kept); True when it was new.

    Call inside a transaction.
    """
    address = key(email)
    if SuppressedAddress.select().where(SuppressedAddress.email.in_(_forms(email))).exists():
        return False
    store.upsert(
        SuppressedAddress,
        {"email": address},
        {"reason": reason[:2000], "source": source, "job_id": job_id, "userid": userid,
         "created_at": now},
    )  # fmt: skip
    return True


def mark_undeliverable(job_id: str, userid: int, reason: str, now: datetime) -> bool:
    """The recipient's message bounced or drew a complaint: permanently_failed with the
    reason. Returns False when the job has no such recipient. Call inside a transaction."""
    n = (
        Recipient.update(
            status=R.PERMANENTLY_FAILED, last_error=reason[:2000], next_attempt_at=None,
            updated_at=now, bounced_at=now,
        )
        .where(Recipient.job == job_id, Recipient.userid == userid,
               Recipient.status.in_(_BOUNCEABLE))
        .execute()
    )  # fmt: skip
    return n > 0


def suppressed_among(emails: Iterable[str]) -> dict[str, str]:
    """{address (as given): reason} for the given addresses that are on the list."""
    wanted: dict[str, list[str]] = {}
    for e in emails:
        for form in _forms(e):
            wanted.setdefault(form, []).append(e)
    if not wanted or not SuppressedAddress.select().exists():
        return {}  # the common case: an empty list, nothing to look up
    out: dict[str, str] = {}
    keys = list(wanted)
    for start in range(0, len(keys), 900):
        query = SuppressedAddress.select(SuppressedAddress.email, SuppressedAddress.reason).where(
            SuppressedAddress.email.in_(keys[start : start + 900])
        )
        for address, reason in query.tuples():
            for original in wanted[address]:
                out[original] = reason
    return out


def listing() -> list[SuppressedAddress]:
    """Every suppressed address, oldest first."""
    return list(
        SuppressedAddress.select().order_by(SuppressedAddress.created_at, SuppressedAddress.email)
    )


def unsuppress(email: str, now: datetime) -> bool:
    """Take `email` off the list (its mailbox was fixed); False when it was not on it."""
    address = key(email)
    # and as written: a row kept in another form (by hand, say) goes as `list` shows it
    forms = [address, email.strip().lower(), hashed(email)]
    with store.atomic():
        n = SuppressedAddress.delete().where(SuppressedAddress.email.in_(forms)).execute()
        if n:
            store.audit("unsuppressed", now, email_domain=address.rpartition("@")[2])
    if n:
        log.info("an address of %s taken off the suppression list", address.rpartition("@")[2])
    return n > 0
