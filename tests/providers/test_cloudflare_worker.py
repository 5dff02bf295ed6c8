"""The Cloudflare Worker (providers/cloudflare/worker) run offline in `wrangler dev`.

wrangler dev runs the Worker in workerd with local Queues (retries, dead-letter queue), R2,
the Durable Object and a simulated `send_email` binding that writes each email's text and
HTML to files under `$TMPDIR/miniflare-*/files/`. Three `wrangler dev` start once for the
module (see `workers`): one sends through that binding, two through HTTP email APIs
(Resend's and SendGrid's shapes) faked on 127.0.0.1; the Resend one reports onto the
results queue, which a relay Worker in the same runtime reads. A small HTTP server stands
in for the sidecar's `/callback`; every callback's signature is checked with
`providers.signing`. Nothing leaves 127.0.0.1: no login, no Cloudflare account
(`CLOUDFLARE_CF_FETCH_ENABLED=false` stops the one lookup wrangler makes).

Needs Node.js and the worker's npm packages (`npm ci --prefix providers/cloudflare/worker`,
run here when they are missing); without `node`/`npm` the module is skipped, unless
MOODLE_OFFLOAD_REQUIRE_NODE=1 (CI) turns that into a failure.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from providers.message import build_batch_messages, parse_callback
from providers.signing import sign, verify
from tests.motoserver import free_port

WORKER = Path(__file__).resolve().parents[2] / "providers" / "cloudflare" / "worker"
SECRET = "cf-callback-secret-8f41c2"
SENDER = "noreply@offload.example.org"
MAX_MESSAGE_BYTES = 127_900
REQUIRE = os.environ.get("MOODLE_OFFLOAD_REQUIRE_NODE") == "1"


def _missing(reason: str):
    if REQUIRE:
        pytest.fail(f"{reason} (MOODLE_OFFLOAD_REQUIRE_NODE=1)")
    pytest.skip(reason)


def _wrangler_bin() -> Path:
    """The worker's pinned wrangler, installed from package-lock.json when missing."""
    if not (shutil.which("node") and shutil.which("npm")):
        _missing("node/npm not found: the Cloudflare Worker tests need Node.js 20")
    wrangler = WORKER / "node_modules" / "wrangler" / "bin" / "wrangler.js"
    if not wrangler.exists():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"],
            cwd=WORKER, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if done.returncode != 0 or not wrangler.exists():
            _missing(f"npm ci in {WORKER.name} failed: {done.stderr.strip()[-300:]}")
    return wrangler


# --- servers the test runs on 127.0.0.1 --------------------------------------------------


class Recorder:
    """What an HTTP server the test runs has received, waited on without sleeping blind."""

    def __init__(self):
        self.items: list = []
        self.cond = threading.Condition()

    def add(self, item) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[list], bool], timeout: float = 60.0) -> list:
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(list(self.items)), timeout):
                raise AssertionError(f"not seen within {timeout} s; got {len(self.items)} items")
            return list(self.items)

    def snapshot(self) -> list:
        with self.cond:
            return list(self.items)


def serve(handler_class) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def make_sidecar() -> tuple[ThreadingHTTPServer, str, Recorder]:
    """The sidecar's POST /callback: records each (raw body, X-Signature), answers 200.
    What the relay Worker reads from the dead-letter queue arrives at /dead-letter and is
    recorded in the Recorder's `dead`."""
    received = Recorder()
    received.dead = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/dead-letter":
                received.dead.add(json.loads(raw))
            else:
                received.add((raw, self.headers.get("X-Signature")))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"accepted": 1, "ignored": 0}')

        def log_message(self, *args):
            pass

    server, url = serve(Handler)
    return server, url + "/callback", received


