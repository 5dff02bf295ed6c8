"""Retention of 1,000,000 recipient rows on SQLite: total time and the longest write.

Builds a ledger of finished jobs (20 x 50,000 recipients by default) that are past
`[retention] recipient_days`, then runs sidecar.privacy.run_retention on it. Prints the
total time, rows a second, the number of write transactions and the longest one (the
time the write lock was held; target <= 200 ms).

`--with-callbacks` then runs bench/callbacks.py twice: alone, and with retention of the
same ledger size running in this process on the daemon's own database while the
callbacks arrive; prints both rates and their ratio (target >= 0.8).

Run: python bench/retention.py [--count N] [--per-job N] [--batch N] [--with-callbacks]
"""

import argparse
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sidecar import jobs, privacy  # noqa: E402
from sidecar.db import migrations, store  # noqa: E402
from sidecar.db.connect import open_database  # noqa: E402
from sidecar.db.models import Batch, Job, Recipient  # noqa: E402

DAYS = 180


def populate(url: str, count: int, per_job: int, now: datetime) -> None:
    """`count` recipients in finished jobs of `per_job`, finished 200 days before `now`."""
    db = open_database(url)
    migrations.upgrade(db)
    old = now - timedelta(days=DAYS + 20)
    spec = jobs.JobSpec(type="send_reminder", template_id="reminder", source="bench",
                        route="local", route_reason="bench")  # fmt: skip
    made, uid = 0, 1_000_000
    while made < count:
        n = min(per_job, count - made)
        people = [
            jobs.RecipientIn(u, f"learner{u}@school{u % 40}.example.org", f"First{u}",
                             f"Last{u}", {"course_name": "Safety 101"})
            for u in range(uid, uid + n)
        ]  # fmt: skip
        job_id = jobs.create_job(spec, people, batch_size=200, now=old).job_id
        with store.atomic():
            Recipient.update(status="sent", timesent=old).where(Recipient.job == job_id).execute()
            Batch.update(status="done").where(Batch.job == job_id).execute()
            Job.update(status="completed", finished_at=old).where(Job.id == job_id).execute()
        made += n
        uid += n
    db.close()


def retain(url: str, now: datetime, batch: int) -> tuple[privacy.RetentionReport, float]:
    db = open_database(url)
    db.connect(reuse_if_open=True)
    t = time.perf_counter()
    report = privacy.run_retention(recipient_days=DAYS, certificate_days=None,
                                   certificate_dir=Path("/nonexistent"), stores={}, now=now,
                                   perf=time.perf_counter, batch=batch)  # fmt: skip
    wall = time.perf_counter() - t
    db.close()
    return report, wall


def show(report: privacy.RetentionReport, wall: float) -> None:
    print(f"erased:                 {report.recipients:,} recipients of {report.jobs} jobs")
    print(f"total time:             {wall:.1f} s = {report.recipients / wall:,.0f} rows/s")
    print(f"write transactions:     {report.transactions:,}")
    print(f"longest write:          {report.longest_write * 1000:.1f} ms  (target <= 200 ms)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--per-job", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=privacy.BATCH)
    ap.add_argument("--with-callbacks", action="store_true")
    args = ap.parse_args()
    now = datetime.now(UTC).replace(tzinfo=None)

    tmp = Path(tempfile.mkdtemp(prefix="bench-retention-"))
    url = f"sqlite:///{tmp}/offload.db"
    t = time.perf_counter()
    populate(url, args.count, args.per_job, now)
    print(f"ledger built:           {args.count:,} recipients in {time.perf_counter() - t:.0f} s")
    show(*retain(url, now, args.batch))
    left = open_database(url)
    kept = Recipient.select().where(Recipient.email != "").count()
    left.close()
    print(f"addresses left:         {kept}")

    if not args.with_callbacks:
        return
    import callbacks

    alone = callbacks.run()

    out: dict = {}
    ledger: dict = {}

    def setup(db_url):
        ledger["url"] = db_url
        populate(db_url, args.count, args.per_job, now)

    def during(_url, _config_path):
        thread = threading.Thread(
            target=lambda: out.update(r=retain(ledger["url"], now, args.batch))
        )
        thread.start()
        time.sleep(0.5)  # retention under way before the first callback
        return thread.join

    together = callbacks.run(during=during, setup=setup)
    report, wall = out["r"]
    print(f"callbacks alone:        {alone['rate']:,.0f} updates/s")
    print(f"callbacks + retention:  {together['rate']:,.0f} updates/s  "
          f"(ratio {together['rate'] / alone['rate']:.2f}, target >= 0.8)")  # fmt: skip
    print("retention meanwhile:")
    show(report, wall)


if __name__ == "__main__":
    main()
