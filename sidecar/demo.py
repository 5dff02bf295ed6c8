"""`moodle-offload demo`: everything local, nothing to configure.

Writes a sample CSV of learners (international names included), a config that delivers
into a mail folder and a PDF folder, sends the CSV through the same path as
`send csv`, serves /healthz and the certificate links, and prints where things are.
"""

import csv
import logging
import socket
import tempfile
import time
from pathlib import Path

import click

from sidecar.config import load
from sidecar.runtime import Runtime

log = logging.getLogger(__name__)

NAMES = [
    ("Łukasz", "Żółć"),
    ("Дмитрий", "Иванов"),
    ("Ελένη", "Παπαδοπούλου"),
    ("Aoife", "O'Brien"),
    ("José", "Núñez"),
    ("Zoë", "Brontë"),
    ("Søren", "Kierkegård"),
    ("Ana", "Silva"),
    ("Mehmet", "Yılmaz"),
    ("Chloé", "Dubois"),
]

CONFIG = """\
# Written by `moodle-offload demo`: local delivery into folders, SQLite.
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

MESSAGE = """\
Dear {{ learner.firstname }},

Congratulations on completing {{ course_name }}. Your certificate is attached and can be
downloaded again at any time: {{ certificate_url }}

The Academy team
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_sample(path: Path, learners: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["userid", "email", "firstname", "lastname", "course_name"])
        for i in range(learners):
            first, last = NAMES[i % len(NAMES)]
            w.writerow([1001 + i, f"learner{1001 + i}@example.org", first, last, "Safety at Work 101"])


def run_demo(*, once: bool, workdir: str | None, learners: int, port: int) -> int:
    import secrets

    from sidecar import sendcsv
    from sidecar.daemon import Daemon
    from sidecar.localrun import deliver_job

    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="moodle-offload-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    base = base.resolve()
    port = port or free_port()
    config_path = base / "config.toml"
    config_path.write_text(
        CONFIG.format(dir=base.as_posix(), port=port, secret=secrets.token_hex(16)),
        encoding="utf-8",
    )
    sample = base / "learners.csv"
    write_sample(sample, learners)
    (base / "message.txt").write_text(MESSAGE, encoding="utf-8")

    config = load(config_path)
    rt = Runtime(config)
    rt.ready_db()
    message = sendcsv.CsvMessage(
        template_id="custom",
        subject="Your certificate for {{ course_name }}",
        body=MESSAGE,
        certificate=True,
        key=f"demo-{int(time.time())}",
    )
    pv = sendcsv.preview(sample, message, rt.renderer)
    created = sendcsv.commit(
        pv, skip_invalid=False, batch_size=config.offload.job_batch_size,
        sender=config.providers.local.from_, now=rt.clock(),
    )  # fmt: skip
    counts = deliver_job(rt, created.job_id)
    rt.close()

    daemon = Daemon(config, config_path)
    daemon.start()
    url = daemon.http.url
    click.echo(f"job {created.job_id}: " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))
    click.echo(f"mail:         {base / 'mail' / 'new'}")
    click.echo(f"certificates: {base / 'certificates' / created.job_id}")
    click.echo(f"dashboard:    {url}/healthz")
    click.echo(f"config:       {config_path}  (try: moodle-offload -c {config_path} jobs list)")
    try:
        if once:
            return 0
        click.echo("serving; Ctrl-C to stop")
        return daemon.serve_started()
    finally:
        daemon.runtime.stop.set()
        if daemon.http is not None:
            daemon.http.stop()
