"""A cloud batch's emails rendered and packed into its queue messages, in this process or
in worker processes.

Submitting a large job to a cloud queue is CPU work in the sidecar: every email is
rendered (sandboxed Jinja2: the templates are edited by administrators) and packed into
the `offload.batch.v1` messages (JSON, gzip). The ledger reads, the requests and the
commits are the other half. `CloudSubmitter` hands the first half of each large batch to
`ComposePool`, worker processes that render the next batches while this process posts
and commits the previous ones, so a machine's second core does half the work.

What crosses to a worker is plain data (`Work`: the job's fields the templates read, the
recipients, the certificate codes reserved, the message header) and what comes back is
the packed bodies (a few KB a batch), never the rendered emails. A worker makes its
`Composer` from `Spec` (the templates folder, the public URL, the unsubscribe link keys)
with the batch's own clock reading, so a batch composes the same wherever it runs; a
SIGHUP that changes the templates folder makes a new pool.
"""

import json
import os
import time
from collections import namedtuple
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from providers.message import MessageTooLarge, build_batch_parts
from sidecar import certificates
from sidecar.compose import Composer
from sidecar.errors import TemplateError
from sidecar.render import Renderer
from sidecar.unsubscribe import Links

#: a recipient as composing reads it (a module-level namedtuple: it pickles); `vars` is the
#: JSON text the ledger holds (or the decoded dict)
Row = namedtuple("Row", "userid email firstname lastname vars")

#: batches smaller than this are composed in this process: a worker would not pay off
POOL_MIN = 50


@dataclass(frozen=True)
class JobView:
    """The job's fields the composer reads, as plain data."""

    id: str
    type: str
    actions: dict
    template_id: str
    tenant_id: int | None
    template_data: dict | None
    certificate_template_id: str | None

    @classmethod
    def of(cls, job) -> "JobView":
        return cls(job.id, job.type, dict(job.actions or {}), job.template_id, job.tenant_id,
                   job.template_data, job.certificate_template_id)  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """How a worker process makes the composer: what `Composer` holds besides its clock."""

    template_dir: Path | None
    public_url: str
    links: Links | None

    @classmethod
    def of(cls, composer: Composer) -> "Spec":
        return cls(composer.renderer.template_dir, composer.public_url, composer.links)


@dataclass(frozen=True)
class Work:
    job: JobView
    rows: list[Row]
    issued: dict[int, certificates.Issued]  # userid -> the certificate reserved for them
    header: dict[str, Any]  # the message header; its email subject is set from the first email
    limit: int  # bytes a queue message may have
    now: datetime
    keep_pdfs: bool  # certificates are rendered to PDFs by the sidecar: return their HTML


@dataclass
class Composed:
    failures: list[tuple[int, str]] = field(default_factory=list)  # (userid, why)
    parts: list[tuple[bytes, tuple[int, ...]]] = field(default_factory=list)  # body, userids
    # the batch cannot be put in messages: (why, the userids it holds)
    too_large: tuple[str, tuple[int, ...]] | None = None
    # keep_pdfs only: the people are packed once their PDFs are stored
    people: list[dict] = field(default_factory=list)
    pdfs: list[tuple[str, str]] = field(default_factory=list)  # (object key, certificate HTML)
    attach: bool = False


def compose(composer: Composer, work: Work) -> Composed:
    """Render every recipient's email (and certificate HTML) and, unless PDFs are to be made
    first, pack them into the batch's messages."""
    job, out = work.job, Composed()
    for r in work.rows:
        if isinstance(r.vars, str):
            r = r._replace(vars=json.loads(r.vars))
        try:
            cert = work.issued.get(r.userid)
            html = composer.certificate_html(job, r, cert) if cert else None
            email = unsubscribe_url = None
            if job.actions.get("email"):
                composed = composer.email(job, r, cert)
                email, unsubscribe_url = composed.email, composed.unsubscribe_url
                out.attach = out.attach or (
                    cert is not None and email.certificate_delivery == "attach"
                )
        except TemplateError as exc:  # logged by the caller (a worker process has no log)
            out.failures.append((r.userid, str(exc)))
            continue
        person = {
            "userid": r.userid, "email": r.email, "firstname": r.firstname,
            "lastname": r.lastname, "subject": email.subject if email else "",
            "html": email.html if email else "", "text": email.text if email else "",
            "certificate_html": None if work.keep_pdfs else html, "vars": {},
        }  # fmt: skip
        if work.keep_pdfs and cert is not None:
            person["certificate_key"] = cert.key
            out.pdfs.append((cert.key, html))
        if unsubscribe_url:  # the worker adds List-Unsubscribe and List-Unsubscribe-Post
            person["unsubscribe_url"] = unsubscribe_url
        out.people.append(person)
    if not out.pdfs:
        pack(work, out)
    return out


def pack(work: Work, out: Composed) -> None:
    """Put `out.people` into the batch's messages (`out.parts`), or say why they cannot go."""
    people, out.people = out.people, []
    if not people:
        return
    header = {**work.header, "email": {**work.header["email"], "subject": people[0]["subject"],
                                       "attach_certificate": out.attach}}  # fmt: skip
    try:
        parts = build_batch_parts(header, people, max_bytes=work.limit)
    except MessageTooLarge as exc:
        out.too_large = (str(exc), tuple(p["userid"] for p in people))
        return
    out.parts = [(p.body, tuple(p.userids)) for p in parts]


# --- worker processes ------------------------------------------------------------------------

_RENDERER: Renderer | None = None
_SPEC: Spec | None = None


def _start(spec: Spec) -> None:
    global _RENDERER, _SPEC
    _RENDERER, _SPEC = Renderer(spec.template_dir), spec


def _compose_here(work: Work) -> Composed:
    now = work.now
    composer = Composer(_RENDERER, _SPEC.public_url, lambda: now, _SPEC.links)
    return compose(composer, work)


def _started(linger: float) -> bool:
    time.sleep(linger)  # so that each of the first tasks starts a worker of its own
    return _RENDERER is not None


def processes() -> int:
    """Worker processes worth starting here: none on one core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if (cores or 1) < 2 else 2


class ComposePool:
    """Worker processes that compose batches (`compose` with their own composer)."""

    def __init__(self, spec: Spec, workers: int):
        self.spec = spec
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            workers, mp_context=get_context("forkserver"), initializer=_start, initargs=(spec,)
        )

    def start(self) -> None:
        """Start every worker now (they start on first use otherwise): ~1 s of imports."""
        for f in [self._pool.submit(_started, 0.05) for _ in range(self.workers)]:
            f.result()

    def submit(self, work: Work) -> "Future[Composed]":
        return self._pool.submit(_compose_here, work)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
