"""`keys new` and `keys rotate`: the encryption key of secrets at rest (sidecar.keyrotation)."""

import click

from sidecar.cli import Context, main, pass_ctx


@main.group()
def keys() -> None:
    """The encryption key of secrets at rest (security.encryption_key)."""


@keys.command("new")
def keys_new() -> None:
    """Print a new Fernet key for security.encryption_key (nothing is changed)."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode("ascii"))


@keys.command("rotate")
@click.option("--dry-run", is_flag=True, help="Count what would be re-encrypted; change nothing.")
@pass_ctx
def keys_rotate(obj: Context, dry_run: bool) -> None:
    """Re-encrypt with security.encryption_key what a key in
    security.previous_encryption_keys encrypted; safe while the daemon runs."""
    from sidecar import keyrotation

    rt = obj.runtime
    try:
        done = keyrotation.rotate(obj.config, rt.clock, dry_run=dry_run)
    finally:
        rt.close()
    for line in done.lines():
        click.echo(line)
    if done.unreadable or done.raced:
        raise SystemExit(1)
