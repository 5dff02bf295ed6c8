"""One-click unsubscribe (RFC 8058) for bulk mail: signed links and the opt-out list.

Reminders, re-engagement and CSV ("custom") mail carry `List-Unsubscribe:
<{public_url}/unsubscribe/{token}>`, `List-Unsubscribe-Post: List-Unsubscribe=One-Click`
and a footer link to the same URL. The token names the learner's Moodle userid and the
kind of mail, in clear, with an HMAC under a key derived from `security.encryption_key`
(never the Fernet key itself): it never holds the address. A POST to that URL records
the opt-out; later jobs of that kind record the learner `suppressed`. Certificates and
account mail (welcome, licence) are never subject to an opt-out.

`unsubscribe.enabled = false` (a site that manages this in Moodle): no headers, no
link, the endpoint answers 404. Opt-outs already recorded still hold: a learner was
told they would get no more of that mail; an admin lifts one with `suppression remove`.
"""

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from providers.signing import derive_key, seal, unseal
from sidecar.config import Config
from sidecar.db import store
from sidecar.db.models import Job, OptOut, Recipient
from sidecar.status import RECIPIENT_OPEN, RecipientStatus

log = logging.getLogger(__name__)

KINDS = ("reminders", "reengagement", "custom")
#: what each kind is, in words a learner reads on the confirmation page
DESCRIPTIONS = {
    "reminders": "course reminders",
    "reengagement": "emails inviting you back to a course",
    "custom": "announcements sent to a list of learners",
}
SOURCES = ("one-click", "page", "cli")
_BY_JOB_TYPE = {
    "send_reminder": "reminders",
    "send_reengagement": "reengagement",
    "send_csv": "custom",
}
#: the HKDF label: a key for these links and nothing else
PURPOSE = "moodle-offload unsubscribe link v1"


def kind_of(job_type: str, certificate: bool = False) -> str | None:
    """The opt-out kind of a job's mail; None for mail nobody opts out of (a certificate,
    and the email carrying it, or account mail)."""
    return None if certificate else _BY_JOB_TYPE.get(job_type)


def check_kind(kind: str) -> str:
    """`kind` when it is one of KINDS; raises ValueError naming the kinds otherwise."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of mail {kind!r}: one of {', '.join(KINDS)}")
    return kind


@dataclass(frozen=True)
class Links:
    """Makes and reads unsubscribe links: (userid, kind) <-> {public_url}/unsubscribe/{token}."""

    key: bytes
    public_url: str
    previous: tuple[bytes, ...] = ()  # keys derived from security.previous_encryption_keys

    def token(self, userid: int, kind: str) -> str:
        return seal(self.key, f"{userid}.{check_kind(kind)}")

    def url(self, userid: int, kind: str) -> str:
        return f"{self.public_url}/unsubscribe/{self.token(userid, kind)}"

    def read(self, token: str) -> tuple[int, str] | None:
        """(userid, kind) of a token these links made; None when malformed, forged or
        altered. Never raises."""
        # a link sent before a key rotation was signed with a previous key; every key is
        # tried (no early exit), as callback signatures are
        payloads = [unseal(key, token) for key in (self.key, *self.previous)]
        payload = next((p for p in payloads if p is not None), None)
        if payload is None:
            return None
        userid, _, kind = payload.partition(".")
        if not userid.isdigit() or int(userid) <= 0 or kind not in KINDS:
            return None
        return int(userid), kind


def unavailable(config: Config) -> str | None:
    """Why this config cannot send unsubscribe links although they are on; None when it can
    (or when they are off)."""
    if not config.unsubscribe.enabled:
        return None
    if config.security.encryption_key is None:
        return (
            "security.encryption_key is not set, so unsubscribe links cannot be signed: set it, "
            "or unsubscribe.enabled = false if Moodle handles unsubscribing"
        )
    if "public_url" not in config.server.model_fields_set:
        return (
            "server.public_url is not set, so learners could not reach an unsubscribe link: set "
            "it to this daemon's https:// address, or unsubscribe.enabled = false if Moodle "
            "handles unsubscribing"
        )
    return None


def links_for(config: Config) -> Links | None:
    """The link maker of this config; None when links are off or cannot be made
    (`unavailable` says why): bulk mail then goes without them."""
    if not config.unsubscribe.enabled or unavailable(config):
        return None
    current, *previous = config.security.fernet_keys()
    return Links(
        derive_key(current, PURPOSE),
        config.server.public_url,
        tuple(derive_key(k, PURPOSE) for k in previous),
    )


# --- the opt-out list ------------------------------------------------------------------------


def opt_out(userid: int, kind: str, source: str, now: datetime) -> bool:
    """Record that `userid` wants no more mail of `kind`; True when it is new. Idempotent,
    also for two requests at once: the first time and source are kept, audited once."""
    check_kind(kind)
    row = {"userid": userid, "kind": kind, "source": source[:32], "created_at": now}
    with store.atomic():
        if not store.insert_new(OptOut, row):
            return False
        store.audit("unsubscribed", now, userid=userid, kind=kind, source=source)
    log.info("user %s: unsubscribed from %s (%s)", userid, kind, source)
    return True


def remove(userid: int, kind: str | None, now: datetime) -> int:
    """Lift the learner's opt-out of `kind` (every kind when None); how many were lifted."""
    query = OptOut.delete().where(OptOut.userid == userid)
    if kind is not None:
        query = query.where(OptOut.kind == check_kind(kind))
    with store.atomic():
        n = query.execute()
        if n:
            store.audit("unsubscribe_removed", now, userid=userid, kind=kind or "all")
    if n:
        log.info("user %s: opt-out of %s lifted", userid, kind or "every kind")
    return n


