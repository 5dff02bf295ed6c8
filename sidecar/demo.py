"""`moodle-offload demo`: a Moodle sandbox and the whole local path, nothing to configure.

Starts the Moodle sandbox (seeded learners with international names in a few courses),
writes a config that points at it and delivers into folders, syncs the site's schedules
and fires two of them at once — a reminder to every participant, suppressed for those who
completed the course, and certificates for those who completed — each pulling learners
and completion over REST like a real site; delivers the jobs and prints where the mail and
the certificates are. Without --once it then serves /healthz and the certificate links.
"""

import logging
import secrets
import socket
import tempfile
from pathlib import Path

import click
from cryptography.fernet import Fernet

from sidecar.config import load

log = logging.getLogger(__name__)

CONFIG = """\
# Written by `moodle-offload demo`: the Moodle sandbox, local delivery into folders, SQLite.
[moodle]
url = "{moodle_url}"
token = "{token}"

[database]
url = "sqlite:///{dir}/offload.db"

[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[security]
callback_secrets = ["{secret}"]
encryption_key = "{fernet_key}"

[providers.local]
from = "Moodle Academy <noreply@academy.example>"
maildir = "{dir}/mail"
certificate_dir = "{dir}/certificates"
"""


DEMO_REMINDER, DEMO_CERTIFICATES = 101, 102


def demo_schedules(site) -> list[dict]:
    """The demo's two schedules on the main course, fired at start."""
    base = dict(
        enabled=1, companyid=0, courseid=site.main_course_id, custom_interval=0, weekday=1,
        monthday=1, cloud_preference="auto", suppresstarget=0, inactive_days=0,
        timemodified=int(site.base_now),
    )  # fmt: skip
    return [
        dict(
            base,
            id=DEMO_REMINDER,
            name="Weekly reminder until completed",
            frequency="weekly",
            timeofday=9 * 3600,
            action_type="email",
            suppress_course_completion=1,
            audience="enrolled",
            template_id="reminder",
            subject="",
        ),
        dict(
            base,
            id=DEMO_CERTIFICATES,
            name="Certificates for completers",
            frequency="daily",
            timeofday=18 * 3600,
            action_type="certificate",
            suppress_course_completion=0,
            audience="completed",
            template_id="completion",
            subject="",
        ),
    ] + [s for s in site.schedules if s["id"] not in (DEMO_REMINDER, DEMO_CERTIFICATES)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(*, once: bool, workdir: str | None, learners: int, port: int, seed: int = 1) -> int:
    from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
    from sidecar import sync
    from sidecar.daemon import Daemon
    from sidecar.localrun import deliver_job
    from sidecar.moodle import open_client
    from sidecar.runs import Runner
    from sidecar.runtime import Runtime
    from sidecar.schedulelist import find_schedule

    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="moodle-offload-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    base = base.resolve()
    site = generate_site(SiteSpec(seed=seed, learners=learners))
    site.schedules[:] = demo_schedules(site)
    sandbox = SandboxServer(site)
    sandbox.start()
    daemon = None
    try:
        port = port or free_port()
        config_path = base / "config.toml"
        config_path.write_text(
            CONFIG.format(
                moodle_url=sandbox.url, token=site.token, dir=base.as_posix(), port=port,
                secret=secrets.token_hex(16), fernet_key=Fernet.generate_key().decode(),
            ),
            encoding="utf-8",
        )  # fmt: skip
        config = load(config_path)
        rt = Runtime(config)
        rt.ready_db()
        for result in sync.sync_all(config, lambda: open_client(config), rt.clock()):
            click.echo(f"schedules: {result.summary}")
        runner = Runner(rt)
        jobs: dict[str, str] = {}
        for schedule_id, label in (
            (DEMO_REMINDER, "reminders"),
            (DEMO_CERTIFICATES, "certificates"),
        ):
            outcome = runner.fire_now(find_schedule(schedule_id, "moodle"))
            click.echo(outcome.summary)
            for job_id in outcome.jobs:
                counts = deliver_job(rt, job_id)
                summary = ", ".join(f"{s} {n}" for s, n in sorted(counts.items())) or "nobody"
                click.echo(f"job {job_id} ({label}): {summary}")
                jobs[label] = job_id
        rt.close()

        click.echo(f"mail:         {base / 'mail' / 'new'}")
        click.echo(f"certificates: {base / 'certificates' / jobs.get('certificates', '')}")
        click.echo(f"config:       {config_path}  (try: moodle-offload -c {config_path} jobs list)")
        if once:
            return 0  # only what is still there once we exit: no URL of a stopped server
        daemon = Daemon(config, config_path)
        daemon.start(schedules=True)
        click.echo(f"health:       {daemon.http.url}/healthz")
        click.echo("serving; Ctrl-C to stop")
        return daemon.serve_started()
    finally:
        if daemon is not None:
            daemon.shutdown()
        sandbox.stop()
