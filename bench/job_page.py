"""What the dashboard's job page of a 50,000-recipient job costs, over real HTTP.

For each database: SQLite (a temporary file), and PostgreSQL and MariaDB when
MOODLE_OFFLOAD_TEST_POSTGRES_URL / MOODLE_OFFLOAD_TEST_MARIADB_URL are set (their tables
are dropped first and at the end). A ledger of `--jobs` earlier jobs of 2,000 recipients
and one job of `--recipients` (default 50,000: sent over an hour, one in 157 failed),
served by the real app on 127.0.0.1 with a signed-in session (requests.Session as the
browser). Measured, `--repeat` times each, median and p95 in ms:

- `GET /jobs/{id}`: the whole page (counts, progress chart, batches, history, the first
  50 recipients), client time on the loopback;
- `GET /jobs/{id}?cursor=...`: a page of recipients deep into the job (after 45,000);
- `GET /jobs/{id}?status=failed` and `?q=user4999`: filtered and searched;
- `GET /jobs/{id}/progress`: the live fragment the page refreshes;
- then, in this process without HTTP, each query the page makes, to show where the time
  goes: ledgerview.job_detail, counts_of, activity.job_progress, ledgerview.recipients;
- the job page's server time (the WSGI app called in this process, no socket) against its
  floor: the very SQL statements that one page view sent to the database (recorded from a
  view, then replayed bare with their parameters, rows fetched, no ORM, no template).

Target (issue 13): the job page <= 150 ms server time and <= 2x that floor.
Migration 8's index recipient(job_id, status, timesent, updated_at) is what keeps the
counts and the chart to one job's rows (`--explain` prints the plans).
Run: python bench/job_page.py [--recipients N] [--jobs N] [--repeat N] [--explain]
       [--only sqlite|postgres|mariadb]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from sidecar import activity, jobs, ledgerview  # noqa: E402
from sidecar.access import Principal  # noqa: E402
from sidecar.config import Config  # noqa: E402
from sidecar.db import migrations  # noqa: E402
from sidecar.db.connect import open_database  # noqa: E402
from sidecar.db.models import ALL_MODELS, Recipient  # noqa: E402
from sidecar.ledgerview import EVERYTHING  # noqa: E402
from sidecar.web import params  # noqa: E402
from sidecar.web.app import make_app  # noqa: E402
from sidecar.web.dashboard import COOKIE, Dashboard  # noqa: E402
from sidecar.web.server import HttpServer  # noqa: E402

NOW = datetime(2025, 11, 18, 12, 0, 0)
URLS = {
    "postgres": "MOODLE_OFFLOAD_TEST_POSTGRES_URL",
    "mariadb": "MOODLE_OFFLOAD_TEST_MARIADB_URL",
}


def people(n: int) -> list[jobs.RecipientIn]:
    return [jobs.RecipientIn(i, f"user{i}@example.org", f"First{i}", f"Last{i}")
            for i in range(1, n + 1)]  # fmt: skip


def make(n: int) -> str:
    spec = jobs.JobSpec(type="send_csv", template_id="custom", source="bench", tenant_id=4)
    return jobs.create_job(spec, people(n), batch_size=500, now=NOW).job_id


def settle_over_an_hour(job_id: str, n: int) -> None:
    """Sent in ten steps of six minutes; one in 157 failed."""
    step = -(-n // 10)
    for k in range(10):
        at = NOW + timedelta(minutes=6 * (k + 1))
        Recipient.update(status="sent", timesent=at, updated_at=at).where(
            Recipient.job == job_id, Recipient.userid.between(k * step + 1, (k + 1) * step)
        ).execute()
    failed = list(range(157, n, 157))
    for start in range(0, len(failed), 900):
        Recipient.update(status="failed", timesent=None, last_error="smtp 550").where(
            Recipient.job == job_id, Recipient.userid.in_(failed[start : start + 900])
        ).execute()


def timed(fn, repeat: int) -> tuple[float, float]:
    fn()  # warm: templates compiled, connection open
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


def serve(now) -> tuple[HttpServer, requests.Session]:
    config = Config.model_validate({
        "server": {"public_url": "http://127.0.0.1"},
        "security": {"encryption_key": Fernet.generate_key().decode()},
        "dashboard": {"enabled": True},
    })  # fmt: skip
    dashboard = Dashboard(config, lambda: now)
    app = make_app(handle_callback=lambda raw, sig: {}, health=lambda: (True, {}),
                   dashboard=dashboard)  # fmt: skip
    srv = HttpServer(app, "127.0.0.1", 0)
    srv.start()
    principal = Principal(name="bench", kind="session", is_admin=True, companies=(),
                          read_only=False, source="local")  # fmt: skip
    session = dashboard.sessions.create(principal, "127.0.0.1")
    browser = requests.Session()
    browser.cookies.set(COOKIE, session.cookie, domain="127.0.0.1", path="/")
    return srv, browser


def bench(name: str, url: str, a) -> None:
    db = open_database(url)
    db.drop_tables(list(ALL_MODELS), safe=True)
    migrations.upgrade(db)
    started = time.perf_counter()
    for _ in range(a.jobs):
        make(2000)
    job_id = make(a.recipients)
    settle_over_an_hour(job_id, a.recipients)
    if url.startswith("mysql"):
        db.execute_sql("ANALYZE TABLE recipient, job, batch")
    elif url.startswith("postgres"):
        db.execute_sql("VACUUM ANALYZE")  # what autovacuum does after a job's updates
    else:
        db.execute_sql("ANALYZE")
    made = time.perf_counter() - started
    print(f"\n{name}: a job of {a.recipients:,} recipients after {a.jobs} jobs of 2,000 "
          f"(made in {made:.0f} s); median / p95 of {a.repeat}")  # fmt: skip
    now = NOW + timedelta(hours=2)
    srv, browser = serve(now)
    deep = params.encode_cursor("recipients", (45_000,))

    def get(path: str, **query):
        def call():
            resp = browser.get(f"{srv.url}{path}", params=query, timeout=60)
            assert resp.status_code == 200, (resp.status_code, resp.text[:300])

        return call

    page = f"/jobs/{job_id}"
    figures = {
        "GET /jobs/{id} (the job page)": get(page),
        "GET /jobs/{id}?cursor= (after 45,000)": get(page, cursor=deep),
        "GET /jobs/{id}?status=failed": get(page, status="failed"),
        "GET /jobs/{id}?q=user4999": get(page, q="user4999"),
        "GET /jobs/{id}/progress (the live part)": get(f"{page}/progress"),
        "GET /jobs (the list)": get("/jobs"),
        "  ledgerview.job_detail": lambda: ledgerview.job_detail(EVERYTHING, job_id),
        "  ledgerview.counts_of": lambda: ledgerview.counts_of(job_id),
        "  activity.job_progress": lambda: activity.job_progress(job_id, now=now),
        "  ledgerview.recipients (first 50)": lambda: ledgerview.recipients(
            EVERYTHING, job_id, after=None, limit=50
        ),
    }
    if a.explain:
        explain(db, job_id)
    try:
        for label, fn in figures.items():
            median, p95 = timed(fn, a.repeat)
            print(f"  {label:42} {median:8.1f} {p95:8.1f} ms")
        server, floor, statements = against_floor(db, srv.app, browser, page)
        for label, fn in ((f"server time of {page[:13]}...", server),
                          (f"floor: its {statements} SQL statements, bare", floor)):  # fmt: skip
            median, p95 = timed(fn, a.repeat)
            figures[label] = median
            print(f"  {label:42} {median:8.1f} {p95:8.1f} ms")
        ratio = timed(server, a.repeat)[0] / timed(floor, a.repeat)[0]
        print(f"  job page / floor (medians): {ratio:.2f}x")
    finally:
        srv.stop()
        db.drop_tables(list(ALL_MODELS), safe=True)
        db.close()
    print("  target: the job page <= 150 ms server time, <= 2x its floor")


def against_floor(db, app, browser: requests.Session, path: str):
    """(server, floor, n): `server()` asks the WSGI app for `path` in this process with the
    browser's session cookie (server time: no socket, no client); `floor()` replays bare
    the `n` SQL statements one such view sent to the database."""
    from werkzeug.test import Client

    client = Client(app)
    client.set_cookie(COOKIE, browser.cookies.get(COOKIE), domain="localhost")

    def server():
        resp = client.get(path)
        assert resp.status_code == 200, resp.status_code

    sent: list[tuple[str, tuple]] = []
    execute = db.execute_sql

    def recording(sql, params=None, *args, **kwargs):
        sent.append((sql, tuple(params or ())))
        return execute(sql, params, *args, **kwargs)

    db.execute_sql = recording
    try:
        server()
    finally:
        db.execute_sql = execute
    reads = [(sql, args) for sql, args in sent if sql.lstrip().upper().startswith("SELECT")]
    others = [sql.split()[0] for sql, _ in sent if (sql, _) not in reads]
    if others:  # the session's last-seen time: a write, left out of the floor
        print(f"  (left out of the floor: {len(others)} writes: {', '.join(others)})")

    def floor():
        for sql, args in reads:
            db.execute_sql(sql, args).fetchall()

    return server, floor, len(reads)


def explain(db, job_id: str) -> None:
    """The plan of a job's counts by status (ledgerview.counts_of) and of its sent mail over
    time (activity.job_progress's sent query): which index each uses."""
    from peewee import SQL, fn

    counts = (
        Recipient.select(Recipient.status, fn.COUNT(Recipient.id))
        .where(Recipient.job == job_id)
        .group_by(Recipient.status)
    )
    sent = Recipient.select(fn.COUNT(SQL("*"))).where(
        Recipient.job == job_id, Recipient.status == "sent", Recipient.timesent.is_null(False)
    )
    word = "EXPLAIN QUERY PLAN " if "Sqlite" in type(db).__name__ else "EXPLAIN "
    for label, query in (("counts_of", counts), ("job_progress (sent)", sent)):
        sql, args = query.sql()
        rows = db.execute_sql(word + sql, args).fetchall()
        print(f"  EXPLAIN {label}:")
        for row in rows:
            print("    " + " | ".join(str(c) for c in row if c is not None))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=50_000)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--only", choices=["sqlite", *URLS])
    ap.add_argument("--explain", action="store_true", help="print the plans of the counts")
    a = ap.parse_args()
    targets = {"sqlite": f"sqlite:///{tempfile.mkdtemp()}/bench.db"}
    for name, env in URLS.items():
        if os.environ.get(env):
            targets[name] = os.environ[env]
        else:
            print(f"{name}: {env} is not set; skipped")
    for name, url in targets.items():
        if a.only in (None, name):
            bench(name, url, a)


if __name__ == "__main__":
    main()
