"""`moodle-offload demo`: a Moodle sandbox and the whole local path, nothing to configure.

Starts the Moodle sandbox (seeded learners with international names in a few courses),
writes a config that points at it and delivers into folders, pulls the main course's
learners and completion over REST like a real site, commits two jobs (certificates for
those who completed, reminders for the others), delivers them, serves /healthz and the
certificate links, and prints where everything is.
"""

import logging
import secrets
import socket
import tempfile
from pathlib import Path

import click

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

[providers.local]
from = "Moodle Academy <noreply@academy.example>"
maildir = "{dir}/mail"
certificate_dir = "{dir}/certificates"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(*, once: bool, workdir: str | None, learners: int, port: int, seed: int = 1) -> int:
    from moodle_ws import functions
    from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
    from sidecar.coursejobs import create_course_job
    from sidecar.daemon import Daemon
    from sidecar.localrun import deliver_job
    from sidecar.moodle import open_client, pull_course
    from sidecar.runtime import Runtime

    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="moodle-offload-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    base = base.resolve()
    site = generate_site(SiteSpec(seed=seed, learners=learners))
    sandbox = SandboxServer(site)
    sandbox.start()
    daemon = None
    try:
        port = port or free_port()
        config_path = base / "config.toml"
        config_path.write_text(
            CONFIG.format(
                moodle_url=sandbox.url, token=site.token, dir=base.as_posix(), port=port,
                secret=secrets.token_hex(16),
            ),
            encoding="utf-8",
        )  # fmt: skip
        config = load(config_path)
        rt = Runtime(config)
        rt.ready_db()
        m = config.moodle
        client = open_client(config)
        info = functions.site_info(client)
        pulled = pull_course(
            client, site.main_course_id, site=info, prefix=m.companion_prefix,
            page_size=m.page_size,
        )  # fmt: skip
        client.close()
        done = set(pulled.completions.completed)
        common = dict(
            wwwroot=m.url, sender=config.providers.local.from_,
            batch_size=config.offload.job_batch_size, now=rt.clock(),
        )  # fmt: skip
        course = pulled.course.id
        jobs = [
            create_course_job(
                pulled, done, type="certificate", template_id="completion", certificate=True,
                key=f"demo:{course}:certificate", **common,
            ),
            create_course_job(
                pulled, {u.id for u in pulled.learners} - done, type="send_reminder",
                template_id="reminder", key=f"demo:{course}:reminder:{rt.clock().date()}",
                **common,
            ),
        ]  # fmt: skip
        click.echo(
            f"moodle: {info.sitename!r} (sandbox) at {sandbox.url}: course {course} "
            f"{pulled.course.fullname!r}, {len(pulled.learners)} participants, {len(done)} "
            f"completed; {pulled.requests} Moodle requests ({pulled.completions.method})"
        )
        for label, job in zip(("certificates", "reminders"), jobs, strict=True):
            counts = deliver_job(rt, job.created.job_id)
            summary = ", ".join(f"{s} {n}" for s, n in sorted(counts.items())) or "nobody"
            click.echo(f"job {job.created.job_id} ({label}): {summary}")
        rt.close()

        daemon = Daemon(config, config_path)
        daemon.start()
        click.echo(f"mail:         {base / 'mail' / 'new'}")
        click.echo(f"certificates: {base / 'certificates' / jobs[0].created.job_id}")
        click.echo(f"dashboard:    {daemon.http.url}/healthz")
        click.echo(f"config:       {config_path}  (try: moodle-offload -c {config_path} jobs list)")
        if once:
            return 0
        click.echo("serving; Ctrl-C to stop")
        return daemon.serve_started()
    finally:
        if daemon is not None:
            daemon.runtime.stop.set()
            if daemon.http is not None:
                daemon.http.stop()
        sandbox.stop()
