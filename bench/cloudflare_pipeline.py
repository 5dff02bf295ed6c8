"""5,000 emails end to end through the cloudflare route in `wrangler dev` (sidecar → Worker's
/enqueue → queue → Worker → `send_email` simulation → signed callbacks → ledger), against
the same Worker's code sending the same emails with no idempotency record and no report.

Two `wrangler dev --local` run side by side, offline (Node.js and `npm ci --prefix
providers/cloudflare/worker` needed), started before anything is timed:
- the real Worker, and a real `sidecar.daemon.Daemon` in this process (SQLite ledger,
  `[providers.cloudflare] worker_url`, its HTTP server on 127.0.0.1 taking the Worker's
  `/callback`). The job (5,000 recipients, batches of 200) is created in the ledger
  first, untimed. Timed: from `Daemon.start()` until every recipient is `sent` in the
  ledger: the daemon renders and submits the batches (signed `POST /enqueue`), the
  Worker's consumer claims each recipient in its Durable Object, sends through the
  `send_email` simulation (it writes each email's text and HTML to files), records it
  and POSTs one signed callback per message, which the daemon applies to the ledger.
- the floor: the same Worker with bench/cloudflare_worker.py's floor queue handler (it
  only parses each message, sends every recipient through the same `send_email` binding
  and acks: no Durable Object, no callback). The exact /enqueue bodies the daemon posted
  (captured) are posted to it again, each with a fresh timestamp and signature. Timed
  from the first post until the simulation wrote every email.
Target: end to end <= 1.3x the floor. Verified: one email file per recipient in both.
Run: python bench/cloudflare_pipeline.py [--recipients N] [--batch-size N]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.aws_submit import create  # noqa: E402
from bench.cloudflare_worker import email_files, post_again, worker_pair  # noqa: E402
from sidecar.config import load  # noqa: E402
from sidecar.daemon import Daemon  # noqa: E402
from sidecar.db.models import Recipient  # noqa: E402
from sidecar.status import RecipientStatus  # noqa: E402
from tests.motoserver import free_port  # noqa: E402
from tests.providers.test_cloudflare_worker import SECRET, Wrangler, _wrangler_bin  # noqa: E402

TIMEOUT = 900.0


def write_config(tmp: Path, worker_url: str, batch_size: int) -> Path:
    port = free_port()
    path = tmp / "offload.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///{tmp}/ledger.db"\n'
        f'[server]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n'
        f'[security]\ncallback_secrets = ["{SECRET}"]\n'
        '[offload]\nenabled = true\nprovider = "cloudflare"\n'
        f"job_batch_size = {batch_size}\n"
        f'[providers.cloudflare]\nworker_url = "{worker_url}"\n'
        'from = "Academy <noreply@academy.example.org>"\n'
        f'[providers.local]\nmaildir = "{tmp}/mail"\ncertificate_dir = "{tmp}/certs"\n'
        "[unsubscribe]\nenabled = false\n"  # no encryption key here to sign the links
    )
    return path


def sent(rt, job_id: str) -> int:
    with rt.db.connection_context():
        return (
            Recipient.select()
            .where(Recipient.job == job_id, Recipient.status == RecipientStatus.SENT)
            .count()
        )


def end_to_end(tmp: Path, worker: Wrangler, args) -> tuple[float, list[bytes], int]:
    """Seconds from Daemon.start() until every recipient is sent in the ledger; the
    /enqueue bodies the daemon posted; the batches."""
    path = write_config(tmp, worker.url, args.batch_size)
    daemon = Daemon(load(path), path, poll_interval=0.2)
    rt = daemon.runtime
    rt.upgrade()
    with rt.db.connection_context():
        created = create(args.recipients, args.batch_size, route="cloudflare", now=rt.clock())
    captured: list[bytes] = []
    queue = rt.cloudflare.queue
    post = queue.http.post

    def record(what, url, *, data, headers):
        captured.append(data)
        return post(what, url, data=data, headers=headers)

    queue.http.post = record
    try:
        started = time.perf_counter()
        daemon.start(schedules=False)
        deadline = time.monotonic() + TIMEOUT
        while sent(rt, created.job_id) < created.pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"{sent(rt, created.job_id)} of {created.pending} sent "
                                     f"in {TIMEOUT:.0f} s")  # fmt: skip
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        daemon.shutdown()
    return elapsed, captured, created.batches


def floor_run(floor: Wrangler, captured: list[bytes], n: int) -> float:
    """Seconds from posting the captured bodies (re-signed) to the floor Worker until its
    `send_email` simulation wrote n emails."""
    started = time.perf_counter()
    post_again(f"{floor.url}/enqueue", captured)
    deadline = time.monotonic() + TIMEOUT
    while email_files(floor) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"floor: {email_files(floor)} of {n} emails in {TIMEOUT:.0f} s")
        time.sleep(0.05)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=200)
    args = ap.parse_args()
    wrangler = _wrangler_bin()
    with tempfile.TemporaryDirectory(prefix="bench-cf-pipeline-") as tmpdir:
        root = Path(tmpdir)
        (root / "sidecar").mkdir()
        with worker_pair(wrangler, root) as (real, floor):
            ours, captured, batches = end_to_end(root / "sidecar", real, args)
            messages = sum(len(json.loads(b)["messages"]) for b in captured)
            print(f"{args.recipients} emails, {batches} batches, {messages} messages "
                  f"in {len(captured)} POST /enqueue")  # fmt: skip
            print(f"end to end (daemon render + submit, Worker claim + send_email + record, "
                  f"signed callbacks, ledger): {ours:.2f} s, "
                  f"{args.recipients / ours:.0f} emails/s")  # fmt: skip
            floor_s = floor_run(floor, captured, args.recipients)
            print(f"floor (same bodies, parse + send_email, no record, no callback): "
                  f"{floor_s:.2f} s, {args.recipients / floor_s:.0f} emails/s")  # fmt: skip
            got = (email_files(real), email_files(floor))
            assert got == (args.recipients, args.recipients), f"email files (real, floor): {got}"
            ratio = ours / floor_s
            verdict = "meets" if ratio <= 1.3 else "misses"
            print(f"ratio {ratio:.2f}x the floor: {verdict} the target (<= 1.3x)")


if __name__ == "__main__":
    main()
