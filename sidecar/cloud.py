"""Cloud submission: pending AWS batches → rendered `offload.batch.v1` messages → SQS.

Bodies are rendered here (the worker only delivers) and split to the queue's size limit.
A batch becomes `queued`, with the queue's message id of each part, in the transaction
right after SQS accepted it; batches are sent about ten messages a request and each
request is committed before the next, so a crash can leave at most one request's
batches `pending` after SQS took them. Those are sent again with the same entry and
deduplication ids: a FIFO queue drops them (5-minute window) and the worker's
(batch_id, userid) record makes any copy a no-op, so nobody is mailed twice. The next
request is rendered while the last one is on its way (a second thread sends it and
commits what SQS took), and is sent only after the last one is committed. Large batches
are composed (rendered and packed) in worker processes a few batches ahead
(sidecar/composepool.py), so the emails of the next batches are rendered on another core
while this one posts and commits.

Pacing: the SES quota is read every few minutes; submission never plans more than 95%
of the daily quota (less what SES sent and what is still queued) nor of the send rate.
"""

import hashlib
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import fn

from providers.aws import SqsSubmitter, SubmitInterrupted
from providers.aws.account import SendQuota, SesAccount
from providers.base import ProviderError, ProviderUnavailable
from providers.message import decode_body
from sidecar import certificates, composepool, crashpoints, metrics
from sidecar.compose import Composer
from sidecar.db import store
from sidecar.db.models import Batch, Job, Recipient, database
from sidecar.status import BatchStatus, JobStatus, RecipientStatus
from sidecar.unsubscribe import settle_opted_out

log = logging.getLogger(__name__)

R = RecipientStatus
#: messages handed to SQS between two commits (one SendMessageBatch request)
MESSAGES_PER_COMMIT = 10
QUOTA_REFRESH = timedelta(minutes=5)


@dataclass(frozen=True)
class CloudSettings:
    provider: str  # the route name of the batches this submitter takes: "aws"
    sender: str
    bucket: str
    public_url: str
    callback_url: str  # the results queue URL, or {public_url}/callback
    callback_mode: str  # "sqs" | "http"
    configuration_set: str | None = None
    url_ttl: int = 3600
    max_attempts: int = 3
    # ([[companies]] id, from): a job of that tenant made with that sender (a licence
    # email) goes from it; any other job goes from `sender`
    company_senders: tuple[tuple[int, str], ...] = ()


def _sender(s: CloudSettings, job: Job) -> str:
    """The From of a cloud job's mail: the company's own when the job was made with it."""
    return job.sender if (job.tenant_id, job.sender) in s.company_senders else s.sender


@dataclass
class _Built:
    batch: Batch
    job: Job
    key: str  # the submitter's key of this batch: batch id and round
    bodies: list[bytes]
    userids: list[int]
    tags: list[str]  # one per part: a digest of the userids it holds


@dataclass
class _Composing:
    job: Job
    batch: Batch
    work: composepool.Work
    result: "Future[composepool.Composed] | composepool.Composed"


class Pacer:
    """Recipients the sidecar may hand over now: 95% of SES's daily quota and rate."""

    def __init__(self, ses: SesAccount | None, clock: Callable[[], datetime], route: str = "aws"):
        self.ses = ses
        self.route = route
        self.clock = clock
        self.quota: SendQuota | None = None
        self._read_at: datetime | None = None
        self._day_left: float = 0
        self._tokens = 0.0
        self._tokens_at: datetime | None = None
        self._warned = False

    def allowance(self, batch_size: int) -> int | None:
        """How many recipients may go now (None: no limit known)."""
        now = self.clock()
        if self.ses is not None and (self._read_at is None or now - self._read_at >= QUOTA_REFRESH):
            self._refresh(now)
        if self.quota is None:
            return None
        cap = max(self.quota.plan_rate * 60, float(batch_size))
        if self._tokens_at is None:
            self._tokens = cap
        else:
            elapsed = (now - self._tokens_at).total_seconds()
            self._tokens = min(cap, self._tokens + elapsed * self.quota.plan_rate)
        self._tokens_at = now
        return max(int(min(self._tokens, self._day_left)), 0)

    def ceiling(self) -> int | None:
        """The most recipients that can ever go at once: 95% of a whole day's quota (None:
        no daily limit, or none known). A batch over it must be split to go at all."""
        return self.quota.plan_day if self.quota is not None else None

    def spend(self, n: int) -> None:
        if self.quota is not None:
            self._tokens -= n
            self._day_left -= n

    def _refresh(self, now: datetime) -> None:
        self._read_at = now
        try:
            self.quota = self.ses.quota()
        except ProviderError as exc:
            if not self._warned:
                log.warning("SES quota unreadable, submitting unpaced: %s", exc)
                self._warned = True
            self.quota = None
            return
        if self.quota.unlimited:
            self._day_left = float("inf")
        else:
            self._day_left = self.quota.plan_remaining(in_flight=_in_flight(self.route)) or 0
        log.debug("%s; %s may go today", self.quota.describe(), self._day_left)


