"""What one `GET /metrics` scrape costs with 1,000 jobs and 1,000,000 recipients (SQLite).

Builds a ledger in a temporary SQLite file with bulk inserts (sqlite3 executemany, one
transaction): `--jobs` jobs of `--recipients` recipients in all, in batches of 500. Most
jobs are finished (sent, one in 157 failed); the last 10 are still open, 2 of them
untouched for two hours (stuck). Then serves the real app (make_app with the daemon's
MetricsEndpoint, and its cloud gauges as last read for AWS and Cloudflare: the refresher
thread is not timed, a scrape only serves its readings) on 127.0.0.1 and times `--repeat`
scrapes over HTTP, client time on the
loopback: median and p95 in ms. Then, in this process without HTTP, each ledger query a
scrape makes, to show where the time goes.

Target (issue 16): <= 50 ms a scrape.
Run: python bench/metrics.py [--jobs N] [--recipients N] [--repeat N]
"""

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from peewee import fn  # noqa: E402

from sidecar import cloudgauges as cg  # noqa: E402
from sidecar.db import migrations  # noqa: E402
from sidecar.db.connect import open_database  # noqa: E402
from sidecar.db.models import Job, Recipient, SyncState  # noqa: E402
from sidecar.health import stuck_jobs  # noqa: E402
from sidecar.metrics import MetricsEndpoint, recipient_counts  # noqa: E402
from sidecar.web.app import make_app  # noqa: E402
from sidecar.web.server import HttpServer  # noqa: E402

