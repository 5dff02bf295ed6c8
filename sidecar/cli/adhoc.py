"""Preview, confirm, commit and deliver a tool that is an ad-hoc schedule (sidecar.tools)."""

import click

from sidecar.cli import Context
from sidecar.cli.send import confirm_or_stop


def preview_and_send(
    obj: Context, tool, *, yes: bool, deliver: bool, dry_run: bool = False
) -> None:
    """Print the schedule's dry run for the tool; unless `dry_run`, ask (or --yes), commit,
    then deliver here or leave it to the daemon."""
    from sidecar import tools
    from sidecar.runs import dry_run_lines

    rt = obj.runtime
    pv = tools.preview(rt, tool)
    click.echo(f"{tool.title}: preview, nothing sent yet")
    for line in pv.refused:
        click.echo(f"  {line}: not sent")
    for line in dry_run_lines(pv.outcome):
        click.echo(line)
    if pv.already_sent:
        click.echo(f"  {pv.already_sent} already sent under key {tool.key}: they are skipped")
    if dry_run:
        click.echo(f"dry run: nothing sent; {pv.to_send} to send under key {tool.key}")
        return
    if pv.to_send <= 0:
        click.echo(f"nothing to send (key {tool.key})")
        return
    confirm_or_stop(pv.to_send, f"Send to {pv.to_send} recipients?", yes=yes, dry_run=False)
    outcome = tools.commit(rt, pv)
    for job_id in outcome.jobs:
        if deliver:
            from sidecar.localrun import deliver_job

            counts = deliver_job(rt, job_id)
            click.echo(f"job {job_id}: " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))
        else:
            click.echo(f"job {job_id}: queued for the daemon (key {tool.key})")
