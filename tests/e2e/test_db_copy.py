"""`db copy` as real processes: an SQLite ledger holding rows in every table, copied into
PostgreSQL, MariaDB or another SQLite file, shows the same jobs there and takes new ones;
what the copy refuses, and that it never prints the password."""

import re
import sqlite3
from datetime import datetime, timedelta

from cryptography.fernet import Fernet

from sidecar.db import models as m
from sidecar.db.connect import open_database
from sidecar.db.transfer import TABLES
from sidecar.temppasswords import Sealer
from sidecar.welcomepasswords import SECRET_KEY

from .conftest import cli, free_port, message_args, write_config, write_csv
from .test_schedules import config_for, moodle, schedule  # noqa: F401 (moodle: a fixture)

KEY = Fernet.generate_key().decode()
T = datetime(2026, 3, 1, 9, 30, 15, 250_000)


def job_ids(listing: str) -> list[str]:
    return re.findall(r"\b[0-9a-f]{8}-[0-9a-f-]{27}\b", listing)


def source_ledger(tmp_path, moodle):  # noqa: F811
    """A config on an SQLite ledger with rows in every table of ours; its sealed password."""
    site = moodle.site
    site.schedules[:] = [schedule(site)]
    config = config_for(tmp_path, moodle.url, site.token)
    key = f'[security]\nencryption_key = "{KEY}"\n'
    config.write_text(config.read_text().replace("[security]\n", key))
    cli(config, "schedules", "sync")
    cli(config, "schedules", "run", "1", "--deliver")
    learners = write_csv(tmp_path / "learners.csv", 30)
    cli(config, "send", "csv", str(learners), *message_args(tmp_path), "--yes", "--deliver")
    cli(config, "suppression", "add", "7", "--kind", "all")
    (tmp_path / "password").write_text("a long enough password\n")
    cli(config, "admin", "add", "ops", "--password-file", str(tmp_path / "password"))
    cli(config, "token", "create", "robot", "--read-only")

    # what only SES, Moodle or the dashboard writes: straight into the ledger
    db = open_database(f"sqlite:///{tmp_path}/offload.db")
    job = m.Job.select().order_by(m.Job.created_at).first()
    # a minute apart: MariaDB keeps whole seconds, and `jobs list` orders by creation
    job.created_at -= timedelta(minutes=1)
    job.save()
    sealed = Sealer.of([KEY]).seal("Temp-Pass-123")
    first = m.Recipient.select().where(m.Recipient.job == job).order_by(m.Recipient.id).first()
    first.vars = {**first.vars, SECRET_KEY: sealed}
    first.save()
    m.SuppressedAddress.create(
        email="gone@example.org",
        reason="550 no such user",
        source="ses_bounce",
        job_id=job.id,
        userid=3,
        created_at=T,
    )
    m.Certificate.create(
        code="ABCD2345",
        job_id=job.id,
        userid=3,
        courseid=2,
        storage="local",
        key="2/3.pdf",
        issued_at=T,
    )
    m.Company.create(id=9001, name="Acme", enabled=False, provider="local", updated_at=T)
    m.SeenCallback.create(
        callback_id="c" * 36, job_id=job.id, batch_id="b" * 36, accepted=2, ignored=0, received_at=T
    )
    m.LoginFailure.create(at=T, address="127.0.0.1", username="ops")
    m.WebSession.create(id_hash="e" * 64, name="ops", source="local", is_admin=True,
                        companies=[9001], csrf="f" * 64, created_at=T, seen_at=T)  # fmt: skip
    db.close()
    return config, sealed


def target_config(tmp_path, config, url: str):
    """The same config with `[database] url` set to `url`."""
    path = tmp_path / "target.toml"
    path.write_text(config.read_text().replace(f"sqlite:///{tmp_path}/offload.db", url))
    return path


def copied_counts(out: str) -> dict[str, tuple[int, int]]:
    rows = re.findall(r"^  ([a-z_]+) +([\d,]+) +([\d,]+)$", out, re.M)
    return {t: (int(a.replace(",", "")), int(b.replace(",", ""))) for t, a, b in rows}


def emptied(url: str) -> str:
    """`url` with none of our tables left (the copy creates the schema)."""
    db = open_database(url)
    db.drop_tables(list(m.ALL_MODELS), safe=True)
    db.close()
    return url


