"""5,000 emails end to end through the Cloudflare Worker in `wrangler dev`, against the same
Worker's sends with no idempotency record and no report.

Two `wrangler dev --local` run side by side, offline (Node.js and `npm ci --prefix
providers/cloudflare/worker` needed). Both take the same messages through the Worker's
own `POST /enqueue` (signed) into their local queue; 25 batches of 200 recipients.
- Worker: the real consumer: per 10 recipients a Durable Object claim, then the
  `send_email` simulation (it writes each email's text and HTML to files), then the
  record; one signed callback per message to a counting sidecar on 127.0.0.1. Timed
  from the enqueue until every recipient has been reported `sent`.
- Floor: the same Worker's code with a queue handler that only parses each message and
  sends every recipient through the same `send_email` binding, then acks: no Durable
  Object, no callback. Timed from the enqueue until the simulation wrote every email.
Target: Worker <= 1.3x the floor. Verified: one email file per recipient in both.
Run: python bench/cloudflare_worker.py [--emails N] [--batch-size N]
"""

import argparse
import json
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from providers.signing import sign  # noqa: E402
from tests.providers.test_cloudflare_worker import (  # noqa: E402 - the tests' harness
    SECRET,
    WORKER,
    Wrangler,
    _wrangler_bin,
    enqueue,
    make_batch,
    make_sidecar,
    messages_of,
    outcomes,
)

FLOOR_JS = """
import worker, { DeliveryLedger } from "%(src)s/index.js";
import { parseBatch } from "%(src)s/batch.js";
import { makeSender } from "%(src)s/senders.js";

export { DeliveryLedger };
export default {
  fetch: worker.fetch,
  async queue(batch, env) {
    const send = makeSender(env);
    for (const message of batch.messages) {
      const b = await parseBatch(message.body);
      for (const r of b.recipients) {
        await send({ from: b.from, reply_to: b.reply_to, to: r.email, subject: r.subject,
                     html: r.html, text: r.text, headers: {}, attachments: [],
                     idempotency_key: "" });
      }
      message.ack();
    }
  },
};
"""


@contextmanager
def worker_pair(wrangler: Path, root: Path):
    """(real, floor): the Worker as shipped and the floor Worker (no record, no report),
    each in `wrangler dev` with its own state under `root`, started together, stopped."""
    for name in ("worker", "floor"):
        (root / name).mkdir(exist_ok=True)
    real = Wrangler(wrangler, root / "worker", {"CALLBACK_SECRET": SECRET})
    floor = Wrangler(wrangler, root / "floor", {"CALLBACK_SECRET": SECRET})
    floor.config = floor_config(root / "floor")
    try:
        real.start()
        floor.start()
        real.wait_ready()
        floor.wait_ready()
        yield real, floor
    finally:
        real.stop()
        floor.stop()


def post_again(url: str, captured: list[bytes]) -> float:
    """Seconds bare `requests` takes to post captured /enqueue bodies again to `url`, each
    with a fresh timestamp and signature (the Worker refuses a stale one)."""
    messages = [json.loads(body)["messages"] for body in captured]  # untimed
    session = requests.Session()
    started = time.perf_counter()
    for batch in messages:
        body = json.dumps({"schema": "offload.enqueue.v1", "timestamp": int(time.time()),
                           "messages": batch}, ensure_ascii=False,
                          separators=(",", ":")).encode()  # fmt: skip
        resp = session.post(url, data=body, timeout=120,
                            headers={"Content-Type": "application/json",
                                     "X-Signature": sign(SECRET, body)})  # fmt: skip
        assert resp.status_code == 200, (resp.status_code, resp.text[:300])
    elapsed = time.perf_counter() - started
    session.close()
    return elapsed


def floor_config(home: Path) -> Path:
    """The Worker's wrangler.jsonc with `main` pointing at the floor's queue handler."""
    (home / "floor.js").write_text(FLOOR_JS % {"src": WORKER / "src"})
    text = re.sub(r"^\s*//.*$", "", (WORKER / "wrangler.jsonc").read_text(), flags=re.M)
    config = json.loads(text)
    config.pop("$schema", None)
    config["main"] = "floor.js"
    (home / "wrangler.jsonc").write_text(json.dumps(config))
    return home / "wrangler.jsonc"


def email_files(worker: Wrangler) -> int:
    return sum(1 for _ in (worker.home / "tmp").glob("**/email-html/*.html"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--emails", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=200)
    args = ap.parse_args()
    sidecar, callback_url, callbacks = make_sidecar()
    wrangler = _wrangler_bin()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with worker_pair(wrangler, root) as (real, floor):
            addresses = [f"learner{i}@school.example.org" for i in range(args.emails)]
            batches = [
                make_batch(callback_url, addresses[i : i + args.batch_size], first_userid=1001 + i)
                for i in range(0, args.emails, args.batch_size)
            ]
            messages = [m for b in batches for m in messages_of(b)]
            print(f"{args.emails} emails, {len(batches)} batches, {len(messages)} messages")

            started = time.monotonic()
            status, answer = enqueue(floor, messages)
            assert status == 200, answer
            while email_files(floor) < args.emails:
                time.sleep(0.05)
            floor_s = time.monotonic() - started
            print(f"floor (parse + send_email, no record, no report): {floor_s:.2f} s, "
                  f"{args.emails / floor_s:.0f} emails/s")  # fmt: skip

            started = time.monotonic()
            status, answer = enqueue(real, messages)
            assert status == 200, answer
            for b in batches:
                wanted = {r["userid"] for r in b["recipients"]}
                callbacks.wait(
                    lambda _, b=b, wanted=wanted: (
                        wanted
                        <= {
                            u.userid
                            for u in outcomes(callbacks, b["batch_id"])
                            if u.status == "sent"
                        }
                    ),
                    timeout=600,
                )
            real_s = time.monotonic() - started
            print(f"Worker (claim, send_email, record, signed callback): {real_s:.2f} s, "
                  f"{args.emails / real_s:.0f} emails/s")  # fmt: skip
            assert email_files(real) == args.emails == email_files(floor)
            ratio = real_s / floor_s
            verdict = "meets" if ratio <= 1.3 else "misses"
            print(f"ratio {ratio:.2f}x the floor: {verdict} the target (<= 1.3x)")
    sidecar.shutdown()


if __name__ == "__main__":
    main()