def _part_tag(userids) -> str:
    """8 hex digits naming the recipients of one message: a batch resent after a crash
    and split at the same recipients has the same deduplication ids, one split at other
    recipients has others (a FIFO queue would drop it as a copy and lose the difference)."""
    return hashlib.blake2b(",".join(map(str, userids)).encode(), digest_size=4).hexdigest()


def _in_flight(route: str) -> int:
    """Recipients handed to the cloud route and not yet reported."""
    return (
        Recipient.select()
        .join(Batch, on=(Recipient.batch == Batch.id))
        .where(
            Batch.route == route, Batch.status == BatchStatus.QUEUED, Recipient.status == R.QUEUED
        )
        .count()
    )


class CloudSubmitter:
    """Hands pending batches of one cloud route to its queue. `run_once` is the loop step."""

    def __init__(
        self,
        settings: CloudSettings,
        *,
        sqs,  # SqsSubmitter, or Cloudflare's QueueSubmitter: the same interface
        composer: Composer,
        pacer: Pacer,
        clock: Callable[[], datetime],
        store_pdfs: "Callable[[list[tuple[str, str]]], dict[str, str]] | None" = None,
        workers: int | None = None,
    ):
        self.settings = settings
        self.sqs = sqs
        # Cloudflare: the Worker cannot make PDFs, so each certificate is rendered here and
        # stored before its batch is queued; the message carries its key, not its HTML.
        # `store_pdfs([(key, html)])` answers {key: why} for the ones it could not render,
        # and raises ProviderError when the bucket cannot take them (the batch waits).
        self.store_pdfs = store_pdfs
        self.composer = composer
        self.pacer = pacer
        self.clock = clock
        self._batch_counts: dict[str, int] = {}
        self._waiting_logged = False
        # large batches are composed (rendered, packed) in worker processes, a few batches
        # ahead of the one being sent and committed here
        self.workers = composepool.processes() if workers is None else workers
        self._composers: composepool.ComposePool | None = None

    def run_once(self, job_id: str | None = None) -> int:
        """Submit every pending batch the quota allows; returns the batches queued.

        Raises ProviderUnavailable (after committing what SQS accepted) when SQS cannot be
        reached; the rest stays pending for the next call.
        """
        limit = self.sqs.max_message_bytes()
        queued = 0
        built: list[_Built] = []
        parts = 0
        # one request at a time on its way to SQS while the next one is composed; it is
        # committed before the next is sent
        sending: Future[int] | None = None
        # batches being composed (in worker processes), in order: as many as there are
        # workers, and one more, so that none waits while this thread sends and commits
        ahead: deque[_Composing] = deque()

        def take(one: _Built | None) -> None:
            nonlocal built, parts, sending, queued
            if one is None:
                return
            built.append(one)
            parts += len(one.bodies)
            if parts >= MESSAGES_PER_COMMIT:
                previous, sending = sending, None
                queued += self._finish(previous)
                sending = self._start(pool, built)
                built, parts = [], 0

        with ThreadPoolExecutor(1, thread_name_prefix="sqs-submit") as pool:
            jobs: dict[str, Job] = {}
            try:
                for batch in self._pending(job_id):
                    if batch.job_id not in jobs:
                        jobs[batch.job_id] = Job.get_by_id(batch.job_id)
                    job = jobs[batch.job_id]
                    todo = self._ready(job, batch)
                    if todo is None:
                        break  # the SES quota: later batches wait too
                    if not todo:
                        continue
                    self.pacer.spend(len(todo))
                    ahead.append(self._begin(job, batch, todo, limit))
                    while len(ahead) > (self.workers + 1 if self.workers else 0):
                        take(self._land(ahead.popleft()))
                while ahead:
                    take(self._land(ahead.popleft()))
                previous, sending = sending, None
                queued += self._finish(previous)
                if built:
                    queued += self._finish(self._start(pool, built))
            finally:
                for c in ahead:  # stopped by an error: their recipients stay pending
                    if isinstance(c.result, Future):
                        c.result.cancel()
                if sending is not None:  # stopped by an error: what SQS took is recorded
                    try:
                        self._finish(sending)
                    except Exception:  # noqa: BLE001 - the first error is the one raised
                        log.warning("recording the last request failed too", exc_info=True)
                pool.submit(database.close)  # the sending thread's connection
        return queued

    def _ready(self, job: Job, batch: Batch) -> list | None:
        """The batch's open recipients, split to the SES quota; [] when none is open (the
        batch is closed), None when the quota says wait. Those who unsubscribed from the
        job's kind of mail meanwhile are recorded suppressed first."""
        # the driver's rows, not models (a third of the time of loading 50,000 recipients)
        # and their variables left as stored: decoded where the batch is composed, which
        # for a large batch is another process
        query = (
            Recipient.select(
                Recipient.userid, Recipient.email, Recipient.firstname, Recipient.lastname,
                Recipient.vars,
            )
            .where(Recipient.batch == batch.id, Recipient.status.in_([R.PENDING, R.RETRY_PENDING]))
            .order_by(Recipient.userid)
        )  # fmt: skip
        todo = list(map(composepool.Row._make, database.execute(query)))
        if todo:  # who unsubscribed while the batch waited is suppressed, not sent
            gone = settle_opted_out(job, batch.id, [r.userid for r in todo], self.clock())
            todo = [r for r in todo if r.userid not in gone] if gone else todo
        if not todo:
            with store.atomic():
                store.refresh_progress(job.id, batch.id, self.clock())
            return []
        allowed = self.pacer.allowance(len(todo))
        if allowed is None:
            return todo
        ceiling = self.pacer.ceiling()
        if ceiling and len(todo) > ceiling:
            todo = self._split(job, batch, todo, ceiling)
        if allowed < len(todo):
            if not self._waiting_logged:
                log.info(
                    "batch %s waits for the SES quota (%d recipients, %d allowed now)",
                    batch.id, len(todo), allowed,
                )  # fmt: skip
                self._waiting_logged = True
            return None
        self._waiting_logged = False
        return todo

    def _split(self, job: Job, batch: Batch, todo: list, size: int) -> list:
        """Keep the first `size` open recipients in `batch`, move the rest to new batches of
        at most `size`: a batch over a whole day's SES plan would otherwise never go."""
        now = self.clock()
        rest = todo[size:]
        with store.atomic():
            top = Batch.select(fn.MAX(Batch.index)).where(Batch.job == job.id).scalar()
            for n, lo in enumerate(range(0, len(rest), size), start=1):
                group = [r.userid for r in rest[lo : lo + size]]
                new = Batch.create(
                    id=str(uuid.uuid4()), job=job.id, index=top + n, status=BatchStatus.PENDING,
                    route=batch.route, size=len(group), attempts=batch.attempts, updated_at=now,
                )  # fmt: skip
                for chunk in range(0, len(group), 500):
                    Recipient.update(batch=new.id, updated_at=now).where(
                        Recipient.batch == batch.id,
                        Recipient.userid.in_(group[chunk : chunk + 500]),
                    ).execute()
            Batch.update(size=Batch.size - len(rest), updated_at=now).where(
                Batch.id == batch.id
            ).execute()
        self._batch_counts.pop(job.id, None)
        log.warning(
            "job %s: batch %s has %d recipients but SES allows at most %d a day (95%% of the "
            "account's quota): split into batches of %d. Lower offload.job_batch_size, or ask "
            "AWS for a higher SES quota (production access)",
            job.id, batch.id, len(todo), size, size,
        )  # fmt: skip
        return todo[:size]

    def _pending(self, job_id: str | None):
        query = (
            Batch.select()
            .join(Job, on=(Batch.job == Job.id))
            .where(Batch.route == self.settings.provider, Batch.status == BatchStatus.PENDING)
            .order_by(Job.created_at, Batch.job, Batch.index)
        )
        if job_id:
            query = query.where(Batch.job == job_id)
        return query.iterator()

    # --- building --------------------------------------------------------------------------

    def _begin(self, job: Job, batch: Batch, todo: list, limit: int) -> "_Composing":
        """Reserve the batch's certificates and start composing its messages: in a worker
        process when the batch is large enough to pay for it, else here and now."""
        work = self._work(job, batch, todo, limit)
        pool = self._pool() if len(todo) >= composepool.POOL_MIN else None
        if pool is not None:
            try:
                return _Composing(job, batch, work, pool.submit(work))
            except (BrokenProcessPool, RuntimeError) as exc:
                self._drop_pool(exc)
        return _Composing(job, batch, work, composepool.compose(self.composer, work))

    def _work(self, job: Job, batch: Batch, todo: list, limit: int) -> composepool.Work:
        s = self.settings
        now = self.clock()
        prefix = f"certificates/{job.id}/"
        issued = {}
        if job.actions.get("certificate"):
            storage = "r2" if self.store_pdfs else "s3"
            issued = certificates.reserve_many(
                job.id, [r.userid for r in todo], job.courseid, storage, prefix, now
            )
        header = {
            "job_id": job.id, "batch_id": batch.id, "batch_index": batch.index,
            "batch_count": self._batch_count(job.id), "tenant_id": job.tenant_id,
            "type": job.type, "courseid": job.courseid, "created_by": job.created_by,
            "actions": {"email": bool(job.actions.get("email")),
                        "certificate": bool(job.actions.get("certificate"))},
            "email": {"from": _sender(s, job), "reply_to": job.reply_to, "subject": "",
                      "template_id": job.template_id, "configuration_set": s.configuration_set,
                      "attach_certificate": False},
            "certificate": {"template_id": job.certificate_template_id or "certificate",
                            "bucket": s.bucket, "key_prefix": prefix, "url_ttl": s.url_ttl}
            if issued else None,
            "template_data": job.template_data or {},
            "callback": {"url": s.callback_url, "mode": s.callback_mode},
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "attempt": batch.attempts,
        }  # fmt: skip
        return composepool.Work(composepool.JobView.of(job), todo, issued, header, limit, now,
                                keep_pdfs=self.store_pdfs is not None)  # fmt: skip

    def _land(self, c: "_Composing") -> "_Built | None":
        """The composed batch, its PDFs stored (Cloudflare) and its failures recorded; None
        when nobody in it can go."""
        job, batch, work = c.job, c.batch, c.work
        out = c.result
        if isinstance(out, Future):
            try:
                out = out.result()
            except BrokenProcessPool as exc:  # a worker died (killed, out of memory)
                self._drop_pool(exc)
                out = composepool.compose(self.composer, work)
        failures = [store.Update(u, R.FAILED, error=why) for u, why in out.failures]
        for u, why in out.failures:
            log.warning("job %s: user %s: %s", job.id, u, why)
        if out.pdfs:  # ProviderError (the bucket): raised, the batch stays pending
            unrendered = self.store_pdfs(out.pdfs)
            if unrendered:
                by_key = {p.get("certificate_key"): p for p in out.people}
                for key, why in unrendered.items():
                    gone = by_key[key]
                    out.people.remove(gone)
                    why = f"certificate PDF: {why}"[:2000]
                    failures.append(store.Update(gone["userid"], R.FAILED, error=why))
            composepool.pack(work, out)
        if failures:
            with store.atomic():
                store.apply_updates(job.id, batch.id, failures, work.now, 1)
        if out.too_large is not None:
            why, userids = out.too_large
            self._fail_batch(job, batch, list(userids), why)
            return None
        if not out.parts:
            return None
        key = f"{batch.id}-r{batch.attempts}"
        bodies = [body for body, _ in out.parts]
        tags = [_part_tag(userids) for _, userids in out.parts]
        userids = [u for _, part in out.parts for u in part]
        return _Built(batch, job, key, bodies, userids, tags)

    def _pool(self) -> "composepool.ComposePool | None":
        """The worker processes composing large batches (None: compose here), made anew when
        the templates folder or the public URL changed (SIGHUP)."""
        if self.workers < 1:
            return None
        spec = composepool.Spec.of(self.composer)
        if self._composers is not None and self._composers.spec != spec:
            self._composers.close()
            self._composers = None
        if self._composers is None:
            self._composers = composepool.ComposePool(spec, self.workers)
        return self._composers

    def _drop_pool(self, exc: BaseException) -> None:
        log.warning(
            "composing in worker processes failed (%s): composing here from now on",
            type(exc).__name__,
        )
        self.workers = 0
        self.close()

    def close(self) -> None:
        """Stop the worker processes (if any were started)."""
        if self._composers is not None:
            self._composers.close()
            self._composers = None

    def _batch_count(self, job_id: str) -> int:
        if job_id not in self._batch_counts:
            self._batch_counts[job_id] = (
                Batch.select().where(Batch.job == job_id, Batch.route != "none").count()
            )
        return self._batch_counts[job_id]

    # --- sending ---------------------------------------------------------------------------

    def _start(self, pool: ThreadPoolExecutor, built: list[_Built]) -> "Future[int]":
        return pool.submit(self._send, built, time.monotonic())

    def _send(self, built: list[_Built], started: float) -> int:
        """On the sending thread: hand one request to the queue and commit what it accepted
        (the ledger's writes overlap with the next batches composed on the caller's thread);
        returns the batches queued."""
        provider = self.settings.provider
        request = {b.key: b.bodies for b in built}
        tags = {b.key: b.tags for b in built}
        try:
            outcomes = self.sqs.submit(request, tags)
        except SubmitInterrupted as exc:
            metrics.cloud_request(provider, "unavailable", time.monotonic() - started)
            done = self._record(built, exc.outcomes)
            metrics.cloud_batches(provider, done)
            raise ProviderUnavailable(
                f"{exc}; {done} batches were queued before, the rest stay pending"
            ) from exc
        except BaseException:
            metrics.cloud_request(provider, "error", time.monotonic() - started)
            raise
        metrics.cloud_request(provider, "ok", time.monotonic() - started)
        crashpoints.reach("cloud.accepted")  # the queue has them; the ledger does not yet
        done = self._record(built, outcomes)
        metrics.cloud_batches(provider, done)
        log.debug("%d batches queued in %.2fs", done, time.monotonic() - started)
        return done

    def _finish(self, sending: "Future[int] | None") -> int:
        """Wait until a request was sent and recorded; returns the batches queued."""
        return 0 if sending is None else sending.result()

    def _record(self, built: list[_Built], outcomes) -> int:
        now = self.clock()
        queued = 0
        started: set[str] = set()  # jobs with a batch queued here
        with store.atomic():
            for b in built:
                outcome = outcomes.get(b.key)
                if outcome is None or not any(outcome.message_ids):
                    if outcome is not None and outcome.error:
                        self._fail_batch(b.job, b.batch, b.userids, outcome.error, atomic=False)
                    continue  # not sent: stays pending
                parts = list(zip(b.bodies, outcome.message_ids, outcome.errors, strict=True))
                if any(mid is None and err is None for _, mid, err in parts):
                    # a part never reached SQS (it went away mid-batch): the whole batch
                    # stays pending and goes again with the same ids; the copies of the
                    # parts SQS took are dropped (FIFO) or no-ops for the worker
                    continue
                refused: list[store.Update] = []
                for body, mid, err in parts:
                    if mid is None:
                        log.error("batch %s: a part was refused by SQS: %s", b.batch.id, err)
                        why = f"SQS refused the message: {err}"[:2000]
                        refused += [
                            store.Update(p["userid"], R.FAILED, error=why)
                            for p in decode_body(body)["recipients"]
                        ]
                n = (
                    Batch.update(
                        status=BatchStatus.QUEUED, submitted_at=now, updated_at=now,
                        message_ids=list(outcome.message_ids), error=outcome.error,
                        lease_until=None,
                    )
                    .where(Batch.id == b.batch.id, Batch.status == BatchStatus.PENDING)
                    .execute()
                )  # fmt: skip
                if not n:
                    continue  # cancelled meanwhile: its reports still count
                # the batch's open recipients are those in its message: the others were
                # marked failed when it was built
                Recipient.update(status=R.QUEUED, updated_at=now).where(
                    Recipient.batch == b.batch.id,
                    Recipient.status.in_([R.PENDING, R.RETRY_PENDING]),
                ).execute()
                if refused:  # final: SQS would refuse the same body again
                    store.apply_updates(b.job.id, b.batch.id, refused, now, 1)
                started.add(b.job.id)
                queued += 1
            for job_id in sorted(started):
                if not store.move_job(job_id, JobStatus.QUEUED, now):
                    Job.update(status=JobStatus.PROCESSING, updated_at=now).where(
                        Job.id == job_id, Job.status == JobStatus.RETRY_PENDING
                    ).execute()  # a retried job: its new round is on its way
        if queued:
            jobs = sorted({b.job.id for b in built})
            log.info(
                "job %s: %d batches handed to %s", ", ".join(jobs), queued, self.settings.provider
            )
        return queued

    def _fail_batch(self, job: Job, batch: Batch, userids: list[int], why: str, *, atomic=True):
        """Recipients that cannot be put in any message: failed, with the reason."""
        log.error("job %s: batch %s cannot be submitted: %s", job.id, batch.id, why)
        now = self.clock()
        updates = [store.Update(u, R.FAILED, error=why[:2000]) for u in userids]
        with store.atomic() if atomic else nullcontext():
            Batch.update(status=BatchStatus.QUEUED, error=why[:2000], updated_at=now).where(
                Batch.id == batch.id, Batch.status == BatchStatus.PENDING
            ).execute()
            store.apply_updates(job.id, batch.id, updates, now, 1)


