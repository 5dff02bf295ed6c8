"""Upgrades as real processes on SQLite, PostgreSQL and MariaDB: `db upgrade --dry-run` on
an earlier release's ledger lists what it would apply and changes nothing; a schema newer
than this release stops `run` and `db upgrade` with one line, changing nothing."""

import subprocess
import sys

from sidecar.db import migrations
from sidecar.db.connect import open_database
from sidecar.db.models import SchemaVersion
from tests.e2e.conftest import cli, cli_env, write_config
from tests.sidecar import schema_history as old


def snapshot(url: str) -> tuple:
    """The schema and the recorded steps of the ledger at `url`."""
    db = open_database(url)
    try:
        steps = [(s.version, s.name, s.applied_at) for s in SchemaVersion.select()]
        return old.schema(db), sorted(steps)
    finally:
        db.close()


def test_dry_run_on_an_earlier_releases_ledger_lists_the_steps_then_upgrade_applies_them(
    tmp_path, db_url
):
    db = open_database(db_url)
    old.create(db, 5)
    old.fill(db)
    db.close()
    before = snapshot(db_url)
    config = write_config(tmp_path, db_url=db_url)

    dry = cli(config, "db", "upgrade", "--dry-run").stdout
    assert dry.splitlines() == ["schema at version 5; `db upgrade` would apply:"] + [
        f"  {v}: {name}" for v, name, _ in migrations.STEPS if v > 5
    ]
    assert snapshot(db_url) == before  # nothing changed

    done = cli(config, "db", "upgrade").stdout
    later = ", ".join(str(v) for v in range(6, migrations.LATEST + 1))
    assert done == f"applied migrations {later}; schema at version {migrations.LATEST}\n"
    shown = cli(config, "jobs", "show", old.JOB_CSV).stdout
    assert "failed 1  permanently_failed 1  sent 2  suppressed 1" in shown
    assert " 3 permanently_failed attempts 1  550 5.1.1 mailbox unavailable\n" in shown


def test_a_schema_newer_than_this_release_stops_run_and_upgrade_with_one_line(tmp_path, db_url):
    newer = migrations.LATEST + 1
    db = open_database(db_url)
    SchemaVersion.create(version=newer, name="a later release's step", applied_at=old.T0)
    db.close()
    before = snapshot(db_url)
    config = write_config(tmp_path, db_url=db_url)
    message = (
        f"Error: the database's schema is at version {newer}, newer than this release of "
        f"moodle-offload knows ({migrations.LATEST}): a newer release upgraded it; install "
        "that release (upgrade moodle-offload) or restore the backup taken before; "
        "nothing changed\n"
    )
    for args in (["db", "upgrade"], ["db", "upgrade", "--dry-run"], ["jobs", "list"]):
        proc = cli(config, *args, check=False)
        assert (proc.returncode, proc.stderr) == (1, message), args

    # the daemon: it exits at start (a daemon that started would never return here)
    daemon = subprocess.run(
        [sys.executable, "-m", "sidecar", "run"],
        env=cli_env(config),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert daemon.returncode == 1
    assert daemon.stderr.splitlines()[-1] == message.rstrip("\n")
    assert "Traceback" not in daemon.stderr
    assert snapshot(db_url) == before
