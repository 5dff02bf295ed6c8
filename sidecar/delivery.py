"""Local delivery: claim a queued local batch, render, send, record each outcome at once.

Each outcome is committed right after the SMTP server accepts (or refuses) the message,
through the same `store.apply_updates` a cloud callback uses, so a crash can repeat at
most the message in flight, and that one carries the same Message-ID again.
"""

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from providers.base import (
    PermanentDeliveryError,
    ProviderError,
    ProviderUnavailable,
    Sender,
    TransientDeliveryError,
)
from providers.email import build_message, make_message_id
from providers.local.pdf import PdfPool
from sidecar import certificates, crashpoints, metrics, welcomepasswords
from sidecar.compose import Composer
from sidecar.db import store
from sidecar.db.models import Batch, Job, Recipient
from sidecar.errors import ConfigError, TemplateError
from sidecar.render import Renderer
from sidecar.status import BatchStatus, JobStatus, RecipientStatus
from sidecar.unsubscribe import Links, settle_opted_out

log = logging.getLogger(__name__)

R = RecipientStatus


@dataclass(frozen=True)
class DeliverySettings:
    sender: str
    certificate_dir: Path
    public_url: str
    max_attempts: int = 3
    backoff: tuple[float, ...] = (60.0, 300.0, 900.0)
    lease_seconds: float = 300.0
    unsubscribe: Links | None = None  # None: bulk mail goes without unsubscribe links
    # how often a batch being sent looks whether its job was cancelled meanwhile (a cancel
    # from the CLI, the API or the dashboard stops the batch within this many seconds)
    cancel_check_seconds: float = 1.0


