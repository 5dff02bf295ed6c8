"""`db copy` of a 100,000-recipient SQLite ledger into PostgreSQL (and MariaDB, SQLite).

The source: a temporary SQLite ledger of `--recipients` recipients (default 100,000) in
jobs of 10,000, as `send csv` writes them. Targets: PostgreSQL and MariaDB when
MOODLE_OFFLOAD_TEST_POSTGRES_URL / MOODLE_OFFLOAD_TEST_MARIADB_URL are set (their tables
are dropped first and at the end), and a new SQLite file. For each: the copy's time, rows
per second (every table) and recipients per second, and the process's peak RSS so far
(the copy reads `--batch` rows at a time: it stays flat whatever the ledger's size).
Run: python bench/db_copy.py [--recipients N] [--batch N] [--only sqlite|postgres|mariadb]
"""

import argparse
import os
import resource
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sidecar import jobs  # noqa: E402
from sidecar.db import migrations, transfer  # noqa: E402
from sidecar.db.connect import open_database  # noqa: E402
from sidecar.db.models import ALL_MODELS  # noqa: E402

NOW = datetime(2026, 3, 1, 9, 0, 0)
URLS = {
    "postgres": "MOODLE_OFFLOAD_TEST_POSTGRES_URL",
    "mariadb": "MOODLE_OFFLOAD_TEST_MARIADB_URL",
}


def source_ledger(path: Path, n: int) -> str:
    url = f"sqlite:///{path}"
    migrations.upgrade(open_database(url))
    for start in range(1, n + 1, 10_000):
        people = [jobs.RecipientIn(i, f"learner{i}@school{i % 40}.example.org", f"First{i}",
                                   f"Last{i}", {"course_name": "Safety 101"})
                  for i in range(start, min(start + 10_000, n + 1))]  # fmt: skip
        spec = jobs.JobSpec(type="send_csv", template_id="custom", source="bench",
                            idempotency_key=f"bench:{start}")  # fmt: skip
        jobs.create_job(spec, jobs.prepare(people), batch_size=200, now=NOW)
    return url


def drop(url: str) -> None:
    db = open_database(url)
    db.drop_tables(list(ALL_MODELS), safe=True)
    db.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=transfer.BATCH)
    ap.add_argument("--only", choices=["sqlite", *URLS])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-db-copy-"))
    source = source_ledger(tmp / "source.db", args.recipients)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"source: {args.recipients:,} recipients in SQLite; peak RSS {rss:.0f} MB before")

    targets = {"sqlite": f"sqlite:///{tmp}/target.db"}
    targets.update({k: os.environ[v] for k, v in URLS.items() if os.environ.get(v)})
    for kind, url in targets.items():
        if args.only and kind != args.only:
            continue
        if kind != "sqlite":
            drop(url)
        try:
            done = transfer.copy_ledger(source, url, batch=args.batch)
        finally:
            if kind != "sqlite":
                drop(url)
        recipients = next(c.target for c in done.counts if c.table == "recipient")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rate = done.rows / done.seconds
        print(
            f"sqlite -> {kind:8} {done.rows:,} rows in {done.seconds:.2f} s: {rate:,.0f} "
            f"rows/s, {recipients / done.seconds:,.0f} recipients/s; peak RSS {rss:.0f} MB"
        )


if __name__ == "__main__":
    main()
