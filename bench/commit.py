"""Commit a 50,000-recipient job on SQLite, against a bare sqlite3 executemany of the same rows.

Prints: address validation time, the commit time, the floor, their ratio (target <= 2.5)
and peak RSS (target <= 150 MB). Run: python bench/commit.py [--count N]
"""

import argparse
import json
import resource
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sidecar import jobs  # noqa: E402
from sidecar.db import migrations  # noqa: E402
from sidecar.db.connect import open_database  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=200)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-commit-"))
    now = datetime.now(UTC).replace(tzinfo=None)
    people = [
        jobs.RecipientIn(i, f"learner{i}@school{i % 40}.example.org", f"First{i}", f"Last{i}",
                         {"course_name": "Safety 101"})
        for i in range(1, args.count + 1)
    ]  # fmt: skip

    # Floor: bare sqlite3, same rows, same table shape and indexes, same pragmas.
    db = open_database(f"sqlite:///{tmp}/floor.db")
    migrations.upgrade(db)
    db.close()
    conn = sqlite3.connect(tmp / "floor.db")
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=normal")
    rows = [
        ("job", "batch", p.userid, p.email, p.firstname, p.lastname,
         json.dumps(p.vars), "pending", 0, None, now.isoformat(" "))
        for p in people
    ]  # fmt: skip
    conn.execute(
        "INSERT INTO job (id, type, status, source, actions, template_id, sender, template_data, "
        "route, route_reason, total, created_at, updated_at) "
        "VALUES ('job','t','pending','','{}','t','','{}','local','',0,'x','x')"
    )
    conn.execute(
        'INSERT INTO batch (id, job_id, "index", status, route, size, attempts, updated_at) '
        "VALUES ('batch','job',0,'pending','local',0,0,'x')"
    )
    conn.commit()
    t = time.perf_counter()
    with conn:
        conn.executemany(
            "INSERT INTO recipient (job_id, batch_id, userid, email, firstname, lastname, vars, "
            "status, attempts, last_error, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
    floor = time.perf_counter() - t
    conn.close()
    del rows

    db = open_database(f"sqlite:///{tmp}/ledger.db")
    migrations.upgrade(db)
    t = time.perf_counter()
    prepared = jobs.prepare(people)
    validate = time.perf_counter() - t
    spec = jobs.JobSpec(
        type="send_csv", template_id="custom", source="bench", idempotency_key="bench:1"
    )
    t = time.perf_counter()
    created = jobs.create_job(spec, prepared, batch_size=args.batch_size, now=now)
    commit = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"recipients:            {created.pending} in {created.batches} batches")
    print(f"address validation:    {validate:.2f} s ({validate / args.count * 1e6:.0f} us/address)")
    print(f"job commit:            {commit:.2f} s")
    print(f"floor (bare sqlite3):  {floor:.2f} s")
    print(f"ratio commit/floor:    {commit / floor:.2f}  (target <= 2.5)")
    print(f"peak RSS:              {rss:.0f} MB  (target <= 150)")


if __name__ == "__main__":
    main()