def make_email_api() -> tuple[ThreadingHTTPServer, str, Recorder, threading.Event]:
    """A fake of Resend's POST /emails and SendGrid's POST /v3/mail/send. The address's
    local part decides the answer: `throttled-*` gets 429 (Retry-After: 1) the first time
    and success after, `rejected-*` gets 400, `hang-*` is recorded (status None) and
    answered only once the returned event is set; anything else succeeds (Resend: 200
    with an id; SendGrid: 202 with X-Message-Id). Records what each request carried."""
    received = Recorder()
    release = threading.Event()
    seen: dict[str, int] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            sendgrid = self.path == "/v3/mail/send"
            mail = json.loads(raw)
            to = mail["personalizations"][0]["to"][0]["email"] if sendgrid else mail["to"][0]
            with lock:
                seen[to] = seen.get(to, 0) + 1
                first = seen[to] == 1
            if to.startswith("hang-"):
                received.add({"to": to, "status": None, "key": self.headers.get("Idempotency-Key")})
                release.wait(60)
                return  # the connection closes unanswered
            if to.startswith("throttled-") and first:
                status, body, extra = 429, {"message": "Too many requests"}, {"Retry-After": "1"}
            elif to.startswith("rejected-"):
                status, body, extra = 400, {"message": "Invalid `to` field"}, {}
            elif sendgrid:
                status, body, extra = 202, {}, {"X-Message-Id": f"sg-{uuid.uuid4().hex[:12]}"}
            else:
                status, body, extra = 200, {"id": str(uuid.uuid4())}, {}
            received.add({"to": to, "status": status, "key": self.headers.get("Idempotency-Key"),
                          "auth": self.headers.get("Authorization"), "path": self.path,
                          "mail": mail, "at": time.monotonic()})  # fmt: skip
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *args):
            pass

    server, url = serve(Handler)
    return server, url, received, release


# --- wrangler dev ------------------------------------------------------------------------


class Wrangler:
    """One `wrangler dev` of the worker, local mode, its state and temp files in `home`."""

    def __init__(
        self, wrangler: Path, home: Path, variables: dict[str, str], extra: list[Path] = ()
    ):
        self.wrangler, self.home, self.variables, self.extra = wrangler, home, variables, extra
        self.config = WORKER / "wrangler.jsonc"
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> None:
        port, inspector = free_port(), free_port()
        self.url = f"http://127.0.0.1:{port}"
        tmp = self.home / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "TMPDIR": str(tmp),
            "CLOUDFLARE_CF_FETCH_ENABLED": "false",
            "WRANGLER_SEND_METRICS": "false",
            "WRANGLER_HIDE_BANNER": "true",
            "NO_COLOR": "1",
            "CI": "true",
        }
        args = ["node", str(self.wrangler), "dev", "--local", "--ip", "127.0.0.1",
                "--port", str(port), "--inspector-port", str(inspector),
                "--persist-to", str(self.home / "state"), "--show-interactive-dev-session=false",
                "--log-level", "log", "-c", str(self.config)]  # fmt: skip
        for config in self.extra:  # more Workers in the same local runtime (shared queues)
            args += ["-c", str(config)]
        for name, value in self.variables.items():
            args += ["--var", f"{name}:{value}"]
        self.log = open(self.home / "wrangler.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            args, cwd=WORKER, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"wrangler dev exited {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"wrangler dev not ready in {timeout} s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        self.log.close()

    def tail(self) -> str:
        return self.log_text()[-3000:]

    def log_text(self) -> str:
        return (self.home / "wrangler.log").read_text(errors="replace")

    def put_object(self, key: str, data: bytes) -> None:
        """Store `data` in the local R2 bucket (the sidecar does it through R2's S3 API)."""
        path = "/cdn-cgi/explorer/api/r2/buckets/offload-certificates/objects/"
        status, answer = self.request("PUT", path + urllib.parse.quote(key, safe=""), data,
                                      {"Content-Type": "application/pdf"})  # fmt: skip
        assert status == 200 and answer["success"], answer

    def attachments(self) -> list[bytes]:
        """Every attachment the `send_email` simulation wrote so far."""
        pattern = str(self.home / "tmp" / "**" / "email-attachment" / "*")
        return [Path(p).read_bytes() for p in glob.glob(pattern, recursive=True)]

    def emails(self) -> list[str]:
        """The HTML of every email the `send_email` simulation wrote so far."""
        pattern = str(self.home / "tmp" / "**" / "email-html" / "*.html")
        return [Path(p).read_text() for p in glob.glob(pattern, recursive=True)]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict]:  # fmt: skip
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers=headers or {})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def servers():
    sidecar, callback_url, callbacks = make_sidecar()
    api, api_url, api_calls, release = make_email_api()
    yield {"callback_url": callback_url, "callbacks": callbacks,
           "api_url": api_url, "api_calls": api_calls, "release": release}  # fmt: skip
    release.set()
    sidecar.shutdown()
    api.shutdown()