class _Offload(ABC):
    """What both clouds' pieces share: the cached answer to "can the queue take a job
    now" (`check_queue` asked at most once a minute) and closing every client."""

    _checked_at: float | None = None
    _problem: str | None = None

    @abstractmethod
    def check_queue(self) -> object:
        """Reach the job queue; raise ProviderError naming what is wrong."""

    @abstractmethod
    def parts(self) -> list:
        """The clients to close."""

    def problem(self) -> str | None:
        """Why the job queue cannot take batches now (None: it can); asked at most once a
        minute, for routing a new job."""
        now = time.monotonic()
        if self._checked_at is None or now - self._checked_at > 60:
            try:
                self.check_queue()
                self._problem = None
            except ProviderError as exc:
                self._problem = str(exc)
            self._checked_at = now
        return self._problem

    def close(self) -> None:
        for part in self.parts():
            try:
                part.close()
            except Exception:  # noqa: BLE001 - closing only
                log.debug("closing a %s client failed", type(self).__name__, exc_info=True)


class AwsOffload(_Offload):
    """The AWS pieces of one configuration, built on first use and closed together."""

    def __init__(self, config, composer: Composer, clock: Callable[[], datetime]):
        from providers.aws import AwsSettings
        from providers.aws.account import CertificateStore
        from providers.aws.clients import Endpoint

        aws = config.providers.aws
        self.config = aws
        self.endpoint = Endpoint(aws.region, aws.endpoint_url)
        self.sqs = SqsSubmitter(
            AwsSettings(region=aws.region, sqs_queue_url=aws.sqs_queue_url,
                        endpoint_url=aws.endpoint_url)
        )  # fmt: skip
        self.ses = SesAccount(self.endpoint)
        self.certificates = CertificateStore(aws.s3_bucket, self.endpoint)
        public = config.server.public_url.rstrip("/")
        results = aws.results_queue_url
        self.settings = CloudSettings(
            provider="aws", sender=aws.ses_from, bucket=aws.s3_bucket, public_url=public,
            callback_url=results or f"{public}/callback",
            callback_mode="sqs" if results else "http",
            configuration_set=aws.ses_configuration_set,
            url_ttl=config.offload.presigned_url_ttl,
            max_attempts=config.offload.retry.max_attempts,
            company_senders=tuple((c.id, c.from_) for c in config.companies if c.from_),
        )  # fmt: skip
        self.submitter = CloudSubmitter(
            self.settings, sqs=self.sqs, composer=composer, pacer=Pacer(self.ses, clock),
            clock=clock,
        )  # fmt: skip
        self._readers: dict[str, object] = {}

    def reader(self, url: str, wait_seconds: int = 0):
        from providers.aws.queues import QueueReader

        if url not in self._readers:
            self._readers[url] = QueueReader(url, self.endpoint, wait_seconds=wait_seconds)
        return self._readers[url]

    def check_queue(self):
        return self.sqs.check()

    def parts(self) -> list:
        return [self.submitter, self.sqs, self.ses, self.certificates, *self._readers.values()]


