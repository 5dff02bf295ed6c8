"""The dashboard's chart queries on a big ledger in SQLite: 1,000,000 recipients by default.

200 jobs of 5,000 recipients (one of 50,000 among them, for the job page), created over the
last 30 days, ten companies; 95% sent, 3% failed, 2% still queued. Prints the time of
`activity.hourly` (the 7-day chart: every company, then one) and `activity.job_progress`
of the 50,000-recipient job: the best of 5 runs each, after one warm-up.

Run: python bench/activity.py [--rows N]
"""

import argparse
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sidecar import activity  # noqa: E402
from sidecar.db import migrations  # noqa: E402
from sidecar.db.connect import open_database  # noqa: E402

JOB_SIZE = 5000
BIG_JOB = 50_000


def fill(path: Path, rows: int, now: datetime) -> str:
    """Write the ledger with bare sqlite3 (fast); returns the id of the 50,000 job."""
    rng = random.Random(13)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=off")
    sizes = [BIG_JOB] + [JOB_SIZE] * ((rows - BIG_JOB) // JOB_SIZE)
    big = None
    userid = 0
    with conn:
        for n, size in enumerate(sizes):
            job_id = str(uuid.UUID(int=rng.getrandbits(128)))
            big = big or job_id
            created = now - timedelta(days=30) + timedelta(seconds=rng.randrange(30 * 86400))
            created = min(created, now - timedelta(hours=3))
            conn.execute(
                "INSERT INTO job (id, type, status, source, tenant_id, actions, template_id, "
                "sender, template_data, route, route_reason, total, created_at, updated_at) "
                "VALUES (?, 'send_csv', 'processing', 'bench', ?, '{}', 't', '', '{}', 'local', "
                "'', ?, ?, ?)",
                (job_id, n % 10 + 1, size, created.isoformat(" "), created.isoformat(" ")),
            )
            batch_id = str(uuid.uuid4())
            conn.execute(
                'INSERT INTO batch (id, job_id, "index", status, route, size, attempts, '
                "updated_at) VALUES (?, ?, 0, 'queued', 'local', ?, 0, ?)",
                (batch_id, job_id, size, created.isoformat(" ")),
            )
            out = []
            for _ in range(size):
                userid += 1
                at = created + timedelta(seconds=rng.randrange(2 * 3600))
                roll = rng.random()
                status = "sent" if roll < 0.95 else "failed" if roll < 0.98 else "queued"
                timesent = at.isoformat(" ") if status == "sent" else None
                stamp = at.isoformat(" ") if status != "queued" else created.isoformat(" ")
                out.append((job_id, batch_id, userid, f"u{userid}@example.org", status,
                            timesent, stamp))  # fmt: skip
            conn.executemany(
                "INSERT INTO recipient (job_id, batch_id, userid, email, firstname, lastname, "
                "vars, status, attempts, timesent, updated_at) "
                "VALUES (?, ?, ?, ?, '', '', '{}', ?, 1, ?, ?)",
                out,
            )
    conn.execute("ANALYZE")
    conn.close()
    return big


def best(call, runs: int = 5) -> float:
    call()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    now = datetime.now(UTC).replace(tzinfo=None)
    path = Path(tempfile.mkdtemp(prefix="bench-activity-")) / "ledger.db"
    db = open_database(f"sqlite:///{path}")
    migrations.upgrade(db)
    db.close()
    t = time.perf_counter()
    big = fill(path, args.rows, now)
    print(f"ledger: {args.rows:,} recipients written in {time.perf_counter() - t:.1f} s")
    db = open_database(f"sqlite:///{path}")
    db.connect()

    week = activity.hourly(now)
    print(f"last 7 days: {sum(h.sent for h in week):,} sent, {sum(h.failed for h in week):,} "
          f"failed in {len(week)} hours")  # fmt: skip
    every = best(lambda: activity.hourly(now))
    one = best(lambda: activity.hourly(now, companies=(3,)))
    progress = best(lambda: activity.job_progress(big, now=now))
    print(f"hourly(), every company:       {every * 1000:7.1f} ms")
    print(f"hourly(), one company of ten:  {one * 1000:7.1f} ms")
    print(f"job_progress(), 50,000 rows:   {progress * 1000:7.1f} ms")
    db.close()


if __name__ == "__main__":
    main()