class LocalDelivery:
    """Delivers local batches from the ledger. `run_once` is the loop step tests call."""

    def __init__(
        self,
        settings: DeliverySettings,
        *,
        open_sender: Callable[[], Sender],
        renderer: Renderer,
        pdf: PdfPool | None,
        clock: Callable[[], datetime],
        stop: threading.Event | None = None,
        welcome: "Callable[[], welcomepasswords.WelcomePasswords] | None" = None,
    ):
        self.settings = settings
        self._welcome = welcome  # builds the password step of welcome jobs, on first use
        self._open_sender = open_sender
        self._sender: Sender | None = None
        self.renderer = renderer
        self.composer = Composer(renderer, settings.public_url, clock, settings.unsubscribe)
        self.pdf = pdf
        self.clock = clock
        self.stop = stop or threading.Event()
        self.heartbeat: Callable[[], None] = lambda: None  # progress, for the watchdog
        # host:pid:token; the token tells this process from an earlier one with the same pid
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:100]

    # --- loop ------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Deliver every batch that is due now; returns the number of outcomes recorded."""
        done = 0
        crashpoints.hang("delivery.run")
        self.recover_orphans()
        try:
            while not self.stop.is_set():
                self.heartbeat()
                batch = self._claim()
                if batch is None:
                    break
                done += self._deliver(batch)
        finally:
            self.close_sender()
        return done

    def close_sender(self) -> None:
        if self._sender is not None:
            try:
                self._sender.close()
            finally:
                self._sender = None

    def recover_orphans(self) -> int:
        """Re-queue batches whose worker on this host has died (a crash or SIGKILL).

        Batches held by a live process, or by another host, wait for their lease to expire.
        """
        host = socket.gethostname()
        held = Batch.select(Batch.id, Batch.owner).where(
            Batch.status == BatchStatus.PROCESSING, Batch.owner.startswith(f"{host}:")
        )
        orphans = [b.id for b in held if b.owner != self.owner and not owner_alive(b.owner)]
        if orphans:
            Batch.update(status=BatchStatus.QUEUED, lease_until=None, owner=None).where(
                Batch.id.in_(orphans), Batch.status == BatchStatus.PROCESSING
            ).execute()
            log.warning(
                "%d batches of a dead worker re-queued: %s", len(orphans), ", ".join(orphans)
            )
        return len(orphans)

    def _claim(self) -> Batch | None:
        now = self.clock()
        lease = now + timedelta(seconds=self.settings.lease_seconds)
        due = (Batch.status == BatchStatus.QUEUED) & (
            Batch.lease_until.is_null() | (Batch.lease_until <= now)
        )
        expired = (Batch.status == BatchStatus.PROCESSING) & (Batch.lease_until <= now)
        candidates = (
            Batch.select(Batch.id, Batch.status)
            .where(Batch.route == "local", due | expired)
            .order_by(Batch.submitted_at, Batch.index)
            .limit(10)
        )
        for cand in candidates:
            n = (
                Batch.update(
                    status=BatchStatus.PROCESSING,
                    lease_until=lease,
                    owner=self.owner,
                    updated_at=now,
                )
                .where(Batch.id == cand.id, Batch.route == "local", due | expired)
                .execute()
            )
            if n == 1:
                if cand.status == BatchStatus.PROCESSING:
                    log.warning("batch %s: lease expired (a worker died?), taking it over", cand.id)
                return Batch.get_by_id(cand.id)
        return None

    # --- one batch -------------------------------------------------------------------------

    def _deliver(self, batch: Batch) -> int:
        job = Job.get_by_id(batch.job_id)
        now = self.clock()
        # Retries whose time has come go back to queued first.
        Recipient.update(status=R.QUEUED, updated_at=now).where(
            Recipient.batch == batch.id,
            Recipient.status == R.RETRY_PENDING,
            Recipient.next_attempt_at <= now,
        ).execute()
        todo = list(
            Recipient.select()
            .where(Recipient.batch == batch.id, Recipient.status == R.QUEUED)
            .order_by(Recipient.userid)
        )
        gone = settle_opted_out(job, batch.id, [r.userid for r in todo], now)
        if gone:  # unsubscribed while the batch waited: suppressed, closed below if empty
            todo = [r for r in todo if r.userid not in gone]
        log.info("job %s: batch %d: delivering %d recipients", job.id, batch.index, len(todo))
        done = 0
        pause_until: datetime | None = None
        welcome = job.type == welcomepasswords.JOB_TYPE
        passwords: dict[int, str] = {}
        if welcome and todo:
            todo, passwords, done, paused = self._set_passwords(job, batch, todo)
            if paused:
                pause_until = self.clock() + timedelta(seconds=self.settings.backoff[0])
        certs = self._start_certificates(job, todo) if job.actions.get("certificate") else {}
        renew_at = self.clock() + timedelta(seconds=self.settings.lease_seconds / 3)
        check_at = time.monotonic() + self.settings.cancel_check_seconds
        try:
            for r in todo:
                self.heartbeat()
                if self.stop.is_set():
                    break
                if time.monotonic() >= check_at:
                    if _cancelled(job.id):
                        log.info("job %s: cancelled: batch %d stops", job.id, batch.index)
                        break
                    check_at = time.monotonic() + self.settings.cancel_check_seconds
                if self.clock() >= renew_at:
                    self._renew(batch)
                    renew_at = self.clock() + timedelta(seconds=self.settings.lease_seconds / 3)
                extra = {"temporary_password": passwords.get(r.userid, "")} if welcome else None
                update, unavailable = self._deliver_one(job, r, certs.get(r.userid), extra)
                with store.atomic():
                    applied, _ = store.apply_updates(
                        job.id, batch.id, [update], self.clock(), self.settings.max_attempts
                    )
                    if welcome:
                        welcomepasswords.settle(r, update.status, self.clock())
                if applied:
                    metrics.delivered("local", update.status, job.created_at, update.timesent)
                done += 1
                if unavailable:
                    # The server is down: leave the rest of the batch queued until then.
                    pause_until = update.next_attempt_at or self.clock()
                    break
        finally:
            for _, fut in certs.values():
                if fut is not None:
                    fut.cancel()
            self._release(batch, pause_until)
        return done

    def _set_passwords(
        self, job: Job, batch: Batch, todo: list[Recipient]
    ) -> tuple[list[Recipient], dict[int, str], int, bool]:
        """A welcome batch: set the temporary passwords in Moodle before any email goes.
        Returns who can be mailed now, their passwords, the outcomes recorded (failures)
        and whether Moodle was unreachable (the rest then waits)."""
        try:
            if self._welcome is None:
                raise ConfigError("welcome emails need [moodle] and security.encryption_key")
            prepared = self._welcome().prepare(job.id, todo)
        except ConfigError as exc:
            log.error("job %s: batch %d: %s", job.id, batch.index, exc)
            failed = [store.Update(r.userid, R.FAILED, error=str(exc), attempts=r.attempts + 1)
                      for r in todo]  # fmt: skip
            prepared = welcomepasswords.Prepared(ready=[], failed=failed)
        if prepared.failed:
            by_user = {r.userid: r for r in todo}
            with store.atomic():
                store.apply_updates(
                    job.id, batch.id, prepared.failed, self.clock(), self.settings.max_attempts
                )
                for u in prepared.failed:
                    welcomepasswords.settle(by_user[u.userid], u.status, self.clock())
        return prepared.ready, prepared.passwords, len(prepared.failed), prepared.pause

    def _renew(self, batch: Batch) -> None:
        lease = self.clock() + timedelta(seconds=self.settings.lease_seconds)
        Batch.update(lease_until=lease).where(
            Batch.id == batch.id, Batch.owner == self.owner, Batch.status == BatchStatus.PROCESSING
        ).execute()

    def _release(self, batch: Batch, pause_until: datetime | None) -> None:
        now = self.clock()
        with store.atomic():
            store.refresh_progress(batch.job_id, batch.id, now)
            nxt = (
                Recipient.select(Recipient.next_attempt_at)
                .where(Recipient.batch == batch.id, Recipient.status == R.RETRY_PENDING)
                .order_by(Recipient.next_attempt_at)
                .first()
            )
            lease = pause_until or (nxt.next_attempt_at if nxt else None)
            Batch.update(
                status=BatchStatus.QUEUED, lease_until=lease, owner=None, updated_at=now
            ).where(Batch.id == batch.id, Batch.status == BatchStatus.PROCESSING).execute()

    def _start_certificates(
        self, job: Job, todo: list[Recipient]
    ) -> dict[int, tuple[certificates.Issued, "Future[bytes] | None"]]:
        """Reserve each certificate and render it in the process pool while emails go out.

        The future is None when the PDF was already written (a redelivery); a template
        error becomes that recipient's failed future, not the batch's.
        """
        out: dict[int, tuple[certificates.Issued, Future[bytes] | None]] = {}
        for r in todo:
            issued = certificates.reserve(job.id, r.userid, job.courseid, "local", self.clock())
            if (self.settings.certificate_dir / issued.key).exists():
                out[r.userid] = (issued, None)
                continue
            try:
                html = self.composer.certificate_html(job, r, issued)
            except TemplateError as exc:
                failed: Future[bytes] = Future()
                failed.set_exception(exc)
                out[r.userid] = (issued, failed)
                continue
            out[r.userid] = (issued, _submit_pdf(self.pdf, html))
        return out

    def _deliver_one(
        self,
        job: Job,
        r: Recipient,
        cert: "tuple[certificates.Issued, Future[bytes] | None] | None",
        extra: dict | None = None,
    ) -> tuple[store.Update, bool]:
        """Deliver one recipient; returns its outcome and whether the server is unreachable."""
        attempts = r.attempts + 1
        attachment = None
        cert_key = None
        try:
            if cert is not None:
                issued, pdf = cert
                if pdf is not None:
                    data = pdf.result()
                    certificates.write_file(self.settings.certificate_dir, issued.key, data)
                else:
                    data = (self.settings.certificate_dir / issued.key).read_bytes()
                cert_key = issued.key
                attachment = (f"certificate-{issued.code}.pdf", data, "application/pdf")
            message_id = None
            if job.actions.get("email"):
                composed = self.composer.email(job, r, issued if cert_key else None, extra)
                email = composed.email
                sender = job.sender or self.settings.sender
                message_id = make_message_id(job.id, r.userid, _domain(sender))
                attach = (
                    (attachment,) if attachment and email.certificate_delivery == "attach" else ()
                )
                msg = build_message(
                    sender=sender,
                    to=r.email,
                    subject=email.subject,
                    html=email.html,
                    text=email.text,
                    message_id=message_id,
                    reply_to=job.reply_to,
                    headers=composed.headers,
                    attachments=attach,
                )
                self._send(msg)
                crashpoints.reach("delivery.accepted")
            sent = store.Update(
                r.userid,
                R.SENT,
                external_id=message_id,
                certificate_key=cert_key,
                timesent=self.clock(),
                attempts=attempts,
            )
            return sent, False
        except PermanentDeliveryError as exc:
            log.warning("job %s: user %s: refused: %s", job.id, r.userid, exc.reply)
            failed = store.Update(
                r.userid, R.FAILED, error=exc.reply or str(exc), attempts=attempts
            )
            return failed, False
        except (TransientDeliveryError, ProviderUnavailable) as exc:
            reason = getattr(exc, "reply", "") or str(exc)
            unavailable = isinstance(exc, ProviderUnavailable)
            if attempts >= self.settings.max_attempts:
                return store.Update(r.userid, R.FAILED, error=reason, attempts=attempts), False
            delay = self.settings.backoff[min(attempts - 1, len(self.settings.backoff) - 1)]
            log.warning(
                "job %s: user %s: temporary failure (attempt %d), retry in %ss: %s",
                job.id, r.userid, attempts, delay, reason,
            )  # fmt: skip
            retry = store.Update(
                r.userid,
                R.RETRY_PENDING,
                error=reason,
                attempts=attempts,
                next_attempt_at=self.clock() + timedelta(seconds=delay),
            )
            return retry, unavailable
        except (TemplateError, ProviderError) as exc:
            # A template or PDF that cannot be made for this learner: retrying won't help.
            log.warning("job %s: user %s: %s", job.id, r.userid, exc)
            return store.Update(r.userid, R.FAILED, error=str(exc), attempts=attempts), False

    def _send(self, msg) -> None:
        if self._sender is None:
            self._sender = self._open_sender()
        try:
            self._sender.send(msg)
        except (TransientDeliveryError, ProviderUnavailable):
            self.close_sender()
            raise


