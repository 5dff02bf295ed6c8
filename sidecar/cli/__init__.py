"""`moodle-offload`: the root group, the shared -c/--config option and a lazy context.

A command parses, calls one sidecar function and prints. Errors are one line, exit 1.
"""

import logging
import os
import sys
from functools import cached_property
from pathlib import Path

import click

from moodle_ws.errors import MoodleError
from sidecar.errors import SidecarError

log = logging.getLogger(__name__)


class Context:
    """Built on first use so `--help` and argument errors touch nothing."""

    def __init__(self, config_path: str | None, verbose: bool):
        self.config_path = config_path
        self.verbose = verbose

    @cached_property
    def path(self) -> Path:
        from sidecar.config import default_path

        return Path(self.config_path) if self.config_path else default_path(os.environ)

    @cached_property
    def config(self):
        from sidecar import logsetup
        from sidecar.config import load

        config = load(self.path)
        logsetup.add_secrets(config.secret_values())
        return config

    @cached_property
    def runtime(self):
        from sidecar.runtime import Runtime

        rt = Runtime(self.config)
        rt.ready_db()
        return rt


class Cli(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SidecarError as exc:
            raise click.ClickException(str(exc)) from None
        except MoodleError as exc:  # the message says what to fix; no traceback
            raise click.ClickException(f"Moodle: {exc}") from None


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    metavar="PATH",
    help="Config file (default: $MOODLE_OFFLOAD_CONFIG, /etc/moodle-offload/config.toml, "
    "./config.toml).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
@click.version_option(package_name="moodle-offload")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """moodle-offload: bulk email and PDF certificates, taken off Moodle."""
    from sidecar import logsetup

    # Commands print what matters; the daemon (`run`) logs at INFO.
    level = "DEBUG" if verbose else os.environ.get("MOODLE_OFFLOAD_LOG_LEVEL", "WARNING")
    logsetup.setup(level)
    ctx.obj = Context(config_path, verbose)


pass_ctx = click.make_pass_decorator(Context)


def is_interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


from sidecar.cli import (  # noqa: E402,F401  (registers them)
    access,
    certificates,
    commands,
    jobs,
    keys,
    license,
    privacy,
    reengagement,
    schedules,
    send,
    status,
    suppression,
    welcome,
)