class CloudflareOffload(_Offload):
    """The Cloudflare pieces of one configuration: the queue (through the Worker or the
    REST API), the pull readers of the results queue and the DLQ, and R2 for certificates,
    which are rendered here (the Worker cannot run xhtml2pdf) and stored before their
    batch is queued."""

    def __init__(self, config, composer: Composer, clock: Callable[[], datetime], pdf_pool=None):
        from providers.cloudflare.queues import CloudflareSettings, QueueSubmitter

        cf = config.providers.cloudflare
        self.config = cf
        token = cf.auth_token.get_secret_value() if cf.auth_token else None
        secret = config.security.callback_secrets[0].get_secret_value()
        self.queue_settings = CloudflareSettings(
            worker_url=cf.worker_url, secret=secret, account_id=cf.account_id,
            queue_id=cf.queue_id, api_token=token, api_base=cf.api_base,
        )  # fmt: skip
        self.queue = QueueSubmitter(self.queue_settings)
        self.certificates = None
        if cf.r2_bucket:
            from providers.cloudflare.r2 import R2Store

            self.certificates = R2Store(cf.r2_bucket, cf.r2_endpoint, cf.r2_access_key_id,
                                        cf.r2_secret_access_key.get_secret_value())  # fmt: skip
        self.pdf_pool = pdf_pool
        public = config.server.public_url.rstrip("/")
        self.settings = CloudSettings(
            provider="cloudflare", sender=cf.from_ or config.providers.local.from_,
            bucket=cf.r2_bucket or "", public_url=public, callback_url=f"{public}/callback",
            callback_mode="queue" if cf.results_queue_id else "http",
            url_ttl=config.offload.presigned_url_ttl,
            max_attempts=config.offload.retry.max_attempts,
            company_senders=tuple((c.id, c.from_) for c in config.companies if c.from_),
        )  # fmt: skip
        self.submitter = CloudSubmitter(
            self.settings, sqs=self.queue, composer=composer, clock=clock,
            pacer=Pacer(None, clock, "cloudflare"), store_pdfs=self.store_pdfs,
        )  # fmt: skip
        self._readers: dict[str, object] = {}

    def store_pdfs(self, items: list[tuple[str, str]]) -> dict[str, str]:
        """Render each (key, html) to a PDF here and put it in R2; {key: why} for the ones
        that would not render. Raises ProviderError when R2 refuses (the batch waits)."""
        if self.certificates is None:
            raise ProviderError(
                "a certificate job is on the cloudflare route but [providers.cloudflare] has no "
                "R2 bucket: set r2_bucket, r2_endpoint and the R2 keys, or "
                'offload.certificate_mode = "local"'
            )
        from providers.local.pdf import render_pdf

        htmls = [html for _, html in items]
        unrendered: dict[str, str] = {}
        if self.pdf_pool is not None:
            futures = [self.pdf_pool.submit(html) for html in htmls]
        else:
            futures = None
        for n, (key, html) in enumerate(items):
            try:
                pdf = futures[n].result() if futures else render_pdf(html)
            except Exception as exc:  # noqa: BLE001 - one certificate, recorded on its recipient
                unrendered[key] = f"{type(exc).__name__}: {exc}"
                continue
            self.certificates.put(key, pdf)
        return unrendered

    def reader(self, queue_id: str):
        from providers.cloudflare.queues import PullReader

        if queue_id not in self._readers:
            self._readers[queue_id] = PullReader(self.queue_settings, queue_id)
        return self._readers[queue_id]

    def check_queue(self) -> str:
        """The Worker's health (its version and email sender), or the queue through the REST
        API; raises ProviderError naming what to fix."""
        if self.queue_settings.via_worker:
            health = self.queue.health()
            if health.get("status") != "ok":
                why = "; ".join(health.get("problems") or ["no reason given"])
                raise ProviderError(f"the Worker {self.config.worker_url} is misconfigured: {why}")
            return (f"Worker {self.config.worker_url} version {health.get('version')}, "
                    f"email by {health.get('email_sender')}, reports by "
                    f"{health.get('report_mode')}")  # fmt: skip
        info = self.queue.queue_info()
        return f"queue {info.get('queue_name') or self.config.queue_id} reachable"

    def parts(self) -> list:
        parts = (self.submitter, self.queue, self.certificates, *self._readers.values())
        return [p for p in parts if p]