#: a job_id that makes the relay Worker put a poison message on the jobs queue
POISON_JOB = "00000000-0000-4000-8000-0000000dead0"

RELAY_JS = """
export default {
  async queue(batch, env) {
    for (const message of batch.messages) {
      if (batch.queue === "offload-jobs-dlq") {
        const resp = await fetch(env.DEAD_LETTER_URL, {
          method: "POST", headers: { "content-type": "application/json" },
          body: JSON.stringify({ body: message.body, attempts: message.attempts }),
        });
        if (resp.ok) message.ack(); else message.retry({ delaySeconds: 1 });
        continue;
      }
      const { signature, body } = message.body;
      const report = JSON.parse(body);
      if (report.job_id === env.POISON_JOB) {
        // a batch message the consumer refuses (no recipients) as a broken producer would
        // send it, bypassing /enqueue's checks
        await env.JOBS.send({ schema: "offload.batch.v1", job_id: report.job_id,
                              batch_id: report.batch_id, recipients: [] });
      }
      const resp = await fetch(env.RELAY_URL, {
        method: "POST",
        headers: { "content-type": "application/json", "x-signature": signature },
        body,
      });
      if (resp.ok) message.ack(); else message.retry({ delaySeconds: 1 });
    }
  },
};
"""


def results_relay(home: Path, url: str) -> Path:
    """A Worker that stands in for the sidecar's Queues pull consumer: it reads the results
    queue and POSTs each report, as `body` with `signature` as X-Signature, to `url`; and
    the jobs' dead-letter queue, POSTing each message to the sidecar's /dead-letter."""
    (home / "relay.js").write_text(RELAY_JS)
    dead_letter_url = url.rsplit("/", 1)[0] + "/dead-letter"
    consumer = {"max_batch_size": 10, "max_batch_timeout": 1, "max_retries": 3}
    config = {
        "name": "offload-results-relay", "main": "relay.js", "compatibility_date": "2026-04-20",
        "vars": {"RELAY_URL": url, "DEAD_LETTER_URL": dead_letter_url, "POISON_JOB": POISON_JOB},
        "queues": {"producers": [{"binding": "JOBS", "queue": "offload-jobs"}],
                   "consumers": [{"queue": "offload-results", **consumer},
                                 {"queue": "offload-jobs-dlq", **consumer}]},
    }  # fmt: skip
    (home / "wrangler.jsonc").write_text(json.dumps(config))
    return home / "wrangler.jsonc"


@pytest.fixture(scope="module")
def workers(servers, tmp_path_factory):
    """The Workers, started together: `binding` (send_email, reports POSTed to the
    callback URL), `api` (the Resend fake, reports onto the results queue, which a relay
    Worker reads and POSTs to the same callback URL) and `sendgrid` (the SendGrid fake,
    paced to 10 emails a second)."""
    wrangler = _wrangler_bin()
    relay = results_relay(tmp_path_factory.mktemp("cf-relay"), servers["callback_url"])
    base = {"CALLBACK_SECRET": SECRET}
    started = {
        "binding": Wrangler(wrangler, tmp_path_factory.mktemp("cf-binding"), base),
        "api": Wrangler(wrangler, tmp_path_factory.mktemp("cf-api"), {
            **base, "EMAIL_SENDER": "resend", "EMAIL_API_URL": servers["api_url"],
            "EMAIL_API_KEY": "re_test_key", "CLAIM_LEASE_SECONDS": "2", "REPORT_MODE": "queue",
        }, [relay]),
        "sendgrid": Wrangler(wrangler, tmp_path_factory.mktemp("cf-sendgrid"), {
            **base, "EMAIL_SENDER": "sendgrid", "EMAIL_API_URL": servers["api_url"],
            "EMAIL_API_KEY": "SG.test", "EMAIL_RATE_PER_SECOND": "10",
        }),
    }  # fmt: skip
    try:
        for w in started.values():
            w.start()
        for w in started.values():
            w.wait_ready()
        yield started
    finally:
        for w in started.values():
            w.stop()


