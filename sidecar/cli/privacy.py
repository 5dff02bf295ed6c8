"""`purge-user USERID`: erase what the sidecar holds about one user (sidecar.privacy)."""

import click

from sidecar.cli import Context, is_interactive, main, pass_ctx


@main.command("purge-user")
@click.argument("userid", type=click.IntRange(min=1))
@click.option("--include-suppression", is_flag=True,
              help="Also delete the user's suppression-list and unsubscribe entries (by "
              "default the address stays suppressed, kept only as a hash).")  # fmt: skip
@click.option("--yes", is_flag=True, help="Do not ask to confirm.")
@pass_ctx
def purge_user(obj: Context, userid: int, include_suppression: bool, yes: bool) -> None:
    """Delete everything the sidecar holds about one Moodle user (GDPR erasure)."""
    from sidecar import privacy

    rt = obj.runtime
    if not yes:
        if not is_interactive():
            raise click.ClickException("not a terminal: pass --yes to confirm the purge")
        what = "and their suppression and unsubscribe entries " if include_suppression else ""
        click.confirm(f"Erase user {userid}'s addresses, names, certificates {what}"
                      "from the sidecar? This cannot be undone", abort=True)  # fmt: skip
    try:
        report = privacy.purge(obj.config, rt, userid, include_suppression=include_suppression,
                               by={"via": "cli"})  # fmt: skip
    finally:
        rt.close()
    for line in report.lines():
        click.echo(line)
    if report.problems:
        raise SystemExit(1)
