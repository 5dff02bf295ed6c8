"""Freeze the ledger's schema as each earlier release created it, from git history, into
tests/sidecar/schemas/{sqlite,postgres,mariadb}.sql (read by tests/sidecar/schema_history.py).

Run it after adding a migration step, so the release before it joins the history:
    python scripts/schema_history.py
The release of schema version v is the commit just before the one that introduced step v+1
(`git log -S _step_<v+1>_ -- sidecar/db/`). For each, its own sidecar/ is taken out of git
into a temporary folder and its own `migrations.upgrade` runs on an empty database of each
kind; the statements it sent (peewee's DEBUG log) are what the file keeps, each tagged with
the versions that created it. It then checks that the file gives back each release's
statements exactly. PostgreSQL and MariaDB come from MOODLE_OFFLOAD_TEST_POSTGRES_URL and
MOODLE_OFFLOAD_TEST_MARIADB_URL: their tables are DROPPED.
"""

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "sidecar" / "schemas"
DIALECTS = {
    "sqlite": None,
    "postgres": "MOODLE_OFFLOAD_TEST_POSTGRES_URL",
    "mariadb": "MOODLE_OFFLOAD_TEST_MARIADB_URL",
}

# Runs with PYTHONPATH = one release's sidecar/: a fresh install by that release's code.
CAPTURE = r"""
import json, logging, sys
from sidecar.db import migrations, models
from sidecar.db.connect import open_database
db = open_database(sys.argv[1])
db.connect()
ours = json.loads(sys.argv[2])  # today's table names: any of them a test left is dropped
def clear():
    q = "`" if "MySQL" in type(db).__name__ else '"'
    cascade = " CASCADE" if "Postgres" in type(db).__name__ else ""
    if q == "`":
        db.execute_sql("SET FOREIGN_KEY_CHECKS=0")
    elif not cascade:
        db.execute_sql("PRAGMA foreign_keys=OFF")
    for table in set(ours) & set(db.get_tables()):
        db.execute_sql(f"DROP TABLE {q}{table}{q}{cascade}")
    if q == "`":
        db.execute_sql("SET FOREIGN_KEY_CHECKS=1")
    elif not cascade:
        db.execute_sql("PRAGMA foreign_keys=ON")
clear()
sent = []
class Keep(logging.Handler):
    def emit(self, record):
        sent.append(record.msg[0] if isinstance(record.msg, tuple) else str(record.msg))
log = logging.getLogger("peewee")
log.setLevel(logging.DEBUG)
log.addHandler(Keep())
migrations.upgrade(db)
log.handlers.clear()
rows = db.execute_sql("SELECT version, name FROM schema_version ORDER BY version").fetchall()
clear()
ddl = [s for s in sent if s.split()[0].upper() in ("CREATE", "ALTER", "DROP")]
print(json.dumps({"ddl": ddl, "steps": [list(r) for r in rows]}))
"""


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def releases() -> dict[int, str]:
    """{schema version: the commit of the last release at it}, for every earlier version."""
    sys.path.insert(0, str(REPO))
    from sidecar.db.migrations import LATEST

    out = {}
    for version in range(1, LATEST):
        found = git("log", "--format=%H", "--reverse", "-S", f"_step_{version + 1}_", "--",
                    "sidecar/db/").split()  # fmt: skip
        out[version] = git("rev-parse", f"{found[0]}^")
    return out


def capture(commit: str, url: str, scratch: Path) -> dict:
    src = scratch / commit
    if not src.exists():
        src.mkdir()
        blob = subprocess.run(["git", "archive", commit, "sidecar"], cwd=REPO, check=True,
                              capture_output=True).stdout  # fmt: skip
        tarfile.open(fileobj=BytesIO(blob)).extractall(src, filter="data")
    env = {**os.environ, "PYTHONPATH": str(src)}
    from sidecar.db.models import ALL_MODELS

    names = json.dumps([model._meta.table_name for model in ALL_MODELS])
    proc = subprocess.run([sys.executable, "-c", CAPTURE, url, names], cwd=scratch, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"{commit[:12]} on {url.split(':')[0]}: {proc.stderr}")
    return json.loads(proc.stdout)


def merged(per_version: dict[int, list[str]]) -> list[tuple[str, list[int]]]:
    """One ordered list of every statement, each with the versions that sent it, such that
    the statements of version v, in order, are those tagged v."""
    order: list[str] = []
    tags: dict[str, list[int]] = {}
    for version, statements in sorted(per_version.items()):
        at = 0
        for s in statements:
            if s in tags:
                at = order.index(s) + 1
            else:
                order.insert(at, s)
                tags[s] = []
                at += 1
            tags[s].append(version)
    for version, statements in per_version.items():
        assert [s for s in order if version in tags[s]] == statements, version
    return [(s, tags[s]) for s in order]


def ranges(versions: list[int]) -> str:
    assert versions == list(range(versions[0], versions[-1] + 1)), versions
    return f"{versions[0]}-{versions[-1]}"


def write(dialect: str, got: dict[int, dict], commits: dict[int, str]) -> Path:
    quote = "`" if dialect == "mariadb" else '"'
    per_version = {}
    for version, result in got.items():
        inserts = [
            f"INSERT INTO {quote}schema_version{quote} ({quote}version{quote}, {quote}name{quote}, "
            f"{quote}applied_at{quote}) VALUES ({number}, '{name.replace(chr(39), chr(39) * 2)}', "
            f"'{applied_at(commits, number)}')"
            for number, name in result["steps"]
        ]
        per_version[version] = result["ddl"] + inserts
    lines = [
        f"-- moodle-offload's ledger as each earlier release created it ({dialect}).",
        "-- Generated by scripts/schema_history.py from git history; do not edit.",
        "-- A line `-- versions A-B`: the statements below it (one a line) were sent by the",
        "-- releases at schema versions A to B.",
    ]
    lines += [f"-- release of version {v}: {c[:12]}" for v, c in sorted(commits.items())]
    last = None
    for statement, versions in merged(per_version):
        tag = ranges(versions)
        if tag != last:
            lines.append(f"-- versions {tag}")
            last = tag
        assert "\n" not in statement
        lines.append(statement + ";")
    path = OUT / f"{dialect}.sql"
    path.write_text("\n".join(lines) + "\n")
    return path


def applied_at(commits: dict[int, str], version: int) -> str:
    """When a step was first released: its commit's date (UTC), as the ledger stores it."""
    first = git("log", "--format=%H", "--reverse", "-S", f"_step_{version}_", "--", "sidecar/db/")
    stamp = git("log", "-1", "--date=format-local:%Y-%m-%d %H:%M:%S", "--format=%ad",
                first.split()[0])  # fmt: skip
    assert re.fullmatch(r"[\d-]+ [\d:]+", stamp)
    return stamp


def main() -> int:
    os.environ["TZ"] = "UTC"
    commits = releases()
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for dialect, env in DIALECTS.items():
            url = f"sqlite:///{scratch}/ledger.db" if env is None else os.environ.get(env)
            if not url:
                print(f"{env} is not set: {dialect} left as it is", file=sys.stderr)
                continue
            got = {}
            for version, commit in commits.items():
                got[version] = capture(commit, url, scratch)
                assert max(n for n, _ in got[version]["steps"]) == version, (version, commit)
                (scratch / "ledger.db").unlink(missing_ok=True)
            print(write(dialect, got, commits).relative_to(REPO))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
