"""The health collector on a ledger of 1,000 jobs (SQLite): what a dashboard poll costs.

Builds 1,000 jobs of 50 recipients, 20 of them still running, plus one running job of
50,000 recipients; then times the stuck-jobs query (the one part that reads the ledger
beyond a `SELECT 1`), a first `Health.parts()` (every check run: database, mail folder,
stuck jobs) and a cached one (what every poll within `health_interval` costs).

Run: python bench/health.py [--jobs N] [--big N]
"""

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sidecar import jobs  # noqa: E402
from sidecar.config import Config  # noqa: E402
from sidecar.db import migrations  # noqa: E402
from sidecar.db.connect import open_database  # noqa: E402
from sidecar.db.models import Job  # noqa: E402
from sidecar.health import Health, stuck_jobs  # noqa: E402
from sidecar.status import JobStatus  # noqa: E402


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--big", type=int, default=50_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-health-"))
    url = f"sqlite:///{tmp}/ledger.db"
    db = open_database(url)
    migrations.upgrade(db)
    now = datetime.now(UTC).replace(tzinfo=None)
    spec = jobs.JobSpec(type="send_csv", template_id="custom", source="bench")
    people = [jobs.RecipientIn(i, f"u{i}@example.org", "F", "L") for i in range(1, 51)]
    t = time.perf_counter()
    with db.connection_context():
        ids = [jobs.create_job(spec, people, now=now - timedelta(hours=3), batch_size=200).job_id
               for _ in range(args.jobs)]  # fmt: skip
        Job.update(status=JobStatus.COMPLETED).where(Job.id.in_(ids[20:])).execute()
        big = [jobs.RecipientIn(i, f"b{i}@example.org", "F", "L") for i in range(1, args.big + 1)]
        jobs.create_job(spec, big, now=now - timedelta(hours=3), batch_size=200)
    print(f"ledger: {args.jobs} jobs of 50 + one of {args.big:,} in {time.perf_counter() - t:.1f}s")

    with db.connection_context():
        times = []
        for _ in range(5):
            t = time.perf_counter()
            found = stuck_jobs(now - timedelta(hours=1))
            times.append(time.perf_counter() - t)
    print(f"stuck_jobs: {len(found)} found, median {ms(statistics.median(times))} of 5")

    config = Config.model_validate(
        {"database": {"url": url}, "providers": {"local": {"maildir": str(tmp / "mail")}}}
    )
    health = Health(config, db)
    t = time.perf_counter()
    health.parts()
    print(f"first parts(): {ms(time.perf_counter() - t)} (every check run)")
    times = []
    for _ in range(1000):
        t = time.perf_counter()
        health.parts()
        times.append(time.perf_counter() - t)
    times.sort()
    print(
        f"cached parts(): median {statistics.median(times) * 1e6:.0f} µs, "
        f"p99 {times[989] * 1e6:.0f} µs"
    )


if __name__ == "__main__":
    main()
