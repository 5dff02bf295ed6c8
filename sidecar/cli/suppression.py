"""`suppression list | add | remove`: bounced addresses and learners' unsubscribes."""

import click

from sidecar.cli import Context, main, pass_ctx

#: sidecar.unsubscribe.KINDS, written out so that `--help` imports no database code
KINDS = ("reminders", "reengagement", "custom")
KIND = click.Choice([*KINDS, "all"])
USERID = click.IntRange(min=1)


@main.group()
def suppression() -> None:
    """Who later jobs leave out: bounced addresses and unsubscribed learners."""


@suppression.command("list")
@click.option("--userid", type=int, help="Only this learner's unsubscribes.")
@pass_ctx
def suppression_list(obj: Context, userid: int | None) -> None:
    """Addresses SES reported bounced or complained about, and unsubscribes by kind."""
    from sidecar import suppression as bounces
    from sidecar import unsubscribe

    _ = obj.runtime  # opens the database, upgraded to the latest schema
    if userid is None:
        rows = bounces.listing()
        click.echo(f"suppressed addresses: {len(rows)}")
        for a in rows:
            click.echo(f"  {a.email:40} {a.source:14} {a.created_at:%Y-%m-%d %H:%M}  {a.reason}")
    opt_outs = unsubscribe.listing(userid)
    click.echo(f"unsubscribed: {len(opt_outs)}")
    for o in opt_outs:
        click.echo(f"  user {o.userid:<10} {o.kind:13} {o.source:10} {o.created_at:%Y-%m-%d %H:%M}")


def _kinds(kinds: tuple[str, ...]) -> list[str]:
    return list(KINDS) if "all" in kinds else list(dict.fromkeys(kinds))


@suppression.command("add")
@click.argument("userid", type=USERID)
@click.option("--kind", "kinds", type=KIND, multiple=True, required=True,
              help="Kind of mail to stop (repeat, or `all`).")  # fmt: skip
@pass_ctx
def suppression_add(obj: Context, userid: int, kinds: tuple[str, ...]) -> None:
    """Unsubscribe a learner (Moodle userid) from a kind of mail, as their link would."""
    from sidecar import unsubscribe

    rt = obj.runtime
    for kind in _kinds(kinds):
        new = unsubscribe.opt_out(userid, kind, "cli", rt.clock())
        click.echo(f"user {userid}: unsubscribed from {kind}" + ("" if new else " (already)"))


@suppression.command("remove")
@click.argument("userid", type=USERID, required=False)
@click.option("--kind", "kinds", type=KIND, multiple=True,
              help="Kind of mail to resume (repeat; default: every kind).")  # fmt: skip
@click.option("--email", help="Take this address off the bounce list instead.")
@pass_ctx
def suppression_remove(
    obj: Context, userid: int | None, kinds: tuple[str, ...], email: str | None
) -> None:
    """Lift a learner's unsubscribe, or (--email) take a fixed mailbox off the bounce list."""
    from sidecar import suppression as bounces
    from sidecar import unsubscribe

    if (userid is None) == (email is None):
        raise click.UsageError("give a USERID, or --email ADDRESS")
    rt = obj.runtime
    if email is not None:
        if kinds:
            raise click.UsageError("--kind is for a USERID's unsubscribes, not --email")
        if not bounces.unsuppress(email, rt.clock()):
            raise click.ClickException(f"{email} is not on the suppression list")
        click.echo(f"{email}: taken off the suppression list; later jobs mail it again")
        return
    n = sum(unsubscribe.remove(userid, k, rt.clock()) for k in _kinds(kinds or ("all",)))
    if not n:
        raise click.ClickException(
            f"user {userid} has no unsubscribe to lift: see `moodle-offload suppression list`"
        )
    click.echo(f"user {userid}: {n} unsubscribe(s) lifted")
