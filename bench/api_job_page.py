"""What the job page of a 50,000-recipient job costs through the JSON API's query layer.

A ledger with `--jobs` earlier jobs of 2,000 recipients and then one job of `--recipients`
(default 50,000; a few hundred failed, the rest sent) on the database of `--url` (default
a temporary SQLite file; give a PostgreSQL or MariaDB URL to measure those; the tables
are dropped first). Measured in this process, best of `--repeat`, server time without
HTTP: `ledgerview.job_detail` + the first page of 50 recipients (what the job page
asks), a page deep into the job (after userid 45,000), the first page of a rare status
(`failed`) and a search. Floor: the bare SQL the first two need (counts by status,
batches, the job row, 51 recipients by (job_id, userid)) through the same connection.
Target (issue 13): the job page <= 150 ms and <= 2x the floor.
Run: python bench/api_job_page.py [--url URL] [--recipients N] [--jobs N] [--repeat N]
"""

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sidecar import jobs, ledgerview  # noqa: E402
from sidecar.db import migrations  # noqa: E402
from sidecar.db.connect import open_database  # noqa: E402
from sidecar.db.models import ALL_MODELS, Recipient  # noqa: E402
from sidecar.ledgerview import EVERYTHING  # noqa: E402

NOW = datetime(2025, 11, 18, 12, 0, 0)


def people(n: int) -> list[jobs.RecipientIn]:
    return [jobs.RecipientIn(i, f"user{i}@example.org", f"First{i}", f"Last{i}")
            for i in range(1, n + 1)]  # fmt: skip


def make(n: int) -> str:
    spec = jobs.JobSpec(type="send_csv", template_id="custom", source="bench", tenant_id=4)
    return jobs.create_job(spec, people(n), batch_size=500, now=NOW).job_id


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--recipients", type=int, default=50_000)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    url = a.url or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    db = open_database(url)
    db.drop_tables(list(ALL_MODELS), safe=True)
    migrations.upgrade(db)
    for _ in range(a.jobs):
        make(2000)
    job_id = make(a.recipients)
    Recipient.update(status="sent").where(Recipient.job == job_id).execute()
    Recipient.update(status="failed", last_error="smtp 550").where(
        Recipient.job == job_id, Recipient.userid.in_(list(range(157, a.recipients, 157)))
    ).execute()
    db.execute_sql("ANALYZE") if not url.startswith("mysql") else None

    def page():
        ledgerview.job_detail(EVERYTHING, job_id)
        ledgerview.recipients(EVERYTHING, job_id, after=None, limit=50)

    p, q = db.param, db.quote

    def floor():
        for sql in (
            f"SELECT * FROM {q[0]}job{q[1]} WHERE id = {p}",
            f"SELECT status, COUNT(id) FROM recipient WHERE job_id = {p} GROUP BY status",
            f"SELECT * FROM batch WHERE job_id = {p} ORDER BY {q[0]}index{q[1]}",
            f"SELECT userid, email, firstname, lastname, status, attempts, last_error "
            f"FROM recipient WHERE job_id = {p} ORDER BY userid LIMIT 51",
        ):
            db.execute_sql(sql, (job_id,)).fetchall()

    if a.profile:
        import cProfile
        import pstats

        cProfile.runctx("for _ in range(10): page()", globals(), locals(), "/tmp/api_page.prof")
        pstats.Stats("/tmp/api_page.prof").sort_stats("cumulative").print_stats(25)
    figures = {
        "job page (detail + first 50 recipients)": best(page, a.repeat),
        "floor (bare SQL of the same)": best(floor, a.repeat),
        "a page after userid 45,000": best(lambda: ledgerview.recipients(
            EVERYTHING, job_id, after=(45_000,), limit=50), a.repeat),
        "first 50 failed": best(lambda: ledgerview.recipients(
            EVERYTHING, job_id, statuses=["failed"], after=None, limit=50), a.repeat),
        "search 'user4999'": best(lambda: ledgerview.recipients(
            EVERYTHING, job_id, search="user4999", after=None, limit=50), a.repeat),
    }  # fmt: skip
    print(f"{db.__class__.__name__}: job of {a.recipients} recipients after {a.jobs} jobs of 2000")
    for name, ms in figures.items():
        print(f"  {name:42} {ms:8.1f} ms")
    ratio = (
        figures["job page (detail + first 50 recipients)"] / figures["floor (bare SQL of the same)"]
    )
    print(f"  job page / floor: {ratio:.2f}x (target <= 2x, <= 150 ms)")
    db.drop_tables(list(ALL_MODELS), safe=True)
    db.close()


if __name__ == "__main__":
    main()
