"""What comes back from the cloud through queues the sidecar polls (no inbound port).

- results: signed callbacks, applied by the same `CallbackService.handle` as HTTP ones;
- the job queue's DLQ: a batch the worker gave up on marks its open recipients failed
  with the reason, and `jobs retry` sends them again;
- SES events: a permanent bounce or a complaint marks the recipient permanently_failed
  and puts the address on the suppression list.

A message is deleted only after what it says is committed; each handler is idempotent,
since every queue may deliver a message twice.
"""

import json
import logging
from collections.abc import Callable
from datetime import datetime

from providers.aws.queues import SIGNATURE_ATTRIBUTE, QueueReader, Received
from providers.message import MessageError, decode_body
from sidecar import metrics, suppression
from sidecar.callbacks import CallbackRejected, CallbackService
from sidecar.db import store
from sidecar.status import RecipientStatus

log = logging.getLogger(__name__)

#: rejections that will never pass as they are: audited by the callback service, deleted
_FINAL_REJECTIONS = {400, 404, 409, 413}


def poll_results(reader: QueueReader, callbacks: CallbackService, source: str = "sqs") -> int:
    """Apply one receive's worth of callbacks; returns how many were applied.

    A callback with a bad signature stays in the queue (a secret may be mid-rotation:
    it is retried until the queue's retention ends); a malformed, unknown or repeated
    one is deleted after its audit line.
    """
    applied, done = 0, []
    for m in reader.receive():
        try:
            callbacks.handle(m.body, m.attributes.get(SIGNATURE_ATTRIBUTE), source=source)
            applied += 1
        except CallbackRejected as exc:
            if exc.status not in _FINAL_REJECTIONS:
                continue
        done.append(m.receipt)
    if done:
        reader.delete(done)
    return applied


def poll_dead_letters(
    reader: QueueReader, clock: Callable[[], datetime], provider: str = "aws"
) -> int:
    """Mark the open recipients of each dead-lettered batch failed; returns batches read."""
    seen, done = 0, []
    for m in reader.receive():
        _dead_letter(m, clock())
        metrics.dead_letter(provider)
        done.append(m.receipt)
        seen += 1
    if done:
        reader.delete(done)
    return seen


def _dead_letter(m: Received, now: datetime) -> None:
    try:
        body = decode_body(m.body)
        job_id, batch_id = str(body["job_id"]), str(body["batch_id"])
        userids = [int(r["userid"]) for r in body["recipients"]]
    except (MessageError, KeyError, TypeError, ValueError) as exc:
        log.error("DLQ message %s is not a batch message (%s); dropped", m.message_id, exc)
        with store.atomic():
            store.audit("dlq_unreadable", now, None, message_id=m.message_id, error=str(exc))
        return
    if store.get_batch(batch_id) is None:
        log.error("DLQ message %s: batch %s is not in this ledger; dropped", m.message_id, batch_id)
        with store.atomic():
            store.audit("dlq_unknown_batch", now, None, message_id=m.message_id, batch_id=batch_id)
        return
    reason = (
        "dead-lettered: the cloud worker failed on this batch as many times as the queue "
        f"allows (see the worker's logs); `moodle-offload jobs retry {job_id}` sends it again"
    )
    updates = [store.Update(u, RecipientStatus.FAILED, error=reason) for u in userids]
    with store.atomic():
        accepted, _ = store.apply_updates(job_id, batch_id, updates, now, max_attempts=10**6)
        store.audit(
            "batch_dead_lettered", now, job_id, batch_id=batch_id, message_id=m.message_id,
            failed=accepted, recipients=len(userids),
        )  # fmt: skip
    log.error(
        "job %s: batch %s dead-lettered: %d recipients marked failed (jobs retry sends them)",
        job_id, batch_id, accepted,
    )  # fmt: skip


def poll_ses_events(reader: QueueReader, clock: Callable[[], datetime]) -> int:
    """Apply SES bounce and complaint events; returns how many marked a recipient."""
    marked, done = 0, []
    for m in reader.receive():
        marked += _ses_event(m, clock())
        done.append(m.receipt)
    if done:
        reader.delete(done)
    return marked


def _ses_event(m: Received, now: datetime) -> int:
    try:
        event = json.loads(m.body)
        if event.get("Type") == "Notification" and isinstance(event.get("Message"), str):
            event = json.loads(event["Message"])  # an SNS envelope (raw delivery off)
        kind = event.get("eventType") or event.get("notificationType")
        mail = event.get("mail") or {}
    except (ValueError, AttributeError) as exc:
        log.warning("SES event %s unreadable (%s); dropped", m.message_id, exc)
        return 0
    if kind == "Bounce":
        bounce = event.get("bounce") or {}
        if bounce.get("bounceType") != "Permanent":
            return 0  # a soft bounce: SES itself retried; nothing to suppress
        addresses = [
            (r.get("emailAddress", ""), r.get("diagnosticCode") or bounce.get("bounceSubType", ""))
            for r in bounce.get("bouncedRecipients", [])
        ]
        source, what = "ses_bounce", f"bounced ({bounce.get('bounceSubType', 'General')})"
    elif kind == "Complaint":
        complaint = event.get("complaint") or {}
        addresses = [
            (r.get("emailAddress", ""), "") for r in complaint.get("complainedRecipients", [])
        ]
        kind_of = complaint.get("complaintFeedbackType") or "abuse"
        source, what = "ses_complaint", f"complaint ({kind_of})"
    else:
        return 0
    tags = mail.get("tags") or {}
    job_id = _tag(tags, "job_id")
    userid = _tag(tags, "userid")
    marked = 0
    with store.atomic():
        for address, detail in addresses:
            if not address:
                continue
            reason = f"{what}: {detail}".rstrip(": ") + "; the address is suppressed"
            suppression.suppress(address, reason, source, now, job_id, _int(userid))
            if job_id and _int(userid) is not None:
                marked += suppression.mark_undeliverable(job_id, _int(userid), reason, now)
        store.audit(source, now, job_id, userid=userid, recipients=len(addresses))
    metrics.ses_event("bounce" if kind == "Bounce" else "complaint", len(addresses))
    log.warning("job %s: user %s: %s; address suppressed", job_id, userid, what)
    return marked


def _tag(tags: dict, name: str) -> str | None:
    value = tags.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value) if value is not None else None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