def opted_out(userids: Iterable[int], kind: str | None) -> set[int]:
    """The given learners who unsubscribed from `kind` (none for kind None)."""
    wanted = sorted(set(userids))
    if kind is None or not wanted or not OptOut.select().exists():
        return set()  # the common case: an empty list, nothing to look up
    out: set[int] = set()
    for start in range(0, len(wanted), 900):
        query = OptOut.select(OptOut.userid).where(
            OptOut.kind == kind, OptOut.userid.in_(wanted[start : start + 900])
        )
        out.update(uid for (uid,) in query.tuples())
    return out


def reason(kind: str) -> str:
    """The recipient's last_error when an opt-out keeps them out of a job."""
    return f"unsubscribed from {kind}"


def settle_opted_out(job: Job, batch_id: str, userids: Iterable[int], now: datetime) -> set[int]:
    """Record `suppressed` those of the batch's open recipients (`userids`) who unsubscribed
    from the job's kind of mail since the job was made; returns their userids.

    Called right before a batch is sent, so a learner who clicked while it waited gets
    none of it. One lookup (none for a certificate job); the caller then refreshes the
    batch's progress, which closes it if nobody is left.
    """
    kind = kind_of(job.type, bool(job.actions.get("certificate")))
    gone = sorted(opted_out(userids, kind))
    if not gone:
        return set()
    open_ = [s.value for s in RECIPIENT_OPEN]
    with store.atomic():
        for start in range(0, len(gone), 900):
            Recipient.update(
                status=RecipientStatus.SUPPRESSED, last_error=reason(kind), next_attempt_at=None,
                updated_at=now,
            ).where(
                Recipient.batch == batch_id, Recipient.userid.in_(gone[start : start + 900]),
                Recipient.status.in_(open_),
            ).execute()  # fmt: skip
    log.info(
        "job %s: %d recipients unsubscribed from %s before their mail went: suppressed",
        job.id, len(gone), kind,
    )  # fmt: skip
    return set(gone)


def listing(userid: int | None = None) -> list[OptOut]:
    """Every opt-out (or one learner's), oldest first."""
    query = OptOut.select().order_by(OptOut.created_at, OptOut.userid, OptOut.kind)
    if userid is not None:
        query = query.where(OptOut.userid == userid)
    return list(query)


# --- the HTTP side -------------------------------------------------------------------------


class UnsubscribeService:
    """What `/unsubscribe/{token}` asks: read a token, record the opt-out it names."""

    def __init__(self, links: Links, clock: Callable[[], datetime]):
        self.links = links
        self.clock = clock

    def read(self, token: str) -> tuple[int, str] | None:
        return self.links.read(token)

    def record(self, userid: int, kind: str, source: str) -> bool:
        return opt_out(userid, kind, source, self.clock())
