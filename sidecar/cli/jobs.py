"""`jobs list | show | retry | cancel | export`."""

import sys

import click

from sidecar.cli import Context, main, pass_ctx


@main.group()
def jobs() -> None:
    """The job ledger: progress, recipients, retries."""


def _progress(counts: dict[str, int], total: int) -> str:
    done = sum(n for s, n in counts.items() if s not in ("pending", "queued", "retry_pending"))
    return f"{done}/{total}"


@jobs.command("list")
@click.option("--limit", default=50, show_default=True)
@click.option("--status", help="Only jobs in this status.")
@pass_ctx
def jobs_list(obj: Context, limit: int, status: str | None) -> None:
    """Recent jobs with their progress."""
    from sidecar.db import store

    _ = obj.runtime  # opens the database, upgraded to the latest schema
    rows = store.list_jobs(limit, status)
    counts = store.recipient_counts([j.id for j in rows])
    click.echo(
        f"{'JOB':36}  {'TYPE':12} {'STATUS':16} {'ROUTE':6} "
        f"{'DONE':>13} {'SENT':>7} {'FAILED':>7}  CREATED"
    )
    for j in rows:
        c = counts.get(j.id, {})
        failed = c.get("failed", 0) + c.get("permanently_failed", 0)
        click.echo(
            f"{j.id:36}  {j.type:12} {j.status:16} {j.route:6} {_progress(c, j.total):>13} "
            f"{c.get('sent', 0):>7} {failed:>7}  {j.created_at:%Y-%m-%d %H:%M}"
        )


@jobs.command("show")
@click.argument("job_id")
@click.option("--status", "statuses", multiple=True, help="Only recipients in this status.")
@click.option("--limit", default=50, show_default=True, help="Recipients to list.")
@pass_ctx
def jobs_show(obj: Context, job_id: str, statuses: tuple[str, ...], limit: int) -> None:
    """One job: counts by status, route and reason, recipients with their last error."""
    from sidecar import erasures
    from sidecar import jobs as ledger
    from sidecar.db import store
    from sidecar.schedulelist import run_counts, run_of_job

    _ = obj.runtime  # opens the database, upgraded to the latest schema
    job = store.get_job(job_id)
    counts = store.recipient_counts([job.id]).get(job.id, {})
    click.echo(f"job {job.id}  {job.type}  {job.status}")
    click.echo(f"  source {job.source}  template {job.template_id}  actions {job.actions}")
    click.echo(f"  route {job.route}: {job.route_reason}")
    run = run_of_job(job)
    if run is not None:
        click.echo(f"  schedule run {run.id} (due {run.due_at:%Y-%m-%d %H:%M} UTC): "
                   f"{run_counts(run)}")  # fmt: skip
    click.echo(
        f"  created {job.created_at:%Y-%m-%d %H:%M:%S} UTC  progress {_progress(counts, job.total)}"
    )
    if job.error:
        click.echo(f"  error: {job.error}")
    erased = erasures.read(job.erased_at, job.erased)
    if erased is not None:
        click.echo(f"  personal data erased {erased['at']:%Y-%m-%d %H:%M} UTC: "
                   f"{erasures.sentence(erased)}")  # fmt: skip
    click.echo("  " + "  ".join(f"{s} {n}" for s, n in sorted(counts.items())))
    for r in ledger.recipients_of(job.id, statuses or None, limit):
        who = r.userid if r.userid > 0 else "(purged)"  # sidecar.privacy.purge_user
        line = f"  {who:>10} {r.status:18} attempts {r.attempts}"
        if r.last_error:
            line += f"  {r.last_error}"
        click.echo(line)


@jobs.command("retry")
@click.argument("job_id")
@pass_ctx
def jobs_retry(obj: Context, job_id: str) -> None:
    """Re-queue the job's failed recipients (the daemon delivers them)."""
    from sidecar import jobs as ledger

    n = ledger.retry_job(job_id, obj.runtime.clock())
    click.echo(f"{n} recipients re-queued")


@jobs.command("cancel")
@click.argument("job_id")
@pass_ctx
def jobs_cancel(obj: Context, job_id: str) -> None:
    """Cancel what the job has not delivered yet."""
    from sidecar import jobs as ledger

    n = ledger.cancel_job(job_id, obj.runtime.clock())
    click.echo(f"job cancelled; {n} recipients will not be sent")


@jobs.command("export")
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="File (default: stdout).")
@pass_ctx
def jobs_export(obj: Context, job_id: str, output: str | None) -> None:
    """Every recipient of a job as CSV."""
    from sidecar import jobs as ledger

    _ = obj.runtime  # opens the database, upgraded to the latest schema
    if output:
        with open(output, "w", newline="", encoding="utf-8") as fh:
            n = ledger.export_csv(job_id, fh)
        click.echo(f"{n} recipients written to {output}", err=True)
    else:
        ledger.export_csv(job_id, sys.stdout)
