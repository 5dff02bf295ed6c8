"""Certificate codes, their records, and the files of locally issued certificates.

A learner's link points at `{public_url}/certificates/{code}`, never at storage, so a
link outlives any presigned URL; `{public_url}/verify/{code}` is the public check.
"""

import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from peewee import IntegrityError

from sidecar.db import store
from sidecar.db.models import Certificate, database
from sidecar.errors import Aborted, NotFound

log = logging.getLogger(__name__)

# Crockford-style alphabet: no 0/O, 1/I/L confusion when a code is typed from paper.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_code(length: int = 12) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class Issued:
    code: str
    key: str  # path relative to certificate_dir (local) or object key (cloud)
    new: bool


def reserve(job_id: str, userid: int, courseid: int | None, storage: str, now: datetime) -> Issued:
    """The certificate record for (job, user), created on first call with a fresh code.

    Idempotent: a redelivery after a crash reuses the same code and key.
    """
    existing = Certificate.get_or_none(Certificate.job_id == job_id, Certificate.userid == userid)
    if existing:
        return Issued(existing.code, existing.key, False)
    with store.atomic():
        return _insert_new(job_id, userid, courseid, storage, f"{job_id}/{userid}.pdf", now)


def reserve_many(
    job_id: str,
    userids: Sequence[int],
    courseid: int | None,
    storage: str,
    key_prefix: str,
    now: datetime,
) -> dict[int, Issued]:
    """The certificate record of each user of the job, created where missing, in one
    transaction; the key is `{key_prefix}{userid}.pdf`. Idempotent like `reserve`."""
    wanted = list(dict.fromkeys(userids))
    out: dict[int, Issued] = {}
    for start in range(0, len(wanted), 900):
        chunk = wanted[start : start + 900]
        query = Certificate.select(Certificate.userid, Certificate.code, Certificate.key).where(
            Certificate.job_id == job_id, Certificate.userid.in_(chunk)
        )
        out.update({uid: Issued(code, key, False) for uid, code, key in query.tuples()})
    missing = [uid for uid in wanted if uid not in out]
    if not missing:
        return out
    with store.atomic():
        for uid in missing:
            out[uid] = _insert_new(job_id, uid, courseid, storage, f"{key_prefix}{uid}.pdf", now)
    return out


def _insert_new(job_id, userid, courseid, storage, key, now) -> Issued:
    for _ in range(5):
        code = new_code()
        try:
            with database.atomic():  # a savepoint: a taken code must not undo the others
                Certificate.insert(
                    code=code, job_id=job_id, userid=userid, courseid=courseid,
                    storage=storage, key=key, issued_at=now,
                ).execute()  # fmt: skip
            return Issued(code, key, True)
        except IntegrityError:
            existing = Certificate.get_or_none(
                Certificate.job_id == job_id, Certificate.userid == userid
            )
            if existing:
                return Issued(existing.code, existing.key, False)
    raise RuntimeError("could not allocate a unique certificate code")


def write_file(certificate_dir: Path, key: str, data: bytes) -> Path:
    """Write a PDF atomically (temp file + rename) under certificate_dir."""
    path = certificate_dir / key
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pdf.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def urls(public_url: str, code: str) -> tuple[str, str]:
    """(download link, verification link) for a code."""
    base = public_url.rstrip("/")
    return f"{base}/certificates/{code}", f"{base}/verify/{code}"


def lookup(code: str) -> Certificate | None:
    """A valid (not revoked) certificate by code, or None."""
    cert = find(code)
    if cert is None or cert.revoked_at is not None:
        return None
    return cert


def find(code: str) -> Certificate | None:
    """The certificate with this code (any case, revoked or not), or None."""
    code = code.strip().upper()
    return Certificate.get_or_none(Certificate.code == code) if len(code) <= 32 else None


MAX_REASON = 500


def clean_reason(text: str | None) -> str:
    """The reason for a revocation, spaces collapsed; Aborted when empty or too long."""
    reason = " ".join((text or "").split())
    if not reason:
        raise Aborted("say why the certificate is revoked: the reason is required")
    if len(reason) > MAX_REASON:
        raise Aborted(f"the reason is at most {MAX_REASON} characters, got {len(reason)}")
    return reason


def revoke(code: str, now: datetime, *, reason: str | None = None, **by) -> bool:
    """Mark the certificate revoked, keeping why: `/verify/{code}` then says so (with the
    date and reason) and `/certificates/{code}` answers 410. False (and no change) when it
    was revoked already. `by` (who did it, never a secret) goes into the audit line with
    the reason."""
    code = code.strip().upper()
    with store.atomic():
        n = (
            Certificate.update(revoked_at=now, revoked_reason=reason)
            .where(Certificate.code == code, Certificate.revoked_at.is_null())
            .execute()
        )
        if n:
            cert = Certificate.get(Certificate.code == code)
            store.audit("certificate_revoked", now, cert.job_id, code=code,
                        userid=cert.userid, reason=reason, **by)  # fmt: skip
    if n:
        log.info("certificate %s revoked", code)
    return bool(n)


@dataclass(frozen=True)
class Revocation:
    """What `revoke_code` did: `done` False when the certificate was revoked already
    (then `revoked_at` and `reason` are the first revocation's)."""

    code: str
    userid: int
    courseid: int | None
    revoked_at: datetime
    reason: str | None
    done: bool


def revoke_code(code: str, reason: str, now: datetime, **by) -> Revocation:
    """Revoke the certificate with this code (any case) for `reason` (`clean_reason`).

    Raises NotFound for an unknown code, Aborted for a missing or too long reason.
    Idempotent: a second call changes nothing and reports the first revocation."""
    reason = clean_reason(reason)
    cert = find(code)
    if cert is None:
        raise NotFound(
            f"no certificate has the code {code.strip()[:32]!r}: check the code printed on "
            "the certificate (letters and digits, any case)"
        )
    done = revoke(cert.code, now, reason=reason, **by)
    cert = Certificate.get(Certificate.code == cert.code)
    return Revocation(cert.code, cert.userid, cert.courseid, cert.revoked_at,
                      cert.revoked_reason, done)  # fmt: skip