# --- helpers -----------------------------------------------------------------------------


def make_batch(callback_url: str, addresses: list[str], *, first_userid: int = 1001) -> dict:
    """One batch (header + rendered recipients) whose HTML names batch and userid."""
    batch_id = str(uuid.uuid4())
    recipients = [
        {"userid": first_userid + i, "email": address, "firstname": "Ana", "lastname": "Muñoz",
         "subject": "Your course reminder",
         "html": f"<p>Hello Ana</p><p>batch={batch_id} userid={first_userid + i}</p>",
         "text": f"Hello Ana. batch={batch_id} userid={first_userid + i}"}
        for i, address in enumerate(addresses)
    ]  # fmt: skip
    header = {
        "schema": "offload.batch.v1", "job_id": str(uuid.uuid4()), "batch_id": batch_id,
        "batch_index": 0, "batch_count": 1, "tenant_id": 7, "type": "send_reminder",
        "courseid": 101, "created_by": 2, "actions": {"email": True, "certificate": False},
        "email": {"from": SENDER, "reply_to": None, "subject": "Your course reminder",
                  "template_id": "reminder_v1"},
        "template_data": {"course_name": "Safety 101"},
        "callback": {"url": callback_url, "mode": "http"},
        "timestamp": "2026-12-06T04:00:00Z",
    }  # fmt: skip
    return {"header": header, "recipients": recipients, "batch_id": batch_id}


def enqueue_body(messages: list[dict], *, timestamp: int | None = None) -> bytes:
    body = {"schema": "offload.enqueue.v1",
            "timestamp": int(time.time()) if timestamp is None else timestamp,
            "messages": messages}  # fmt: skip
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def messages_of(batch: dict, max_bytes: int = MAX_MESSAGE_BYTES, **kw) -> list[dict]:
    bodies = build_batch_messages(batch["header"], batch["recipients"], max_bytes=max_bytes, **kw)
    return [json.loads(b) for b in bodies]


def enqueue(worker: Wrangler, messages: list[dict], *, secret: str = SECRET, **kw):
    raw = enqueue_body(messages, **kw)
    return worker.request("POST", "/enqueue", raw, {"Content-Type": "application/json",
                                                     "X-Signature": sign(secret, raw)})  # fmt: skip


def outcomes(callbacks: Recorder, batch_id: str) -> list:
    """Every recipient update reported for `batch_id`, in order; each signature verified."""
    out = []
    for raw, signature in callbacks.snapshot():
        assert verify([SECRET], raw, signature), "a callback's signature does not verify"
        cb = parse_callback(raw)
        if cb.batch_id == batch_id:
            out += cb.updates
    return out


def wait_final(callbacks: Recorder, batch_id: str, userids, timeout: float = 60.0) -> dict:
    """Wait until every userid has been reported; the last update for each."""
    wanted = set(userids)

    def reported(_items) -> bool:
        return wanted <= {u.userid for u in outcomes(callbacks, batch_id)}

    callbacks.wait(reported, timeout)
    return {u.userid: u for u in outcomes(callbacks, batch_id)}


