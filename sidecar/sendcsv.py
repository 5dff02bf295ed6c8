"""`send csv`: read a file, preview it (counts, invalid rows by line, one rendered sample),
commit a job.

Nothing is committed while the preview shows invalid rows, unless the admin said
`--skip-invalid`; a re-submitted file is skipped user by user through the idempotency key.
"""

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sidecar import jobs
from sidecar.csvinput import CsvInput, CsvProblem, read_csv
from sidecar.db import store
from sidecar.errors import Aborted
from sidecar.render import RenderedEmail, Renderer, learner_vars

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CsvMessage:
    template_id: str = "custom"
    subject: str | None = None
    body: str | None = None
    certificate: bool = False
    key: str | None = None  # idempotency key; default derived from file and message


@dataclass(frozen=True)
class CsvPreview:
    path: Path
    data: CsvInput
    message: CsvMessage
    key: str
    sample: RenderedEmail | None
    already_sent: int
    held_back: dict[int, str] = field(default_factory=dict)  # userid -> why it is not sent

    @property
    def to_send(self) -> int:
        """The emails the job will send, as it stands now."""
        return len(self.data.rows) - self.already_sent - len(self.held_back)

    @property
    def problems(self) -> tuple[CsvProblem, ...]:
        return self.data.problems

    def recipients(self) -> list[jobs.RecipientIn]:
        return [
            jobs.RecipientIn(
                userid=row.userid,
                email=row.email,
                firstname=row.firstname,
                lastname=row.lastname,
                vars=self._vars(row.extra),
            )
            for row in self.data.rows
        ]

    def _vars(self, extra: dict) -> dict:
        out = dict(extra)
        if self.message.subject is not None or self.message.body is not None:
            out["message"] = {
                "subject": self.message.subject or "",
                "body": self.message.body or "",
            }
        return out


def idempotency_key(path: Path, message: CsvMessage) -> str:
    if message.key:
        return f"csv:{message.key}"
    h = hashlib.sha256(path.read_bytes())
    for part in (message.template_id, message.subject or "", message.body or ""):
        h.update(b"\0" + part.encode())
    h.update(b"\0certificate" if message.certificate else b"\0email")
    return f"csv:{h.hexdigest()[:32]}"


def preview(path: Path, message: CsvMessage, renderer: Renderer) -> CsvPreview:
    """Read and check the file and render one sample. Raises Aborted / TemplateError."""
    data = read_csv(path)
    if not data.rows and not data.problems:
        raise Aborted(f"{path}: no data rows")
    key = idempotency_key(path, message)
    pv = CsvPreview(path, data, message, key, None, 0)
    sample = None
    if data.rows:
        row = data.rows[0]
        ctx = {**learner_vars(row.userid, row.email, row.firstname, row.lastname)}
        ctx.update(pv._vars(row.extra))
        ctx.setdefault("today", datetime.now().date().isoformat())
        if message.certificate:
            ctx.setdefault("certificate_url", "https://example.invalid/certificates/SAMPLE")
        sample = renderer.preview(message.template_id, ctx)
    taken = store.taken_send_keys(key, [r.userid for r in data.rows])
    fresh = [r for r in pv.recipients() if r.userid not in taken]
    held = jobs.held_back("send_csv", message.certificate, fresh)
    return CsvPreview(path, data, message, key, sample, len(taken), held)


def commit(
    pv: CsvPreview, *, skip_invalid: bool, batch_size: int, sender: str, now: datetime
) -> jobs.Created:
    """Create the job. Raises Aborted when invalid rows exist and skip_invalid is not set."""
    if pv.problems and not skip_invalid:
        raise Aborted(
            f"{pv.path}: {len(pv.problems)} invalid rows (first: {pv.problems[0].message}); "
            "fix the file or pass --skip-invalid"
        )
    if not pv.data.rows:
        raise Aborted(f"{pv.path}: no valid row to send")
    spec = jobs.JobSpec(
        type="send_csv",
        template_id=pv.message.template_id,
        source=f"csv:{pv.path.name}",
        actions=jobs.Actions(email=True, certificate=pv.message.certificate),
        idempotency_key=pv.key,
        sender=sender,
    )
    created = jobs.create_job(spec, pv.recipients(), batch_size=batch_size, now=now)
    if pv.problems:
        with store.atomic():
            store.audit(
                "csv_rows_skipped", now, created.job_id,
                lines=[p.line for p in pv.problems][:1000], count=len(pv.problems),
            )  # fmt: skip
    return created
