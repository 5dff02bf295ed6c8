"""Deliver one job in this process (for `send csv --deliver` and `demo`), with progress."""

import logging
import sys
from contextlib import nullcontext

import click

from sidecar.db import store
from sidecar.jobs import queue_local_batches
from sidecar.runtime import Runtime
from sidecar.status import RECIPIENT_OPEN

log = logging.getLogger(__name__)


def deliver_job(rt: Runtime, job_id: str, *, show_progress: bool | None = None) -> dict[str, int]:
    """Queue and deliver the job's local batches until nothing is due; returns counts by status.

    Recipients waiting for a retry later stay queued in the ledger for the daemon.
    A progress bar is shown on a terminal; otherwise the delivery logs its lines.
    """
    job = store.get_job(job_id)
    queue_local_batches(rt.clock(), job.id)
    delivery = rt.delivery()
    counts = store.recipient_counts([job.id]).get(job.id, {})
    todo = sum(counts.get(s, 0) for s in RECIPIENT_OPEN)
    err = sys.stderr
    if show_progress is None:
        show_progress = err.isatty()
    bar = click.progressbar(length=todo, label="delivering", file=err) if show_progress else None
    with bar or nullcontext():
        while not rt.stop.is_set():
            done = delivery.run_once()
            if bar is not None:
                bar.update(done)
            if done == 0:
                break
    counts = store.recipient_counts([job.id]).get(job.id, {})
    log.info("job %s: %s", job.id, ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))
    return counts
