"""`admin add | remove | list` and `token create | list | revoke`: who may use the
dashboard and the JSON API."""

from pathlib import Path

import click

from sidecar.cli import Context, main, pass_ctx


@main.group()
def admin() -> None:
    """Local dashboard accounts (for sites where Moodle's login/token.php is off)."""


def _read_password(path: Path | None) -> str:
    if path is None:
        return click.prompt("Password", hide_input=True, confirmation_prompt="Repeat it")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise click.ClickException(f"{path}: not UTF-8 text") from None
    lines = text.splitlines()
    return lines[0] if lines else ""


@admin.command("add")
@click.argument("name")
@click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the password from the first line of this file (for scripts).")  # fmt: skip
@pass_ctx
def admin_add(obj: Context, name: str, password_file: Path | None) -> None:
    """Create a local account NAME that signs in to the dashboard as an administrator."""
    from sidecar import access

    try:
        access.check_name(name)
        password = _read_password(password_file)
        rt = obj.runtime
        access.add_account(name, password, rt.clock())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"account {name}: added; it signs in at {rt.config.server.public_url}/login")


@admin.command("remove")
@click.argument("name")
@pass_ctx
def admin_remove(obj: Context, name: str) -> None:
    """Delete local account NAME and end its sessions."""
    from sidecar import access

    rt = obj.runtime
    access.remove_account(name, rt.clock())
    click.echo(f"account {name}: removed; its sessions are ended")


@admin.command("list")
@pass_ctx
def admin_list(obj: Context) -> None:
    """The local accounts (Moodle site administrators sign in without one)."""
    from sidecar import access

    _ = obj.runtime  # opens the database, upgraded to the latest schema
    rows = access.list_accounts()
    click.echo(f"local accounts: {len(rows)}")
    for a in rows:
        click.echo(f"  {a.name:32} added {a.created_at:%Y-%m-%d %H:%M}")


@main.group()
def token() -> None:
    """API tokens for programs (sent as `Authorization: Bearer <token>`)."""


@token.command("create")
@click.argument("name")
@click.option("--company", type=click.IntRange(min=1), metavar="ID",
              help="Limit the token to this IOMAD company (default: every company).")  # fmt: skip
@click.option("--read-only", is_flag=True, help="The token may read but change nothing.")
@pass_ctx
def token_create(obj: Context, name: str, company: int | None, read_only: bool) -> None:
    """Create API token NAME and print it once (only its hash is stored)."""
    from sidecar import access

    rt = obj.runtime
    try:
        value = access.create_token(name, rt.clock(), company=company, read_only=read_only)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    scope = f"company {company}" if company is not None else "every company"
    mode = "read-only" if read_only else "read and write"
    click.echo(f"token {name} ({scope}, {mode}); copy it now, it is not shown again:", err=True)
    click.echo(value)


@token.command("list")
@pass_ctx
def token_list(obj: Context) -> None:
    """The API tokens: name, scope, mode, last use (never the token)."""
    from sidecar import access

    _ = obj.runtime
    rows = access.list_tokens()
    click.echo(f"API tokens: {len(rows)}")
    for t in rows:
        scope = f"company {t.company_id}" if t.company_id is not None else "every company"
        mode = "read-only" if t.read_only else "read-write"
        used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
        click.echo(f"  {t.name:24} {scope:16} {mode:10} last used {used}")


@token.command("revoke")
@click.argument("name")
@pass_ctx
def token_revoke(obj: Context, name: str) -> None:
    """Delete API token NAME: requests bearing it are refused from now on."""
    from sidecar import access

    rt = obj.runtime
    access.revoke_token(name, rt.clock())
    click.echo(f"token {name}: revoked")
