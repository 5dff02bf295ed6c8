"""`schedules list | sync | run ID [--dry-run]`."""

import click

from sidecar.cli import Context, main, pass_ctx


@main.group()
def schedules() -> None:
    """Schedules synced from Moodle or the schedules file."""


@schedules.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also deleted schedules.")
@pass_ctx
def schedules_list(obj: Context, show_all: bool) -> None:
    """Synced schedules, their next due time and last run."""
    from sidecar.schedulelist import schedule_rows

    rt = obj.runtime
    click.echo(f"{'ID':>6} {'SOURCE':6} {'NAME':28} {'COURSE':>6} {'FREQUENCY':10} "
               f"{'ACTION':11} {'NEXT DUE (UTC)':16}  LAST RUN")  # fmt: skip
    for r in schedule_rows(rt, include_deleted=show_all):
        click.echo(
            f"{r.id:>6} {r.source:6} {r.name[:28]:28} {r.courseid:>6} {r.frequency:10} "
            f"{r.action:11} {r.next_due:16}  {r.last_run}"
        )


@schedules.command("sync")
@pass_ctx
def schedules_sync(obj: Context) -> None:
    """Read the schedules now; exit 1 when a source could not be read."""
    from sidecar import sync
    from sidecar.moodle import open_client

    rt = obj.runtime
    results = sync.sync_all(obj.config, lambda: open_client(obj.config), rt.clock())
    for result in results:
        click.echo(result.summary)
        for msg in result.skipped:
            click.echo(f"  skipped: {msg}")
    if any(r.error for r in results):
        raise SystemExit(1)


@schedules.command("run")
@click.argument("schedule_id", type=int)
@click.option("--source", type=click.Choice(["moodle", "file"]), help="When both have the id.")
@click.option(
    "--dry-run", is_flag=True, help="Show recipients, suppression and route; send nothing."
)
@click.option(
    "--deliver", is_flag=True, help="Deliver here and now instead of leaving it to `run`."
)
@click.option("--reissue", is_flag=True, help="Certificates also for learners who hold one.")
@pass_ctx
def schedules_run(obj: Context, schedule_id: int, source: str | None, dry_run: bool,
                  deliver: bool, reissue: bool) -> None:  # fmt: skip
    """Fire one schedule now (a run of its own, recorded like a scheduled one)."""
    from sidecar.runs import Runner, dry_run_lines
    from sidecar.schedulelist import find_schedule

    rt = obj.runtime
    record = find_schedule(schedule_id, source)
    runner = Runner(rt)
    if dry_run:
        outcome = runner.prepare(_schedule_of(record), rt.clock(), reissue=reissue)
        click.echo(f"schedule {record.source}/{record.remote_id} {record.name!r}: dry run, "
                   "nothing sent")  # fmt: skip
        for line in dry_run_lines(outcome):
            click.echo(line)
        return
    outcome = runner.fire_now(record, reissue=reissue)
    click.echo(outcome.summary)
    if outcome.status != "done":
        raise SystemExit(1)
    for job_id in outcome.jobs:
        if deliver:
            from sidecar.localrun import deliver_job

            counts = deliver_job(rt, job_id)
            click.echo(f"job {job_id}: " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))
        else:
            click.echo(f"job {job_id}: queued for the daemon")


def _schedule_of(record):
    from schedules.model import Schedule

    return Schedule.from_remote(record.data, record.source)
