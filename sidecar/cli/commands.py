"""`run`, `check`, `db upgrade`, `db backup`, `db restore`, `db copy` and `demo`."""

import click

from sidecar.cli import Context, main, pass_ctx


@main.command()
@pass_ctx
def run(obj: Context) -> None:
    """The daemon: HTTP (callbacks, health) and the delivery loop, until SIGTERM."""
    import os

    from sidecar import logsetup
    from sidecar.daemon import Daemon

    # [logging]: its level unless -v or MOODLE_OFFLOAD_LOG_LEVEL say otherwise, its format
    logs = obj.config.logging
    explicit = obj.verbose or "MOODLE_OFFLOAD_LOG_LEVEL" in os.environ
    logsetup.configure(logs.format, None if explicit else logs.level)

    raise SystemExit(Daemon(obj.config, obj.path).serve())


@main.command()
@pass_ctx
def check(obj: Context) -> None:
    """Validate the configuration and reach what it names; exit 0 only when all hold."""
    from sidecar.checks import run_checks

    ok = True
    for result in run_checks(obj.config):
        mark = "ok  " if result.ok else ("skip" if result.ok is None else "FAIL")
        click.echo(f"{mark} {result.name}: {result.detail}")
        ok = ok and result.ok is not False
    if not ok:
        raise SystemExit(1)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--dry-run", is_flag=True, help="List the migrations it would apply; change nothing.")
@pass_ctx
def db_upgrade(obj: Context, dry_run: bool) -> None:
    """Apply schema migrations (also done by `run` at start)."""
    from sidecar.db import migrations
    from sidecar.runtime import Runtime

    rt = Runtime(obj.config)
    if dry_run:
        steps = migrations.pending(rt.db)
        version = migrations.current_version(rt.db)
        if not steps:
            click.echo(f"schema at version {version}: nothing to apply")
            return
        click.echo(f"schema at version {version}; `db upgrade` would apply:")
        for number, name in steps:
            click.echo(f"  {number}: {name}")
        return
    applied = rt.upgrade()
    version = migrations.current_version(rt.db)
    if applied:
        click.echo(
            f"applied migrations {', '.join(map(str, applied))}; schema at version {version}"
        )
    else:
        click.echo(f"schema already at version {version}")


def _sqlite_or_refuse(obj: Context, file: str, *, restore: bool = False):
    from sidecar.db import backup

    url = obj.config.database.url
    path = backup.sqlite_path(url)
    if path is None:
        raise click.ClickException(backup.refusal(url, file, restore=restore))
    return path


@db.command("backup")
@click.argument("file", type=click.Path(dir_okay=False))
@pass_ctx
def db_backup(obj: Context, file: str) -> None:
    """Copy the SQLite ledger into FILE while the daemon runs (SQLite's online backup)."""
    from pathlib import Path

    from sidecar.db import backup

    path = _sqlite_or_refuse(obj, file)
    try:
        done = backup.backup(path, Path(file))
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    size = done.target.stat().st_size
    click.echo(
        f"backed up {done.source} into {done.target}: schema version {done.version}, "
        f"{done.jobs} jobs, {size / 1e6:.1f} MB"
    )


@db.command("restore")
@click.argument("file", type=click.Path(dir_okay=False))
@pass_ctx
def db_restore(obj: Context, file: str) -> None:
    """Replace the SQLite ledger by the backup FILE (the daemon stopped); the old file is
    kept beside it."""
    from pathlib import Path

    from sidecar.db import backup, migrations

    path = _sqlite_or_refuse(obj, file, restore=True)
    try:
        done = backup.restore(Path(file), path)
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"restored {done.source} into {done.target}: schema version {done.version}, "
        f"{done.jobs} jobs"
    )
    if done.kept is not None:
        click.echo(f"the database it replaced is kept as {done.kept}")
    if done.version < migrations.LATEST:
        click.echo(
            f"schema {done.version} is older than this release's {migrations.LATEST}: "
            "`db upgrade` (or `run`) upgrades it"
        )


@db.command("copy")
@click.option("--to", "target", required=True, metavar="URL",
              help="The database to copy into (postgresql://, mysql:// or sqlite:///); "
              "env:NAME reads it from the environment.")  # fmt: skip
@pass_ctx
def db_copy(obj: Context, target: str) -> None:
    """Copy the whole ledger into another database (e.g. SQLite to PostgreSQL), with the
    daemon stopped."""
    import os

    from sidecar.db import transfer
    from sidecar.db.connect import redact

    if target.startswith("env:"):
        name, target = target[4:], os.environ.get(target[4:], "")
        if not target:
            raise click.ClickException(f"--to: environment variable {name} is not set")
    source = obj.config.database.url
    click.echo(f"copying {redact(source)} into {redact(target)}")

    def progress(table: str, rows: int) -> None:
        if rows % (transfer.BATCH * 20) == 0:  # every 100,000 rows of a long table
            click.echo(f"  {table}: {rows:,} rows so far")

    done = transfer.copy_ledger(source, target, progress=progress)
    width = max(len(c.table) for c in done.counts)
    click.echo(f"schema version {done.version}; rows by table (source, target):")
    for c in done.counts:
        click.echo(f"  {c.table:<{width}} {c.source:>12,} {c.target:>12,}")
    click.echo(f"copied {done.rows:,} rows in {done.seconds:.1f} s; every table's counts match")
    click.echo(
        f'now set [database] url = "{redact(target)}" in {obj.path} (with its password), '
        "then start the daemon"
    )


@main.command()
@click.option(
    "--once", is_flag=True, help="Run one delivery cycle, print where things are, exit 0."
)
@click.option("--dir", "workdir", type=click.Path(file_okay=False), help="Where to put demo files.")
@click.option("--learners", default=500, show_default=True, help="Learners in the Moodle sandbox.")
@click.option("--seed", default=1, show_default=True, help="Seed of the sandbox's generated data.")
@click.option("--port", default=0, help="Port for the demo's HTTP server (0: any free port).")
def demo(once: bool, workdir: str | None, learners: int, seed: int, port: int) -> None:
    """A self-contained demo: a Moodle sandbox, its learners pulled over REST, jobs delivered
    into a mail folder and a PDF folder."""
    from sidecar.demo import run_demo

    raise SystemExit(run_demo(once=once, workdir=workdir, learners=learners, port=port, seed=seed))