def _submit_pdf(pool: PdfPool | None, html: str) -> "Future[bytes]":
    if pool is not None:
        return pool.submit(html)
    from providers.local.pdf import render_pdf

    fut: Future[bytes] = Future()
    try:
        fut.set_result(render_pdf(html))
    except Exception as exc:  # noqa: BLE001 - handed to the recipient's outcome
        fut.set_exception(exc)
    return fut


def owner_alive(owner: str | None) -> bool:
    """Whether the process named by a host:pid:token owner (on this host) still runs."""
    try:
        pid = int((owner or "").split(":")[1])
    except (IndexError, ValueError):
        return True  # cannot tell: let the lease decide
    if pid == os.getpid():
        return False  # an earlier incarnation with our pid (containers restart as pid 1)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _domain(address: str) -> str:
    addr = address.rsplit("<", 1)[-1].rstrip(">").strip()
    return addr.rsplit("@", 1)[-1] if "@" in addr else "moodle-offload.invalid"


def _cancelled(job_id: str) -> bool:
    """Whether the job was cancelled (its recipients not yet sent are then `cancelled`, and
    a `sent` recorded after that would win over it: they must not be sent)."""
    status = Job.select(Job.status).where(Job.id == job_id).scalar()
    return status == JobStatus.CANCELLED