def count_emails(worker: Wrangler, batch_id: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    for html in worker.emails():
        if f"batch={batch_id} " in html:
            userid = int(html.split("userid=")[1].split("<")[0])
            counts[userid] = counts.get(userid, 0) + 1
    return counts


# --- tests -------------------------------------------------------------------------------


def test_package_pins_wrangler_4_86_and_the_worker_reports_its_version(workers):
    package = json.loads((WORKER / "package.json").read_text())
    assert package["devDependencies"]["wrangler"].startswith("4.86.")
    lock = json.loads((WORKER / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/wrangler"]["version"].startswith("4.86.")
    status, health = workers["binding"].request("GET", "/health")
    assert status == 200 and health["status"] == "ok", health
    assert health["version"] == package["version"]
    assert health["email_sender"] == "binding" and health["problems"] == []
    api = workers["api"].request("GET", "/health")[1]
    assert (api["email_sender"], api["report_mode"]) == ("resend", "queue")


def test_the_worker_type_checks_with_tsc(workers):
    done = subprocess.run(
        ["node", str(WORKER / "node_modules" / "typescript" / "bin" / "tsc"), "--noEmit"],
        cwd=WORKER, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_wrangler_config_names_secrets_but_holds_none():
    text = (WORKER / "wrangler.jsonc").read_text()
    assert "wrangler secret put CALLBACK_SECRET" in text
    assert SECRET not in text and '"CALLBACK_SECRET"' not in text
    assert '"EMAIL_API_KEY"' not in text
    for key in ("max_batch_size", "max_retries", "dead_letter_queue", "max_concurrency",
                "new_sqlite_classes", "send_email", "r2_buckets"):  # fmt: skip
        assert key in text


def test_signed_enqueue_is_delivered_once_per_recipient_and_reported(workers, servers):
    worker, callbacks = workers["binding"], servers["callbacks"]
    addresses = [f"learner{i}@school.example.org" for i in range(40)]
    batch = make_batch(servers["callback_url"], addresses)
    # the sidecar's splitter: plain parts under a small limit, and the whole as one gzip
    # envelope (a redelivery of the same recipients: still one email each)
    messages = messages_of(batch, max_bytes=2_000, compress=False)
    assert len(messages) > 5
    envelope = messages_of(batch, compress=True)
    assert [m["schema"] for m in envelope] == ["offload.envelope.v1"]
    messages += envelope
    status, answer = enqueue(worker, messages)
    assert status == 200, answer
    assert answer["enqueued"] == len(messages)

    final = wait_final(callbacks, batch["batch_id"], range(1001, 1041))
    callbacks.wait(lambda _: len(outcomes(callbacks, batch["batch_id"])) >= 80)
    assert {u.status for u in outcomes(callbacks, batch["batch_id"])} == {"sent"}
    assert all(u.external_id and u.timesent for u in final.values())
    counts = count_emails(worker, batch["batch_id"])
    assert counts == {userid: 1 for userid in range(1001, 1041)}


def test_certificate_from_r2_is_attached_and_a_missing_one_reported_failed(workers, servers):
    worker, callbacks = workers["binding"], servers["callbacks"]
    batch = make_batch(
        servers["callback_url"], ["cert1@school.example.org", "cert2@school.example.org"]
    )
    prefix = f"certs/{batch['batch_id']}/"
    batch["header"]["actions"]["certificate"] = True
    batch["header"]["email"]["attach_certificate"] = True
    batch["header"]["certificate"] = {"template_id": "default", "bucket": "offload-certificates",
                                      "key_prefix": prefix, "url_ttl": 3600}  # fmt: skip
    pdf = f"%PDF-1.4 certificate of Ana Muñoz {batch['batch_id']}".encode()
    worker.put_object(prefix + "1001.pdf", pdf)  # 1002's PDF was never stored
    assert enqueue(worker, messages_of(batch))[0] == 200

    final = wait_final(callbacks, batch["batch_id"], [1001, 1002])
    assert final[1001].status == "sent" and final[1001].certificate_key == prefix + "1001.pdf"
    assert final[1002].status == "failed"
    assert final[1002].error_message == f"certificate PDF not found in R2 at {prefix}1002.pdf"
    assert count_emails(worker, batch["batch_id"]) == {1001: 1}
    assert pdf in worker.attachments()


def test_a_1000_recipient_job_is_sent_once_each_and_reported_in_parts_under_128_kb(
    workers, servers, record_property
):
    worker, callbacks = workers["binding"], servers["callbacks"]
    batch = make_batch(
        servers["callback_url"], [f"learner{i}@school.example.org" for i in range(1000)]
    )
    messages = messages_of(batch)
    started = time.monotonic()
    assert enqueue(worker, messages)[0] == 200
    wait_final(callbacks, batch["batch_id"], range(1001, 2001), timeout=120)
    elapsed = time.monotonic() - started
    record_property("emails_per_second", round(1000 / elapsed, 1))
    print(f"1000 emails in {elapsed:.1f} s: {1000 / elapsed:.0f}/s ({len(messages)} messages)")

    assert count_emails(worker, batch["batch_id"]) == {u: 1 for u in range(1001, 2001)}
    sizes = [len(raw) for raw, _ in callbacks.snapshot() if batch["batch_id"].encode() in raw]
    assert len(sizes) > 1 and max(sizes) <= 128_000, sizes


def test_enqueue_splits_sendbatch_at_100_messages_and_256_kb(workers, servers):
    worker = workers["binding"]
    batch = make_batch(servers["callback_url"], ["bulk@school.example.org"])
    one = messages_of(batch)[0]
    # 150 small messages need two sendBatch calls (100 a call) ...
    status, answer = enqueue(worker, [one] * 150)
    assert (status, answer) == (200, {"enqueued": 150, "sends": 2})
    # ... and 4 messages of ~100 KB need at least two (256 KB a call)
    big = dict(one, template_data={"padding": "x" * 100_000})
    status, answer = enqueue(worker, [big] * 4)
    assert status == 200 and answer["sends"] >= 2, answer
    # one message over the queue's 128 KB is refused whole, nothing of it enqueued
    huge = dict(one, template_data={"padding": "x" * 130_000})
    status, answer = enqueue(worker, [one, huge])
    assert status == 413 and "messages[1]" in answer["error"], answer
    # all 154 deliveries of that one recipient sent one email
    wait_final(servers["callbacks"], batch["batch_id"], [1001])
    servers["callbacks"].wait(
        lambda _: len(outcomes(servers["callbacks"], batch["batch_id"])) >= 154, timeout=90
    )
    assert count_emails(worker, batch["batch_id"]) == {1001: 1}


#: (case, signing secret or None for no X-Signature, timestamp offset from now in seconds)
REFUSALS = [
    ("wrong secret", "not-the-secret", 0),
    ("no signature", None, 0),
    ("stale timestamp", SECRET, -301),
    ("future timestamp", SECRET, 3600),
]


def test_enqueue_refuses_a_bad_signature_or_timestamp_and_enqueues_nothing(workers, servers):
    worker, callbacks = workers["binding"], servers["callbacks"]
    refused = []
    for case, secret, skew in REFUSALS:
        batch = make_batch(servers["callback_url"], ["refused@school.example.org"])
        raw = enqueue_body(messages_of(batch), timestamp=int(time.time()) + skew)
        headers = {"X-Signature": sign(secret, raw)} if secret else {}
        status, answer = worker.request("POST", "/enqueue", raw, headers)
        assert status == 401, (case, answer)
        assert set(answer) == {"error", "status"} and SECRET not in answer["error"], case
        refused.append(batch["batch_id"])
    # a good batch sent after them is delivered; the refused ones never are
    good = make_batch(servers["callback_url"], ["after@school.example.org"])
    assert enqueue(worker, messages_of(good))[0] == 200
    wait_final(callbacks, good["batch_id"], [1001])
    time.sleep(2.5)  # one more consumer batch window (max_batch_timeout = 2 s)
    for batch_id in refused:
        assert outcomes(callbacks, batch_id) == []
        assert count_emails(worker, batch_id) == {}


def test_enqueue_refuses_a_message_the_consumer_would_refuse_and_enqueues_nothing(workers, servers):
    worker = workers["binding"]
    good = make_batch(servers["callback_url"], ["valid@school.example.org"])
    bad = make_batch(servers["callback_url"], ["invalid@school.example.org"])
    bad["recipients"][0]["userid"] = "1001"
    status, answer = enqueue(worker, messages_of(good) + messages_of(bad, compress=True))
    assert status == 400, answer
    assert answer["error"] == "messages[1]: recipients[0].userid: expected a positive integer"
    status, answer = enqueue(worker, [{"schema": "something.else"}])
    assert status == 400 and answer["error"].startswith("messages[0]: schema"), answer
    time.sleep(2.5)  # one consumer batch window (max_batch_timeout = 2 s)
    assert outcomes(servers["callbacks"], good["batch_id"]) == []
    assert count_emails(worker, good["batch_id"]) == {}


def test_the_same_message_delivered_twice_sends_one_email(workers, servers):
    worker, callbacks = workers["binding"], servers["callbacks"]
    batch = make_batch(servers["callback_url"], [f"twice{i}@school.example.org" for i in range(5)])
    messages = messages_of(batch)
    assert enqueue(worker, messages)[0] == 200
    assert enqueue(worker, messages)[0] == 200  # at-least-once: the sidecar resubmitted

    def both_reported(_items) -> bool:
        return len(outcomes(callbacks, batch["batch_id"])) >= 10

    callbacks.wait(both_reported, timeout=60)
    updates = outcomes(callbacks, batch["batch_id"])
    assert {u.status for u in updates} == {"sent"}
    assert count_emails(worker, batch["batch_id"]) == {u: 1 for u in range(1001, 1006)}
    # the second report repeats the first one's message ids: read from the record
    first, second = updates[:5], updates[5:]
    assert {u.userid: u.external_id for u in first} == {u.userid: u.external_id for u in second}


def test_http_api_throttled_429_is_retried_and_sends_once(workers, servers):
    worker, callbacks, calls = workers["api"], servers["callbacks"], servers["api_calls"]
    tag = uuid.uuid4().hex[:8]
    addresses = [f"throttled-{tag}@school.example.org", f"fine-{tag}@school.example.org"]
    batch = make_batch(servers["callback_url"], addresses)
    assert enqueue(worker, messages_of(batch))[0] == 200

    final = wait_final(callbacks, batch["batch_id"], [1001, 1002])
    assert final[1001].status == "sent" and final[1002].status == "sent"
    got = [c for c in calls.snapshot() if tag in c["to"]]
    assert [(c["to"].split("-")[0], c["status"]) for c in got] == [
        ("throttled", 429),
        ("throttled", 200),
        ("fine", 200),
    ]
    # the retry carried the same Idempotency-Key, so Resend itself could not send twice
    assert got[0]["key"] == got[1]["key"] == f"{batch['batch_id']}/1001/0"
    assert got[0]["auth"] == "Bearer re_test_key"


def test_http_api_hard_failure_is_reported_failed_and_not_retried(workers, servers):
    worker, callbacks, calls = workers["api"], servers["callbacks"], servers["api_calls"]
    tag = uuid.uuid4().hex[:8]
    addresses = [f"rejected-{tag}@school.example.org", f"fine-{tag}@school.example.org"]
    batch = make_batch(servers["callback_url"], addresses)
    assert enqueue(worker, messages_of(batch))[0] == 200

    final = wait_final(callbacks, batch["batch_id"], [1001, 1002])
    assert final[1001].status == "failed" and final[1001].attempts == 1
    assert "HTTP 400" in final[1001].error_message
    assert final[1002].status == "sent"
    time.sleep(3)  # longer than a retry would take (no Retry-After: the message was acked)
    got = [c for c in calls.snapshot() if tag in c["to"]]
    assert sorted(c["status"] for c in got) == [200, 400]
    assert len(outcomes(callbacks, batch["batch_id"])) == 2  # one report, not repeated
    # the reason (which may name the address) went to the sidecar, not into the Worker's log
    assert "Resend HTTP 400" in worker.log_text() and tag not in worker.log_text()


def test_sendgrid_sends_paced_reports_its_message_ids_and_retries_a_429(workers, servers):
    worker, callbacks, calls = workers["sendgrid"], servers["callbacks"], servers["api_calls"]
    tag = uuid.uuid4().hex[:8]
    addresses = [f"throttled-{tag}@school.example.org"] + [
        f"paced{i}-{tag}@school.example.org" for i in range(10)
    ]
    batch = make_batch(servers["callback_url"], addresses)
    batch["recipients"][1]["unsubscribe_url"] = "https://moodle.example.org/unsubscribe/t0k"
    batch["header"]["email"]["from"] = f"Academy <{SENDER}>"
    assert enqueue(worker, messages_of(batch))[0] == 200

    final = wait_final(callbacks, batch["batch_id"], range(1001, 1012))
    assert {u.status for u in final.values()} == {"sent"}
    assert all(u.external_id.startswith("sg-") for u in final.values())
    got = [c for c in calls.snapshot() if tag in c["to"]]
    assert [c["status"] for c in got] == [429] + [202] * 11
    assert {c["path"] for c in got} == {"/v3/mail/send"} and got[0]["auth"] == "Bearer SG.test"
    mail = next(c["mail"] for c in got if c["to"].startswith("paced0-"))
    assert mail["headers"]["List-Unsubscribe"] == "<https://moodle.example.org/unsubscribe/t0k>"
    assert [c["type"] for c in mail["content"]] == ["text/plain", "text/html"]
    assert mail["from"] == {"email": SENDER, "name": "Academy"}
    # the 11 sends of the redelivery were spaced to EMAIL_RATE_PER_SECOND (10 a second)
    sent = [c["at"] for c in got[1:]]
    assert sent[-1] - sent[0] >= 0.9, sent


def test_a_poison_message_is_retried_max_retries_then_left_in_the_dead_letter_queue(
    workers, servers
):
    worker, callbacks, calls = workers["api"], servers["callbacks"], servers["api_calls"]
    tag = uuid.uuid4().hex[:8]
    batch = make_batch(servers["callback_url"], [f"fine-{tag}@school.example.org"])
    batch["header"]["job_id"] = POISON_JOB  # the relay then queues a broken copy of it
    assert enqueue(worker, messages_of(batch))[0] == 200

    dead = callbacks.dead.wait(
        lambda items: any(d["body"].get("batch_id") == batch["batch_id"] for d in items)
    )
    poison = next(d for d in dead if d["body"].get("batch_id") == batch["batch_id"])
    assert poison["body"]["recipients"] == []
    log = worker.log_text()
    assert "not a valid batch message (actions: expected an object)" in log
    assert "(delivery 6)" in log  # max_retries = 5: six deliveries, then the DLQ
    # the good batch was sent once; the poison one sent nothing and reported nothing
    assert [c["to"] for c in calls.snapshot() if tag in c["to"]] == [
        f"fine-{tag}@school.example.org"
    ]
    assert [u.status for u in outcomes(callbacks, batch["batch_id"])] == ["sent"]


def test_worker_killed_between_send_and_record_reports_unknown_and_never_resends(workers, servers):
    """Runs last on the `api` Worker: it kills and restarts it (same persisted state)."""
    worker, callbacks, calls = workers["api"], servers["callbacks"], servers["api_calls"]
    tag = uuid.uuid4().hex[:8]
    batch = make_batch(servers["callback_url"], [f"hang-{tag}@school.example.org"])
    messages = messages_of(batch)
    assert enqueue(worker, messages)[0] == 200
    # the email API has the request (it may send it) and the Worker dies before it records
    calls.wait(lambda items: any(c["to"].startswith(f"hang-{tag}") for c in items))
    worker.stop(signal.SIGKILL)
    worker.start()
    worker.wait_ready()
    # the sidecar resubmits the batch (its own retry after no report came)
    assert enqueue(worker, messages)[0] == 200

    final = wait_final(callbacks, batch["batch_id"], [1001], timeout=60)
    assert final[1001].status == "failed"
    assert final[1001].error_message.startswith("delivery outcome unknown")
    assert final[1001].attempts == 1
    assert [c["to"] for c in calls.snapshot() if tag in c["to"]] == [
        f"hang-{tag}@school.example.org"
    ]
