"""Apply 50,000 recipient updates through signed HTTP callbacks of 200 updates each.

A real `moodle-offload run` process serves /callback on 127.0.0.1; this script sends
the callbacks from a few client threads and waits until the ledger holds every update.
Prints updates/s end to end (target >= 20,000/s), the floor (HMAC + json.loads of the
same bodies, per update) and the daemon's peak RSS. Run: python bench/callbacks.py
"""

import argparse
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sidecar import jobs  # noqa: E402
from sidecar.db import migrations  # noqa: E402
from sidecar.db.connect import open_database  # noqa: E402
from sidecar.db.models import Batch, Recipient  # noqa: E402

SECRET = "bench-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=50_000)
    ap.add_argument("--per-callback", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    r = run(args.count, args.per_callback, args.clients)
    n = args.count
    print(f"callbacks:              {r['callbacks']} of {args.per_callback} updates, "
          f"{r['body_kb']} KB each")  # fmt: skip
    print(f"accepted / in ledger:   {r['accepted']} / {r['sent']} (of {n})")
    print(f"end to end:             {r['wall']:.2f} s = {r['rate']:,.0f} updates/s  "
          f"(target >= 20,000/s)")  # fmt: skip
    print(f"floor (HMAC + json):    {r['floor']:.3f} s = {n / r['floor']:,.0f} updates/s")
    print(f"ratio floor/e2e:        {r['wall'] / r['floor']:.1f}x")
    print(f"daemon peak RSS:        {r['rss_kb'] / 1024:.0f} MB")


def run(count: int = 50_000, per_callback: int = 200, clients: int = 4, *,
        security: str = "", dashboard: str = "", during=None, setup=None) -> dict:  # fmt: skip
    """One run on a fresh ledger. `security`: more lines of [security]; `dashboard`: more
    config at the end (e.g. a [dashboard] section); `setup(db_url)`: called on the fresh
    ledger before the daemon starts (bench/retention.py fills it);
    `during(url, config_path)`: called when the daemon is up and before the callbacks, it
    returns a function called after them (bench/overview.py polls the dashboard)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-callbacks-"))
    port = free_port()
    config = tmp / "config.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp}/offload.db"\n[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[security]\ncallback_secrets = ["{SECRET}"]\n{security}'
        f'[providers.local]\nmaildir = "{tmp}/mail"\ncertificate_dir = "{tmp}/certs"\n{dashboard}'
    )
    db = open_database(f"sqlite:///{tmp}/offload.db")
    migrations.upgrade(db)
    if setup is not None:
        setup(f"sqlite:///{tmp}/offload.db")
        db = open_database(f"sqlite:///{tmp}/offload.db")
    now = datetime.now(UTC).replace(tzinfo=None)
    people = [jobs.RecipientIn(i, f"u{i}@example.org", "F", "L") for i in range(1, count + 1)]
    spec = jobs.JobSpec(type="send_reminder", template_id="reminder", source="bench", route="aws")
    created = jobs.create_job(spec, people, batch_size=per_callback, now=now)
    Batch.update(status="queued").where(Batch.job == created.job_id).execute()
    Recipient.update(status="queued").where(Recipient.job == created.job_id).execute()
    batches = []
    for b in Batch.select().where(Batch.job == created.job_id).order_by(Batch.index):
        query = Recipient.select(Recipient.userid).where(Recipient.batch == b.id)
        batches.append((b.id, [uid for (uid,) in query.tuples()]))
    db.close()

    ts = int(time.time())
    bodies = []
    for batch_id, userids in batches:
        updates = [
            {"userid": u, "status": "sent", "external_id": f"0100018c-{u:012d}-ses-message-id",
             "certificate_key": f"certs/2025/{created.job_id}/{u}.pdf", "timesent": ts}
            for u in userids
        ]  # fmt: skip
        raw = json.dumps({"schema": "offload.callback.v1", "callback_id": str(uuid.uuid4()),
                          "job_id": created.job_id, "batch_id": batch_id,
                          "recipient_updates": updates, "timestamp": ts}).encode()  # fmt: skip
        bodies.append((raw, hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()))

    # Floor: verify + parse each body once, in this process.
    t = time.perf_counter()
    for raw, _ in bodies:
        hmac.compare_digest(hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest(), _)
        json.loads(raw)
    floor = time.perf_counter() - t

    env = dict(os.environ, PYTHONPATH=str(ROOT), MOODLE_OFFLOAD_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "sidecar", "-c", str(config), "run"], env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            requests.get(f"{url}/healthz", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.05)
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=clients))

    def post(item):
        raw, sig = item
        r = session.post(
            f"{url}/callback",
            data=raw,
            timeout=60,
            headers={"Content-Type": "application/json", "X-Signature": sig},
        )
        r.raise_for_status()
        return r.json()["accepted"]

    after = during(url, config) if during else None
    try:
        t = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            accepted = sum(pool.map(post, bodies))
        wall = time.perf_counter() - t
        status = open(f"/proc/{proc.pid}/status").read()
        rss = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
    finally:
        if after:
            after()
        proc.terminate()
        proc.wait(timeout=60)

    db = open_database(f"sqlite:///{tmp}/offload.db")
    sent = (
        Recipient.select()
        .where(Recipient.job == created.job_id, Recipient.status == "sent")
        .count()
    )
    db.close()
    return {"callbacks": len(bodies), "body_kb": len(bodies[0][0]) // 1024, "accepted": accepted,
            "sent": sent, "wall": wall, "rate": count / wall, "floor": floor,
            "rss_kb": int(rss)}  # fmt: skip


if __name__ == "__main__":
    main()
