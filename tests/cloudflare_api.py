"""A stand-in for Cloudflare's Queues REST API on 127.0.0.1, for the sidecar's client.

Nothing offline serves Cloudflare's account API (wrangler dev runs Workers, not the
account's REST endpoints), so this server answers the five calls the sidecar makes as
Cloudflare documents them (developers.cloudflare.com/api, Queues): `GET
/accounts/{a}/queues/{q}`, `GET .../metrics` (the backlog: messages not acknowledged,
leased ones included, their bytes and the oldest one's time), `POST .../messages/batch`
(all or nothing, at most 100 messages and 256 KB), `POST .../messages/pull` (JSON bodies
base64-encoded, each with a lease) and `POST .../messages/ack`. It checks the bearer
token, refuses what the real API refuses, and can be told to answer 429 or 5xx.
Everything it received stays readable.
"""

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.motoserver import free_port

TOKEN = "cf-test-token"
ACCOUNT = "acct0123"


@dataclass
class Queue:
    name: str
    # {id, body, content_type, attempts, timestamp_ms}
    messages: list[dict] = field(default_factory=list)
    leased: dict[str, dict] = field(default_factory=dict)  # lease_id -> message
    acked: list[str] = field(default_factory=list)


class CloudflareApi:
    def __init__(self):
        self.queues: dict[str, Queue] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.failures: list[tuple[int, dict]] = []  # answers to give before serving
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                api._serve(self, "GET")

            def do_POST(self):
                api._serve(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/client/v4"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def queue(self, name: str) -> str:
        """Create a queue; its id."""
        qid = uuid.uuid4().hex
        self.queues[qid] = Queue(name)
        return qid

    def put(self, queue_id: str, body, content_type: str = "json") -> None:
        """A message as a producer (the Worker) would send it."""
        self.queues[queue_id].messages.append(_message(body, content_type))

    def bodies(self, queue_id: str) -> list:
        return [m["body"] for m in self.queues[queue_id].messages]

    # --- serving ---------------------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        size = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(size) if size else b""
        path = h.path.split("?", 1)[0]
        with self.lock:
            self.requests.append((method, path))
            if h.headers.get("Authorization") != f"Bearer {TOKEN}":
                return _send(h, 403, _errors(10000, "Authentication error"))
            if self.failures:
                status, headers = self.failures.pop(0)
                return _send(h, status, _errors(10001, "try again"), headers)
            prefix = f"/client/v4/accounts/{ACCOUNT}/queues/"
            if not path.startswith(prefix):
                return _send(h, 404, _errors(7003, "Could not route to the requested path"))
            qid, _, tail = path[len(prefix) :].partition("/")
            q = self.queues.get(qid)
            if q is None:
                return _send(h, 404, _errors(11000, "Queue not found"))
            if method == "GET" and not tail:
                return _send(h, 200, _ok({"queue_id": qid, "queue_name": q.name}))
            if method == "GET" and tail == "metrics":
                return _send(h, 200, _ok(_metrics(q)))
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                return _send(h, 400, _errors(10026, "invalid JSON"))
            if method == "POST" and tail == "messages/batch":
                return self._batch(h, q, body, len(raw))
            if method == "POST" and tail == "messages/pull":
                return self._pull(h, q, body)
            if method == "POST" and tail == "messages/ack":
                for a in body.get("acks") or []:
                    if q.leased.pop(a["lease_id"], None) is not None:
                        q.acked.append(a["lease_id"])
                for r in body.get("retries") or []:
                    m = q.leased.pop(r["lease_id"], None)
                    if m is not None:
                        q.messages.append(m)
                counts = {"ackCount": len(body.get("acks") or []),
                          "retryCount": len(body.get("retries") or [])}  # fmt: skip
                return _send(h, 200, _ok(counts))
            return _send(h, 405, _errors(10405, "method not allowed"))

    def _batch(self, h, q: Queue, body: dict, size: int) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _send(h, 400, _errors(11001, "messages: required"))
        sizes = [len(json.dumps(m.get("body"), ensure_ascii=False, separators=(",", ":"))
                     .encode()) + 100 for m in messages]  # fmt: skip
        if len(messages) > 100 or sum(sizes) > 256_000:
            return _send(h, 413, _errors(11002, "batch over 100 messages or 256 KB"))
        if max(sizes) > 128_000:
            return _send(h, 413, _errors(11003, "message over 128 KB"))
        for m in messages:
            q.messages.append(_message(m["body"], m.get("content_type", "json")))
        return _send(h, 200, _ok(None))

    def _pull(self, h, q: Queue, body: dict) -> None:
        n = min(int(body.get("batch_size") or 5), 100)
        out = []
        while q.messages and len(out) < n:
            m = q.messages.pop(0)
            m["attempts"] += 1
            lease = uuid.uuid4().hex
            q.leased[lease] = m
            content = m["body"]
            if m["content_type"] == "json":
                content = base64.b64encode(json.dumps(content).encode()).decode()
            out.append({"id": m["id"], "body": content, "attempts": m["attempts"],
                        "lease_id": lease, "timestamp_ms": m["timestamp_ms"],
                        "metadata": {}})  # fmt: skip
        return _send(h, 200, _ok({"messages": out, "message_backlog_count": len(q.messages)}))


def _message(body, content_type: str) -> dict:
    return {"id": uuid.uuid4().hex, "body": body, "content_type": content_type, "attempts": 0,
            "timestamp_ms": int(time.time() * 1000)}  # fmt: skip


def _metrics(q: Queue) -> dict:
    """The queue's backlog as `GET .../metrics` gives it: every message not acknowledged
    (waiting or leased), the bytes of their bodies, the oldest one's Unix time in ms (0:
    none)."""
    backlog = q.messages + list(q.leased.values())
    size = sum(len(json.dumps(m["body"], separators=(",", ":")).encode()) for m in backlog)
    oldest = min((m["timestamp_ms"] for m in backlog), default=0)
    return {"backlog_count": len(backlog), "backlog_bytes": size,
            "oldest_message_timestamp_ms": oldest}  # fmt: skip


def _ok(result) -> dict:
    return {"success": True, "errors": [], "messages": [], "result": result}


def _errors(code: int, message: str) -> dict:
    return {"success": False, "errors": [{"code": code, "message": message}], "messages": []}


def _send(h: BaseHTTPRequestHandler, status: int, payload: dict, headers=None) -> None:
    data = json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)