STUCK_AFTER = timedelta(hours=1)
TYPES = ("send_reminder", "send_csv", "course_certificate", "welcome")


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def build(path: Path, n_jobs: int, n_recipients: int) -> None:
    """The ledger: schema by the migrations, rows by sqlite3 executemany."""
    db = open_database(f"sqlite:///{path}")
    migrations.upgrade(db)
    db.close()
    started = time.perf_counter()
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    t = now()
    per_job = n_recipients // n_jobs
    job_rows, batch_rows, recipient_rows = [], [], []
    rid = 0
    for j in range(n_jobs):
        job_id = str(uuid.uuid4())
        open_ = j >= n_jobs - 10
        stuck = j >= n_jobs - 2
        at = t - timedelta(hours=2 if stuck else (0 if open_ else 24))
        status = "queued" if open_ else ("partial_failure" if j % 3 == 0 else "completed")
        job_rows.append((job_id, TYPES[j % len(TYPES)], status, "bench", "{}", "reminder", "",
                         "{}", "local", "", per_job, at, at, None if open_ else at))  # fmt: skip
        for b in range(-(-per_job // 500)):
            batch_id = str(uuid.uuid4())
            size = min(500, per_job - b * 500)
            batch_rows.append((batch_id, job_id, b, "queued" if open_ else "done", "local",
                               size, 0, at))  # fmt: skip
            for k in range(size):
                rid += 1
                userid = b * 500 + k + 1
                if open_:
                    r_status, sent_at = "queued", None
                else:
                    r_status = "failed" if userid % 157 == 0 else "sent"
                    sent_at = at if r_status == "sent" else None
                email = f"user{userid}@example.org"
                recipient_rows.append((rid, job_id, batch_id, userid, email, "First", "Last",
                                       "{}", r_status, 1, sent_at, at))  # fmt: skip
        if len(recipient_rows) >= 100_000:
            _flush(con, job_rows, batch_rows, recipient_rows)
    _flush(con, job_rows, batch_rows, recipient_rows)
    con.execute("INSERT INTO sync_state (source, ok_at, schedules, skipped) VALUES (?,?,3,0)",
                ("moodle", t))  # fmt: skip
    con.commit()
    con.execute("ANALYZE")
    con.close()
    print(f"built {n_jobs:,} jobs and {rid:,} recipients in {time.perf_counter() - started:.1f} s "
          f"({path.stat().st_size / 1e6:.0f} MB)")  # fmt: skip


def _flush(con, job_rows, batch_rows, recipient_rows) -> None:
    con.executemany(
        "INSERT INTO job (id, type, status, source, actions, template_id, sender, template_data,"
        " route, route_reason, total, created_at, updated_at, finished_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", job_rows,
    )  # fmt: skip
    con.executemany(
        'INSERT INTO batch (id, job_id, "index", status, route, size, attempts, updated_at)'
        " VALUES (?,?,?,?,?,?,?,?)", batch_rows,
    )  # fmt: skip
    con.executemany(
        "INSERT INTO recipient (id, job_id, batch_id, userid, email, firstname, lastname, vars,"
        " status, attempts, timesent, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        recipient_rows,
    )  # fmt: skip
    job_rows.clear()
    batch_rows.clear()
    recipient_rows.clear()


def ms(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return f"median {statistics.median(values) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms"


def timed(fn_, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn_()
        out.append(time.perf_counter() - started)
    return out


def cloud_gauges() -> cg.CloudGauges:
    """The daemon's cloud gauges with a reading of each kind made (no cloud called)."""
    gauges = cg.CloudGauges(config=None)
    gauges._readings = [
        cg.Reading(provider, f"{queue} queue",
                   lambda p=provider, q=queue: {(cg.QUEUE_DEPTH, (p, q)): 12.0})
        for provider in ("aws", "cloudflare") for queue in ("jobs", "dead_letter")
    ] + [cg.Reading("aws", "SES quota", lambda: {(cg.SES_MAX_24H, ()): 50_000.0,
                                                 (cg.SES_SENT_24H, ()): 1_234.0,
                                                 (cg.SES_MAX_RATE, ()): 14.0})]  # fmt: skip
    gauges.refresh()
    return gauges


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--recipients", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        build(path, args.jobs, args.recipients)
        db = open_database(f"sqlite:///{path}")
        gauges = cloud_gauges()
        endpoint = MetricsEndpoint(db, stuck_after=STUCK_AFTER, clock=now,
                                   collectors=(gauges,))  # fmt: skip
        app = make_app(handle_callback=lambda raw, sig: {}, health=lambda: (True, {}),
                       metrics=endpoint)  # fmt: skip
        srv = HttpServer(app, "127.0.0.1", 0)
        srv.start()
        try:
            http = requests.Session()
            first = http.get(f"{srv.url}/metrics", timeout=60)
            assert first.status_code == 200, first.text
            assert "moodle_offload_stuck_jobs 2.0" in first.text, first.text
            assert (
                'moodle_offload_queue_depth{provider="cloudflare",queue="jobs"} 12.0' in first.text
            )
            print(f"scrape: {len(first.content):,} bytes, "
                  f"{sum(1 for line in first.text.splitlines() if line and line[0] != '#')} "
                  "samples")  # fmt: skip
            scrapes = timed(lambda: http.get(f"{srv.url}/metrics", timeout=60), args.repeat)
            print(f"GET /metrics over HTTP ({args.repeat} scrapes): {ms(scrapes)}   "
                  f"(target <= 50 ms)")  # fmt: skip
        finally:
            srv.stop()
        db.connect(reuse_if_open=True)
        queries = {
            "jobs by type and status": lambda: list(
                Job.select(Job.type, Job.status, fn.COUNT(Job.id))
                .group_by(Job.type, Job.status).tuples()
            ),
            "recipients by status": recipient_counts,
            "(a GROUP BY instead)": lambda: list(
                Recipient.select(Recipient.status, fn.COUNT(Recipient.id))
                .group_by(Recipient.status).tuples()
            ),
            "stuck jobs": lambda: stuck_jobs(now() - STUCK_AFTER),
            "last sync": lambda: list(SyncState.select().tuples()),
            "cloud gauges (served)": lambda: list(gauges.collect()),
            "whole render, no HTTP": endpoint.render,
        }  # fmt: skip
        grouped = dict(
            Recipient.select(Recipient.status, fn.COUNT(Recipient.id))
            .group_by(Recipient.status)
            .tuples()
        )
        assert {k: v for k, v in recipient_counts().items() if v} == grouped, grouped
        print("where the time goes (in this process):")
        for name, query in queries.items():
            print(f"  {name:<24} {ms(timed(query, args.repeat))}")
        db.close()


if __name__ == "__main__":
    main()