def test_copy_into_a_new_database_shows_the_same_jobs_and_takes_new_ones(tmp_path, moodle,  # noqa: F811
                                                                         db_url):  # fmt: skip
    config, sealed = source_ledger(tmp_path, moodle)
    before = cli(config, "jobs", "list").stdout
    jobs = job_ids(before)
    assert len(jobs) == 2
    shown = {job: cli(config, "jobs", "show", job).stdout for job in jobs}

    out = cli(config, "db", "copy", "--to", emptied(db_url)).stdout
    counts = copied_counts(out)
    assert sorted(counts) == sorted(model._meta.table_name for model in TABLES)
    assert all(source == target > 0 for source, target in counts.values()), counts
    assert f"in {config}" in out.splitlines()[-1] and "[database] url" in out.splitlines()[-1]

    target = target_config(tmp_path, config, db_url)
    assert cli(target, "jobs", "list").stdout == before
    for job, text in shown.items():
        assert cli(target, "jobs", "show", job).stdout == text
    assert "user 7" in cli(target, "suppression", "list").stdout
    assert "ops" in cli(target, "admin", "list").stdout

    db = open_database(db_url)
    top = m.Recipient.select(m.Recipient.id).order_by(m.Recipient.id.desc()).scalar()
    assert sealed in {r.vars.get(SECRET_KEY) for r in m.Recipient.select()}  # as it was
    db.close()
    later = write_csv(tmp_path / "later.csv", 3, start=500)
    cli(target, "send", "csv", str(later), *message_args(tmp_path), "--yes", "--deliver")
    new = set(job_ids(cli(target, "jobs", "list").stdout)) - set(jobs)
    assert len(new) == 1
    db = open_database(db_url)
    fresh = [r.id for r in m.Recipient.select().where(m.Recipient.job == new.pop())]
    db.close()
    assert len(fresh) == 3 and min(fresh) > top


def test_copy_into_an_upgraded_empty_database_then_a_second_copy_is_refused(tmp_path, moodle,  # noqa: F811
                                                                           db_url):  # fmt: skip
    config, _ = source_ledger(tmp_path, moodle)
    cli(config, "db", "copy", "--to", db_url)  # `db upgrade` ran there, no row yet: accepted

    again = cli(config, "db", "copy", "--to", db_url, check=False)
    assert again.returncode == 1
    assert "already holds moodle-offload data (" in again.stderr
    assert "nothing changed" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    jobs = job_ids(cli(config, "jobs", "list").stdout)
    assert job_ids(cli(target_config(tmp_path, config, db_url), "jobs", "list").stdout) == jobs


def test_copy_refuses_while_a_daemon_holds_the_source(tmp_path, moodle, db_url,  # noqa: F811
                                                      start_daemon):  # fmt: skip
    config, _ = source_ledger(tmp_path, moodle)
    daemon = start_daemon(config)
    refused = cli(config, "db", "copy", "--to", emptied(db_url), check=False)
    assert refused.returncode == 1
    assert "a moodle-offload daemon is using this database: stop it first" in refused.stderr
    assert daemon.poll() is None
    db = open_database(db_url)
    assert not db.get_tables()  # not even the schema
    db.close()


def test_copy_refuses_a_source_whose_schema_is_behind(tmp_path, moodle):  # noqa: F811
    config, _ = source_ledger(tmp_path, moodle)
    with sqlite3.connect(tmp_path / "offload.db") as conn:
        conn.execute("DELETE FROM schema_version WHERE version = 11")
    refused = cli(config, "db", "copy", "--to", f"sqlite:///{tmp_path}/new/offload.db",
                  check=False)  # fmt: skip
    assert refused.returncode == 1
    assert "schema at version 10" in refused.stderr
    assert "run `moodle-offload db upgrade` first" in refused.stderr
    assert not (tmp_path / "new" / "offload.db").exists()


def test_the_password_never_appears(tmp_path, monkeypatch):
    config = write_config(tmp_path)
    cli(config, "send", "csv", str(write_csv(tmp_path / "learners.csv", 3)),
        *message_args(tmp_path), "--yes")  # fmt: skip
    unreachable = f"postgresql://offload:pa55-w0rd@127.0.0.1:{free_port()}/offload"
    refused = cli(config, "db", "copy", "--to", unreachable, check=False)
    assert refused.returncode == 1
    assert f"copying sqlite:///{tmp_path}/offload.db into postgresql://offload:***@" in (
        refused.stdout
    )
    assert "cannot connect" in refused.stderr and "postgresql://offload:***@" in refused.stderr
    assert "pa55-w0rd" not in refused.stdout + refused.stderr

    # the same URL from the environment (kept off the command line and out of `ps`)
    monkeypatch.setenv("OFFLOAD_TARGET_URL", unreachable)
    from_env = cli(config, "db", "copy", "--to", "env:OFFLOAD_TARGET_URL", check=False)
    assert from_env.returncode == 1 and "postgresql://offload:***@" in from_env.stderr
    assert "pa55-w0rd" not in from_env.stdout + from_env.stderr
    unset = cli(config, "db", "copy", "--to", "env:NO_SUCH_VARIABLE", check=False)
    assert unset.returncode == 1
    assert "--to: environment variable NO_SUCH_VARIABLE is not set" in unset.stderr
