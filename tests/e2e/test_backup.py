"""`db backup` and `db restore` as real processes: a backup taken while the daemon runs,
restored into a fresh path, shows the same `jobs show`; what a restore refuses."""

import re
import sqlite3
import time

from tests.e2e.conftest import cli, message_args, write_config, write_csv


def sent_job(tmp_path) -> tuple:
    config = write_config(tmp_path)
    learners = write_csv(tmp_path / "learners.csv", 25)
    out = cli(config, "send", "csv", str(learners), *message_args(tmp_path), "--yes",
              "--deliver").stdout  # fmt: skip
    job_id = re.search(r"\b([0-9a-f]{32}|[0-9a-f-]{36})\b", out).group(1)
    return config, job_id


def other_config(tmp_path, config, name: str):
    """The same config with the ledger at a fresh path."""
    path = tmp_path / f"{name}.toml"
    text = config.read_text().replace(f"{tmp_path}/offload.db", f"{tmp_path}/{name}/offload.db")
    path.write_text(text)
    return path


def test_backup_then_restore_into_a_fresh_path_shows_the_same_job(tmp_path, start_daemon):
    config, job_id = sent_job(tmp_path)
    before = cli(config, "jobs", "show", job_id).stdout
    assert "25 sent" in before  # one line a recipient
    daemon = start_daemon(config)  # the backup is online: the daemon keeps running

    done = cli(config, "db", "backup", str(tmp_path / "backup.db"))
    assert f"into {tmp_path}/backup.db: schema version" in done.stdout
    assert "1 jobs" in done.stdout
    assert daemon.poll() is None

    fresh = other_config(tmp_path, config, "restored")
    restored = cli(fresh, "db", "restore", str(tmp_path / "backup.db"))
    assert f"into {tmp_path}/restored/offload.db" in restored.stdout
    assert "kept as" not in restored.stdout  # nothing was there to keep
    assert cli(fresh, "jobs", "show", job_id).stdout == before


def test_restore_refuses_while_a_daemon_holds_the_database(tmp_path, start_daemon):
    config, job_id = sent_job(tmp_path)
    cli(config, "db", "backup", str(tmp_path / "backup.db"))
    start_daemon(config)
    db = tmp_path / "offload.db"
    size = db.stat().st_size
    refused = cli(config, "db", "restore", str(tmp_path / "backup.db"), check=False)
    assert refused.returncode == 1
    assert "a moodle-offload daemon is using this database: stop it first" in refused.stderr
    assert db.stat().st_size == size and not list(tmp_path.glob("offload.db.before-restore-*"))


def test_restore_over_a_ledger_keeps_the_old_file_aside(tmp_path):
    config, job_id = sent_job(tmp_path)
    before = cli(config, "jobs", "show", job_id).stdout
    cli(config, "db", "backup", str(tmp_path / "backup.db"))
    later = write_csv(tmp_path / "later.csv", 3, start=100)
    cli(config, "send", "csv", str(later), *message_args(tmp_path), "--yes", "--deliver")
    assert len(cli(config, "jobs", "list").stdout.strip().splitlines()) >= 3  # header + 2

    restored = cli(config, "db", "restore", str(tmp_path / "backup.db"))
    kept = re.search(r"kept as (\S+)", restored.stdout).group(1)
    assert kept.startswith(f"{tmp_path}/offload.db.before-restore-")
    with sqlite3.connect(kept) as old:
        assert old.execute("SELECT COUNT(*) FROM job").fetchone()[0] == 2
    assert cli(config, "jobs", "show", job_id).stdout == before
    with sqlite3.connect(tmp_path / "offload.db") as new:
        assert new.execute("SELECT COUNT(*) FROM job").fetchone()[0] == 1


def test_restore_refuses_a_newer_schema_and_a_file_that_is_no_backup(tmp_path):
    config, _ = sent_job(tmp_path)
    backup = tmp_path / "backup.db"
    cli(config, "db", "backup", str(backup))
    with sqlite3.connect(backup) as conn:
        conn.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (999, 'future', ?)",
            (time.strftime("%Y-%m-%d %H:%M:%S"),),
        )
    fresh = other_config(tmp_path, config, "fresh")
    newer = cli(fresh, "db", "restore", str(backup), check=False)
    assert newer.returncode == 1
    assert "schema version 999 is newer than this release's" in newer.stderr
    assert not (tmp_path / "fresh" / "offload.db").exists()

    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    junk = cli(fresh, "db", "restore", str(tmp_path / "notes.txt"), check=False)
    assert junk.returncode == 1 and "not an SQLite database" in junk.stderr


def test_backup_refuses_an_existing_file(tmp_path):
    config, _ = sent_job(tmp_path)
    (tmp_path / "backup.db").write_text("keep me")
    refused = cli(config, "db", "backup", str(tmp_path / "backup.db"), check=False)
    assert refused.returncode == 1 and "already exists" in refused.stderr
    assert (tmp_path / "backup.db").read_text() == "keep me"


def test_postgresql_and_mariadb_get_the_dump_line_to_run(tmp_path):
    pg = write_config(tmp_path, db_url="postgresql://offload@db.internal:5433/offload")
    out = cli(pg, "db", "backup", "/backups/offload.dump", check=False)
    assert out.returncode == 1
    assert (
        "pg_dump --host db.internal --port 5433 --username offload --format=custom "
        "--file /backups/offload.dump offload" in out.stderr
    )
    out = cli(pg, "db", "restore", "/backups/offload.dump", check=False)
    assert (
        "pg_restore --host db.internal --port 5433 --username offload --clean --if-exists "
        "--dbname offload /backups/offload.dump" in out.stderr
    )
    maria = write_config(tmp_path, db_url="mysql://offload:s3cret@127.0.0.1:3306/offload")
    out = cli(maria, "db", "backup", "offload.sql", check=False)
    assert out.returncode == 1
    assert (
        "mariadb-dump --host 127.0.0.1 --port 3306 --user offload -p --single-transaction "
        "--routines offload > offload.sql" in out.stderr
    )
    assert "s3cret" not in out.stderr
