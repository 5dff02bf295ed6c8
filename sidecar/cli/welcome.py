"""`send welcome` and `users import FILE`: preview, confirm, commit, deliver."""

import sys
from contextlib import nullcontext
from pathlib import Path

import click

from sidecar.cli import Context, main, pass_ctx
from sidecar.cli.send import DRY_RUN, confirm_or_stop, deliver_or_leave, send

MAX_IDS_SHOWN = 20


def _ids(value: str | None) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        ids = tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give user ids separated by commas") from None
    if any(i < 1 for i in ids):
        raise click.BadParameter(f"{value!r}: user ids are positive")
    return ids


@send.command("welcome")
@click.option("--since", help="Users created since: a duration (24h, 2d) or a date (UTC).")
@click.option("--company", "companyid", type=int, help="Only the users of this IOMAD company.")
@click.option("--users", "userids", help="These user ids (comma-separated) instead of --since.")
@click.option(
    "--csv",
    "csv_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A CSV with a userid column instead of --since.",
)
@click.option(
    "--deliver", is_flag=True, help="Deliver here and now instead of leaving it to `run`."
)
@DRY_RUN
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def send_welcome(
    obj: Context,
    since: str | None,
    companyid: int | None,
    userids: str | None,
    csv_file: Path | None,
    deliver: bool,
    dry_run: bool,
    yes: bool,
) -> None:
    """Welcome new users, each with a temporary password they must change (SSO users
    without one). Each user is welcomed once, however often this runs."""
    from sidecar import welcome
    from sidecar.moodle import open_client

    ids = _ids(userids)
    if sum(bool(x) for x in (since, ids, csv_file)) != 1:
        raise click.UsageError("give one of --since, --users or --csv")
    rt = obj.runtime
    now = rt.clock()
    source = welcome.Source(
        since=welcome.parse_since(since, now) if since else None,
        since_text=since or "",
        companyid=companyid,
        userids=ids,
        csv=csv_file,
    )
    client = open_client(rt.config)
    try:
        pv = welcome.preview(rt.config, client, rt.renderer, source, now)
    finally:
        client.close()
    confirm_and_send(rt, pv, deliver=deliver, yes=yes, dry_run=dry_run)


def confirm_and_send(rt, pv, *, deliver: bool, yes: bool, dry_run: bool = False) -> None:
    """Print the preview, ask (unless --yes), commit the job, deliver it if asked."""
    from sidecar import welcome

    print_preview(pv)
    if not pv.recipients:
        click.echo("nobody to welcome: nothing sent")
        return
    question = f"Welcome {len(pv.recipients)} users?"
    if not confirm_or_stop(len(pv.recipients), question, yes=yes, dry_run=dry_run):
        return
    from sidecar.temppasswords import Sealer

    Sealer.from_config(rt.config)  # no job that could never be delivered
    created = welcome.commit(
        pv,
        batch_size=rt.config.offload.job_batch_size,
        sender=rt.config.providers.local.from_,
        now=rt.clock(),
    )
    click.echo(
        f"job {created.job_id}: {created.pending} to welcome in {created.batches} batches"
        + (f", {created.skipped_duplicate} already welcomed" if created.skipped_duplicate else "")
        + (f", {created.suppressed} suppressed (see `jobs show`)" if created.suppressed else "")
    )
    deliver_or_leave(rt, created.job_id, deliver)


def print_preview(pv) -> None:
    click.echo(
        f"welcome ({pv.source.label()}): {len(pv.recipients)} to welcome, "
        f"{pv.with_password} with a temporary password, "
        f"{pv.without_password} without (single sign-on)"
    )
    for why, ids in sorted(pv.excluded.items()):
        shown = ", ".join(str(i) for i in ids[:MAX_IDS_SHOWN])
        more = f" and {len(ids) - MAX_IDS_SHOWN} more" if len(ids) > MAX_IDS_SHOWN else ""
        click.echo(f"  not welcomed: {why} ({len(ids)}): {shown}{more}")
    for note in pv.notes:
        click.echo(f"  {note}")
    click.echo(f"  route: {pv.route_reason}")
    click.echo(f"  Moodle: {pv.requests} requests")
    if pv.sample is not None:
        click.echo("--- sample (the password is made when the email is sent) ---")
        click.echo(f"Subject: {pv.sample.subject}")
        click.echo(pv.sample.text.strip())
        click.echo("--------------------------")


@main.group()
def users() -> None:
    """Moodle accounts: create them and welcome them."""


@users.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--company", "companyid", type=int, help="Put the users in this IOMAD company.")
@click.option(
    "--deliver", is_flag=True, help="Deliver the welcomes here and now instead of by `run`."
)
@click.option(
    "--dry-run", is_flag=True,
    help="Check the file against Moodle and show the plan; create and send nothing.",
)  # fmt: skip
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def users_import(
    obj: Context, file: Path, companyid: int | None, deliver: bool, dry_run: bool, yes: bool
) -> None:
    """Create the accounts of a CSV (username,email,firstname,lastname[,auth]) in Moodle
    and welcome them with temporary passwords."""
    from sidecar import userimport
    from sidecar.moodle import open_client
    from sidecar.temppasswords import Sealer

    rt = obj.runtime
    if rt.config.moodle is None:
        raise click.ClickException("users import needs [moodle] (url and token) in the config")
    Sealer.from_config(rt.config)
    rows = userimport.read_file(file)
    client = open_client(rt.config)
    try:
        plan = userimport.plan(client, rows, companyid)
        userimport.print_plan(plan, click.echo)
        if dry_run:
            click.echo(f"dry run: no account created, nothing sent; {len(plan.to_create)} "
                       f"to create, {len(plan.existing)} already in Moodle")  # fmt: skip
            return
        if not plan.to_create:
            click.echo("nobody to create")
        else:
            question = f"Create {len(plan.to_create)} accounts in Moodle and welcome them?"
            confirm_or_stop(len(plan.to_create), question, yes=yes, dry_run=False)
            update, bar = _progress(len(plan.to_create))
            policy = rt.config.moodle.password_policy
            with bar:
                created = userimport.create(client, plan, policy, progress=update)
            click.echo(f"created {len(created)} accounts in Moodle ({plan.requests} requests)")
        pv = userimport.welcome_preview(rt, client, plan, file)
    finally:
        client.close()
    confirm_and_send(rt, pv, deliver=deliver, yes=True)


def _progress(total: int):
    """A progress bar of the accounts created (on a terminal only): `(update, bar)`."""
    if not sys.stderr.isatty():
        return None, nullcontext()
    bar = click.progressbar(length=total, label="creating accounts", file=sys.stderr)
    seen = [0]

    def update(n: int) -> None:
        bar.update(n - seen[0])
        seen[0] = n

    return update, bar
