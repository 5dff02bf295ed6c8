"""What one schedule run costs Moodle: requests and response bytes, by function.

A daily reminder to every participant of one course, stopped by course completion (the
usual schedule; with `--no-suppression` it is not, so completion is not read), prepared
as `schedules run ID --dry-run` prepares it, against the Moodle sandbox. The figures are
the sandbox's own counters (what Moodle served); docs/moodle.md quotes them.

    python bench/schedule_run.py [--learners 5000 50000] [--no-companion] [--no-suppression]
"""

import argparse
import tempfile
from datetime import datetime
from pathlib import Path


def measure(learners: int, companion: bool, suppress: bool) -> None:
    from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
    from schedules.model import Schedule
    from sidecar import runs, sync
    from sidecar.config import Config
    from sidecar.db.models import ScheduleRecord
    from sidecar.moodle import open_client
    from sidecar.runtime import Runtime

    site = generate_site(SiteSpec(seed=1, learners=learners, courses=1))
    if not companion:
        site.remove_function(f"{site.companion_prefix}_get_course_completions")
    site.schedules[:] = [dict(
        id=1, name="Daily reminder", enabled=1, companyid=0, courseid=site.main_course_id,
        frequency="daily", custom_interval=0, timeofday=9 * 3600, weekday=1, monthday=1,
        action_type="email", cloud_preference="local", suppresstarget=0,
        suppress_course_completion=int(suppress), audience="enrolled", inactive_days=0,
        template_id="reminder_v1", subject="", timemodified=1764547200,
    )]  # fmt: skip
    with SandboxServer(site) as server, tempfile.TemporaryDirectory() as tmp:
        config = Config.model_validate({
            "moodle": {"url": server.url, "token": site.token},
            "database": {"url": f"sqlite:///{Path(tmp) / 'offload.db'}"},
            "schedules": {"timezone": "UTC"},
            "providers": {"local": {"from": "Academy <noreply@academy.example>",
                                    "maildir": str(Path(tmp) / "mail")}},
        })  # fmt: skip
        rt = Runtime(config, clock=lambda: datetime(2026, 12, 1, 8, 0))
        rt.ready_db()
        sync.sync_all(config, lambda: open_client(config), rt.clock())
        record = ScheduleRecord.get()
        site.reset_counts()
        outcome = runs.Runner(rt).prepare(Schedule.from_remote(record.data, "moodle"), rt.clock())
        rt.close()
    print(f"{learners} learners, {outcome.recipients} recipients, completion by "
          f"{outcome.counts['completion_method']}: {site.request_count} requests, "
          f"{site.bytes_served / 1e6:.1f} MB")  # fmt: skip
    for function, n in sorted(site.requests_by_function.items()):
        size = site.bytes_by_function[function]
        print(f"  {function:55} {n:>5} requests {size / 1e3:>9.0f} KB "
              f"({size / n / 1e3:.0f} KB each)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--learners", type=int, nargs="+", default=[5_000, 50_000])
    ap.add_argument("--no-companion", action="store_true", help="completion batched instead")
    ap.add_argument("--no-suppression", action="store_true",
                    help="remind every participant: completion is not read")  # fmt: skip
    args = ap.parse_args()
    for n in args.learners:
        measure(n, not args.no_companion, not args.no_suppression)


if __name__ == "__main__":
    main()
