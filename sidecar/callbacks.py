"""Verify and apply a worker's callback (docs/callback.md): one function for HTTP and queues.

Order of checks: size (413), signature (401), shape (400), timestamp skew (401, HTTP
only), job and batch known (404), callback id not seen (409). A callback read from the
results queue may have waited there for days while the sidecar was down: it is not
refused for its age (the queue's own access policy and the callback id stop replays).
Only then, in one transaction, the callback id is remembered and the updates applied. A
rejected callback changes nothing but one audit line (which never holds the secret or
the body).
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from peewee import IntegrityError

from providers import signing
from providers.message import Callback, MessageError, parse_callback
from sidecar import metrics
from sidecar.db import store
from sidecar.errors import SidecarError
from sidecar.status import RecipientStatus

log = logging.getLogger(__name__)


class CallbackRejected(SidecarError):
    """A callback refused as a whole; nothing was changed. `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class CallbackSettings:
    secrets: Sequence[str]
    max_skew: int = 300
    max_bytes: int = 1_048_576
    max_attempts: int = 3


STATUS = {"sent": RecipientStatus.SENT, "failed": RecipientStatus.FAILED}


class CallbackService:
    """verify + apply; `handle` is given to the HTTP app and the results-queue poller."""

    def __init__(self, settings: CallbackSettings, clock: Callable[[], datetime]):
        self.settings = settings
        self.clock = clock

    def handle(self, raw: bytes, signature: str | None, *, source: str = "http") -> dict:
        """Apply one callback; returns {"accepted": n, "ignored": m}. Raises CallbackRejected."""
        now = self.clock()
        try:
            cb = self._verify(raw, signature, now, check_age=source != "sqs")
            result = self._apply(cb, now)
        except CallbackRejected as exc:
            metrics.callback(source, exc.status)
            log.warning("callback rejected (%s, %d): %s", source, exc.status, exc.reason)
            try:
                with store.atomic():
                    store.audit(
                        "callback_rejected", now, None, status=exc.status, reason=exc.reason,
                        source=source, bytes=len(raw),
                    )  # fmt: skip
            except Exception:  # noqa: BLE001 - the answer matters more than the audit line
                log.exception("could not write the audit line for a rejected callback")
            raise
        metrics.callback(source, 200)
        return result

    def _verify(
        self, raw: bytes, signature: str | None, now: datetime, *, check_age: bool = True
    ) -> Callback:
        s = self.settings
        if len(raw) > s.max_bytes:
            raise CallbackRejected(413, f"body of {len(raw)} bytes is over {s.max_bytes}")
        if not s.secrets:
            raise CallbackRejected(401, "no callback secret configured (security.callback_secrets)")
        if not signing.verify(s.secrets, raw, signature):
            raise CallbackRejected(401, "bad or missing X-Signature")
        try:
            cb = parse_callback(raw)
        except MessageError as exc:
            raise CallbackRejected(400, f"malformed callback: {exc}") from None
        skew = abs(now.replace(tzinfo=UTC).timestamp() - cb.timestamp)
        if check_age and skew > s.max_skew:
            raise CallbackRejected(
                401, f"callback {cb.callback_id}: timestamp {cb.timestamp} is {skew:.0f}s "
                f"away from now (limit {s.max_skew}s)",
            )  # fmt: skip
        return cb

    def _apply(self, cb: Callback, now: datetime) -> dict:
        batch = store.get_batch(cb.batch_id)
        if batch is None or batch.job_id != cb.job_id:
            try:
                store.get_job(cb.job_id)
            except SidecarError:
                raise CallbackRejected(404, f"unknown job {cb.job_id}") from None
            raise CallbackRejected(404, f"unknown batch {cb.batch_id} for job {cb.job_id}")
        updates = [
            store.Update(
                userid=u.userid,
                status=STATUS[u.status],
                external_id=u.external_id,
                certificate_key=u.certificate_key or u.certificate_url,
                timesent=datetime.fromtimestamp(u.timesent, UTC).replace(tzinfo=None)
                if u.timesent
                else None,
                error=u.error_message,
                attempts=u.attempts,
            )
            for u in cb.updates
        ]
        try:
            with store.atomic():
                accepted, ignored = store.apply_updates(
                    cb.job_id, cb.batch_id, updates, now, self.settings.max_attempts
                )
                if ignored:
                    self._audit_strangers(cb, ignored, now)
                # Last, in the same transaction: a replay fails here and undoes everything.
                store.remember_callback(
                    cb.callback_id, cb.job_id, cb.batch_id, accepted, len(ignored), now
                )
        except IntegrityError:
            raise CallbackRejected(409, f"callback {cb.callback_id} was already applied") from None
        return {"accepted": accepted, "ignored": len(ignored)}

    def _audit_strangers(self, cb: Callback, ignored: list[int], now: datetime) -> None:
        strangers = set(ignored) - store.batch_userids(cb.batch_id, ignored)
        if strangers:
            store.audit(
                "callback_unknown_users", now, cb.job_id, callback_id=cb.callback_id,
                batch_id=cb.batch_id, userids=sorted(strangers)[:50],
            )  # fmt: skip
            log.warning(
                "job %s: callback %s names %d users not in batch %s; ignored",
                cb.job_id, cb.callback_id, len(strangers), cb.batch_id,
            )  # fmt: skip
