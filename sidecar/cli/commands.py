"""`run`, `check`, `db upgrade` and `demo`."""

import click

from sidecar.cli import Context, main, pass_ctx


@main.command()
@pass_ctx
def run(obj: Context) -> None:
    """The daemon: HTTP (callbacks, health) and the delivery loop, until SIGTERM."""
    import logging
    import os

    from sidecar.daemon import Daemon

    if not obj.verbose and "MOODLE_OFFLOAD_LOG_LEVEL" not in os.environ:
        logging.getLogger().setLevel(logging.INFO)

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
@pass_ctx
def db_upgrade(obj: Context) -> None:
    """Apply schema migrations (also done by `run` at start)."""
    from sidecar.db import migrations
    from sidecar.runtime import Runtime

    rt = Runtime(obj.config)
    applied = rt.upgrade()
    version = migrations.current_version(rt.db)
    if applied:
        click.echo(
            f"applied migrations {', '.join(map(str, applied))}; schema at version {version}"
        )
    else:
        click.echo(f"schema already at version {version}")


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
