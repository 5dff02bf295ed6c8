"""5,000 welcome emails with new temporary passwords, local route, to an SMTP sink.

The users are created in the Moodle sandbox (over HTTP, as a site would hold them), then
`send welcome --since` runs in this process: preview (companion get_new_users), commit,
delivery (a password per user, set in Moodle, sealed in the ledger, mailed, erased).
Prints the Moodle requests by function and the wall time of each step.
Target: Moodle requests <= 1 per 100 users (the password updates batched, not one per user).
Run: python bench/welcome.py [--users N]
"""

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from aiosmtpd.controller import Controller
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.smtp import Sink, free_port  # noqa: E402 - the SMTP bench's counting sink
from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site  # noqa: E402
from moodle_ws.sandbox.model import User  # noqa: E402
from sidecar import welcome  # noqa: E402
from sidecar.config import Config  # noqa: E402
from sidecar.localrun import deliver_job  # noqa: E402
from sidecar.moodle import open_client  # noqa: E402
from sidecar.runtime import Runtime  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=5000)
    args = ap.parse_args()
    site = generate_site(SiteSpec(seed=3, learners=20, courses=1, companies=1))
    since = site.now() - 60
    for i in range(args.users):
        uid = site.new_id("user") + 100_000
        site.add_user(User(id=uid, username=f"bench{i}", password="Old-pass-1", firstname=f"B{i}",
                           lastname="Ench", email=f"bench{i}@example.org",
                           timecreated=site.now()))  # fmt: skip
    sink = Sink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    with SandboxServer(site) as server, tempfile.TemporaryDirectory() as tmp:
        config = Config.model_validate({
            "moodle": {"url": server.url, "token": site.token},
            "database": {"url": f"sqlite:///{tmp}/offload.db"},
            "security": {"encryption_key": Fernet.generate_key().decode()},
            "providers": {"local": {"smtp_host": "127.0.0.1", "smtp_port": smtp.port,
                                    "smtp_security": "none", "from": "Academy <a@example.org>",
                                    "certificate_dir": f"{tmp}/certs"}},
        })  # fmt: skip
        rt = Runtime(config)
        rt.ready_db()
        site.reset_counts()
        t0 = time.perf_counter()
        client = open_client(config)
        source = welcome.Source(since=datetime.fromtimestamp(since, UTC).replace(tzinfo=None),
                                since_text="1m")  # fmt: skip
        pv = welcome.preview(config, client, rt.renderer, source, rt.clock())
        client.close()
        t1 = time.perf_counter()
        created = welcome.commit(pv, batch_size=config.offload.job_batch_size, sender="",
                                 now=rt.clock())  # fmt: skip
        t2 = time.perf_counter()
        counts = deliver_job(rt, created.job_id, show_progress=False)
        t3 = time.perf_counter()
        rt.close()
    smtp.stop()
    n = args.users
    requests = site.request_count
    print(f"welcome: {n} users, {len(pv.recipients)} previewed, delivered {counts}")
    print(f"emails at the sink: {sink.count}")
    print(f"Moodle requests: {requests} ({requests / n * 100:.2f} per 100 users; target <= 1)")
    for name, k in sorted(site.requests_by_function.items()):
        print(f"  {name}: {k}")
    rate = n / (t3 - t2)
    print(f"wall time: preview {t1 - t0:.2f} s, commit {t2 - t1:.2f} s, "
          f"deliver {t3 - t2:.2f} s ({rate:.0f} emails/s), total {t3 - t0:.2f} s")  # fmt: skip
    changed = sum(1 for u in site.users.values() if u.username.startswith("bench")
                  and u.password != "Old-pass-1")  # fmt: skip
    print(f"passwords changed in Moodle: {changed}")


if __name__ == "__main__":
    main()
