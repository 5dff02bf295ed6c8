"""What the dashboard's overview (`GET /`) costs with 1,000 jobs in the ledger, and what
polling it costs callback ingestion.

1. A ledger on `--url` (default a temporary SQLite file; a PostgreSQL or MariaDB URL to
   measure those; the tables are dropped first) with `--jobs` jobs (default 1,000) of
   `--recipients` each (default 50) over the last 7 days, ten companies, a tenth of them
   with failures, the newest 5 still running. The app with the dashboard is served on
   127.0.0.1 in this process; a signed-in admin (and a company manager) GET / over HTTP:
   uncached (the overview's cache emptied before each request) and cached, median and
   p95 of `--repeat` requests, and the same for /fragments/running. Target (issue 13):
   the overview < 100 ms.
2. bench/callbacks.py's figure (50,000 updates through signed callbacks to a real daemon)
   without the dashboard, and with it on and the overview polled every second by 10
   clients; `--rounds` of each, alternated. Target: with >= 0.9x without.

`--profile`: cProfile of 20 uncached overviews, in process, the top 25 by cumulative time.
Run: python bench/overview.py [--url URL] [--jobs N] [--repeat N] [--rounds N] [--skip-callbacks]
"""

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import requests
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sidecar import jobs  # noqa: E402
from sidecar.access import Principal  # noqa: E402
from sidecar.config import Config, load  # noqa: E402
from sidecar.db import migrations, store  # noqa: E402
from sidecar.db.connect import open_database  # noqa: E402
from sidecar.db.models import ALL_MODELS, Job, Recipient  # noqa: E402
from sidecar.runtime import utcnow  # noqa: E402
from sidecar.sessions import Sessions, cookie_key  # noqa: E402
from sidecar.web.app import make_app  # noqa: E402
from sidecar.web.dashboard import COOKIE, Dashboard  # noqa: E402
from sidecar.web.pages import overview  # noqa: E402
from sidecar.web.server import HttpServer  # noqa: E402

ERRORS = ("smtp 550 5.1.1 mailbox unavailable", "smtp 552 mailbox full",
          "smtp 554 5.7.1 message rejected as spam", "smtp 421 try again later")  # fmt: skip


def build_ledger(n_jobs: int, per_job: int, now: datetime) -> None:
    """`n_jobs` jobs of `per_job` recipients, created evenly over the last 7 days."""
    people = [jobs.RecipientIn(i, f"learner{i}@example.org", f"First{i}", f"Last{i}")
              for i in range(1, per_job + 1)]  # fmt: skip
    span = timedelta(days=7) / n_jobs
    for i in range(n_jobs):
        created = now - timedelta(days=7) + span * i + timedelta(seconds=30)
        spec = jobs.JobSpec(type="send_reminder" if i % 3 else "send_csv", template_id="custom",
                            source="bench", tenant_id=i % 10 + 1, courseid=i % 40 + 1)  # fmt: skip
        job_id = jobs.create_job(spec, people, batch_size=200, now=created).job_id
        running = i >= n_jobs - 5
        done = per_job // 2 if running else per_job
        sent_at = created + timedelta(minutes=2)
        Recipient.update(status="sent", timesent=sent_at, updated_at=sent_at).where(
            Recipient.job == job_id, Recipient.userid <= done
        ).execute()
        if i % 10 == 0 and not running:
            for k, error in enumerate(ERRORS[: i % 4 + 1]):
                Recipient.update(status="failed", timesent=None, last_error=error).where(
                    Recipient.job == job_id, Recipient.userid == per_job - k
                ).execute()
        if running:
            Job.update(status="processing").where(Job.id == job_id).execute()
        else:
            store.settle(job_id, sent_at)


