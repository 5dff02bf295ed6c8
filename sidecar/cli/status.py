"""`status`: the dashboard overview on a terminal, from the same code the page uses."""

import click

from sidecar.cli import Context, main, pass_ctx

MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "off": "off "}


@main.command()
@pass_ctx
def status(obj: Context) -> None:
    """Jobs running with their progress, failures of the last 24 h, each moving part's state
    and the last schedule sync; exit 0 when nothing fails, 1 when a part fails."""
    from sidecar.health import FAIL, Health, overall
    from sidecar.ledgerview import EVERYTHING
    from sidecar.runtime import Runtime
    from sidecar.watchdog import last_sync_text
    from sidecar.web.pages.overview import failures, running_jobs

    rt = Runtime(obj.config)
    health = Health(obj.config, rt.db, clock=rt.clock)
    parts = health.parts(fresh=True)
    state = overall(parts)
    now = rt.clock()
    click.echo(f"moodle-offload: {state} ({now:%Y-%m-%d %H:%M} UTC)")
    try:
        with rt.db.connection_context():
            running = running_jobs(EVERYTHING, now)
            failed = failures(EVERYTHING, now)
            synced = last_sync_text(now)
    except Exception as exc:  # noqa: BLE001 - the database part below says why
        click.echo(f"\nthe ledger cannot be read: {type(exc).__name__}")
        running, failed, synced = None, None, None
    if running is not None:
        jobs = running["jobs"]
        click.echo(f"\nRunning jobs: {len(jobs)}{'+' if running['more'] else ''}")
        for j in jobs:
            click.echo(
                f"  {j['short']}  {j['type']:<14} {j['status']:<13} "
                f"{j['sent']:,} sent, {j['failed']:,} failed, {j['pending']:,} pending "
                f"of {j['total_n']:,} ({j['pct_done']}% done); rate {j['rate_text']}, "
                f"time left {j['left_text']}"
            )
        if running["more"]:
            click.echo("  ... more: `moodle-offload jobs list`")
    if failed is not None:
        n, in_jobs = failed["count"], failed["jobs"]
        click.echo(
            f"\nFailures in the last 24 h: {n:,} recipient{'' if n == 1 else 's'}"
            + (f" in {in_jobs} job{'' if in_jobs == 1 else 's'}" if n else "")
        )
        for e in failed["errors"]:
            click.echo(f"  {e['count']:>6,}  {e['error']}")
    click.echo("\nParts:")
    width = max(len(p.name) for p in parts)
    for p in parts:
        click.echo(f"  {MARK.get(p.state, p.state)}  {p.name:<{width}}  {p.summary}")
    if synced is not None:
        click.echo(f"\nSchedules: {synced}")
    if state == FAIL:
        raise SystemExit(1)