def percentiles(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return f"median {statistics.median(ms):6.1f} ms   p95 {p95:6.1f} ms   (n={len(ms)})"


class Timed:
    """WSGI middleware: the server's time of each request (the app until its body is out)."""

    def __init__(self, app):
        self.app, self.times = app, []
        self.max_body = getattr(app, "max_body", 0)

    def __call__(self, environ, start_response):
        t = time.perf_counter()
        body = b"".join(self.app(environ, start_response))
        self.times.append(time.perf_counter() - t)
        return [body]


def measure(http: requests.Session, url: str, dashboard, repeat: int, uncached: bool, timed):
    """(round trips, server times, bytes) of `repeat` GETs of `url`."""
    times, size = [], 0
    del timed.times[:]
    for _ in range(repeat):
        if uncached:
            overview.clear_cache(dashboard)
        t = time.perf_counter()
        r = http.get(url, timeout=30)
        times.append(time.perf_counter() - t)
        assert r.status_code == 200, r.status_code
        size = len(r.content)
    return times, list(timed.times), size


def page_figures(a) -> None:
    url = a.url or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    db = open_database(url)
    db.drop_tables(list(ALL_MODELS), safe=True)
    migrations.upgrade(db)
    now = utcnow()
    t = time.perf_counter()
    build_ledger(a.jobs, a.recipients, now)
    built = time.perf_counter() - t
    if not url.startswith("mysql"):
        db.execute_sql("ANALYZE")
    config = Config.model_validate({
        "server": {"public_url": "http://127.0.0.1"},
        "security": {"encryption_key": Fernet.generate_key().decode()},
        "dashboard": {"enabled": True},
        "providers": {"local": {"maildir": tempfile.mkdtemp()}},
    })  # fmt: skip
    dashboard = Dashboard(config, utcnow)
    dashboard.health.parts(fresh=True)  # the checks are cached apart from the page's cache
    timed = Timed(make_app(handle_callback=lambda raw, sig: {}, health=lambda: (True, {}),
                           dashboard=dashboard))  # fmt: skip
    srv = HttpServer(timed, "127.0.0.1", 0)
    srv.start()
    try:
        n = Recipient.select().count()
        print(f"ledger:   {url.split(':')[0]}, {Job.select().count():,} jobs, {n:,} recipients "
              f"(built in {built:.1f} s)")  # fmt: skip
        who = {"admin": Principal("bench", "session", True, source="local"),
               "manager of company 3": Principal("carla", "session", False, (3,),
                                                 source="moodle")}  # fmt: skip
        for name, principal in who.items():
            session = dashboard.sessions.create(principal, "127.0.0.1")
            http = requests.Session()
            http.cookies.set(COOKIE, session.cookie, domain="127.0.0.1", path="/")
            for path in ("/", "/fragments/running"):
                measure(http, f"{srv.url}{path}", dashboard, 3, True, timed)  # warm up
                for label, uncached in (("uncached", True), ("cached", False)):
                    trips, server, size = measure(http, f"{srv.url}{path}", dashboard,
                                                  a.repeat, uncached, timed)  # fmt: skip
                    print(f"GET {path} as {name}, {label}, {size / 1024:.0f} KB:")
                    print(f"    server time  {percentiles(server)}")
                    print(f"    round trip   {percentiles(trips)}")
        print("target:   GET / < 100 ms (server time)")
        if a.profile:
            profile(dashboard, srv, who["admin"])
    finally:
        srv.stop()
        db.close()


def profile(dashboard, srv, principal) -> None:
    from sidecar.web.pages import PageContext

    session = dashboard.sessions.create(principal, "127.0.0.1")
    ctx = PageContext(dashboard, principal, session.csrf)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(20):
        overview.clear_cache(dashboard)
        overview.overview(ctx, None)
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


def callback_figures(a) -> None:
    import callbacks

    key = Fernet.generate_key().decode()
    security = f'encryption_key = "{key}"\n'
    dashboard = "[dashboard]\nenabled = true\n"

    def pollers(url: str, config_path: Path):
        """10 clients GET / every second until the returned function is called."""
        config = load(config_path)
        db = open_database(config.database.url)
        sessions = Sessions(cookie_key(key), config.dashboard, utcnow)
        cookie = sessions.create(Principal("bench", "session", True, source="local"),
                                 "127.0.0.1").cookie  # fmt: skip
        db.close()
        stop = threading.Event()
        times: list[float] = []

        def poll():
            http = requests.Session()
            http.cookies.set(COOKIE, cookie, domain="127.0.0.1", path="/")
            while not stop.is_set():
                t = time.perf_counter()
                r = http.get(f"{url}/", timeout=30)
                assert r.status_code == 200, r.status_code
                took = time.perf_counter() - t
                times.append(took)
                stop.wait(max(0.0, 1.0 - took))

        threads = [threading.Thread(target=poll, daemon=True) for _ in range(10)]
        for th in threads:
            th.start()
        time.sleep(1.5)  # every poller has asked once or more before the callbacks

        def after():
            stop.set()
            for th in threads:
                th.join()
            polled.append(times)

        return after

    polled: list[list[float]] = []
    without, with_ = [], []
    for _ in range(a.rounds):
        without.append(callbacks.run(a.count)["rate"])
        with_.append(callbacks.run(a.count, security=security, dashboard=dashboard,
                                   during=pollers)["rate"])  # fmt: skip
    w, d = statistics.median(without), statistics.median(with_)
    print(f"callbacks without the dashboard:         {', '.join(f'{r:,.0f}' for r in without)}"
          f" updates/s, median {w:,.0f}")  # fmt: skip
    print(f"with GET / polled 1/s by 10 clients:     {', '.join(f'{r:,.0f}' for r in with_)}"
          f" updates/s, median {d:,.0f}")  # fmt: skip
    print(f"ratio with/without:                      {d / w:.2f}x  (target >= 0.9x)")
    print(f"GET / while ingesting:                   {percentiles([t for p in polled for t in p])}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--recipients", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--count", type=int, default=50_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--skip-callbacks", action="store_true")
    a = ap.parse_args()
    page_figures(a)
    if not a.skip_callbacks:
        callback_figures(a)


if __name__ == "__main__":
    main()
