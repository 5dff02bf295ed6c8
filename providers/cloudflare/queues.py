"""Cloudflare Queues, sidecar side: batch messages in, results and dead letters out.

Two ways in, chosen by `[providers.cloudflare]`:

- the Worker's producer endpoint, `POST {worker_url}/enqueue`: the body
  `{"schema": "offload.enqueue.v1", "timestamp": <Unix s>, "messages": [...]}` signed like a
  callback (`X-Signature: hex(HMAC-SHA256(secret, body))`); the Worker answers once every
  `sendBatch` resolved, or says how many messages went in before the queue failed
  (`"enqueued": n`): only the rest is sent again;
- Cloudflare's Queues REST API, `POST .../queues/{queue_id}/messages/batch` with an API
  token, at most 100 messages and 256 KB a request (all or nothing).

Throttling (429, honouring Retry-After) and 5xx are retried with backoff (tenacity). A
request that failed after the queue wrote it (a lost answer) is sent again, so the queue
may hold a message twice: the Worker's (batch_id, userid) record makes the copy a no-op.

Out: the Queues HTTP pull consumer (`.../messages/pull`, `.../messages/ack`) reads the
results queue (signed reports, `{"signature", "body"}`) and the dead-letter queue.

Depth: `GET .../queues/{queue_id}/metrics` answers Cloudflare's best-effort backlog of a
queue (`backlog_count`: messages not yet acknowledged, `backlog_bytes`,
`oldest_message_timestamp_ms`), for the daemon's gauges.
"""

import base64
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from providers.base import (
    BatchOutcome,
    MessageOverLimit,
    ProviderError,
    ProviderUnavailable,
    SubmitInterrupted,
)
from providers.signing import sign

log = logging.getLogger(__name__)

API_BASE = "https://api.cloudflare.com/client/v4"
ENQUEUE_SCHEMA = "offload.enqueue.v1"
#: a queue message is at most 128 KB (1 KB = 1,000 B), about 100 B of it metadata
MAX_MESSAGE_BYTES = 127_900
#: one REST `messages/batch` request (as a Worker's sendBatch): 100 messages, 256 KB
MAX_SEND_MESSAGES = 100
MAX_SEND_BYTES = 256_000
PER_MESSAGE_OVERHEAD = 100
#: messages in one POST /enqueue (the Worker splits them into sendBatch calls)
MESSAGES_PER_ENQUEUE = 500


class Throttled(ProviderUnavailable):
    """429 or 5xx: try again after `retry_after` seconds (None: backoff)."""

    def __init__(self, message: str, retry_after: float | None = None, done: int = 0):
        super().__init__(message)
        self.retry_after = retry_after
        self.done = done  # messages of the request already in the queue


@dataclass(frozen=True)
class CloudflareSettings:
    """What the queue client needs; built by the sidecar from `[providers.cloudflare]`."""

    worker_url: str | None = None
    secret: str | None = None  # signs /enqueue (the first callback secret)
    account_id: str | None = None
    queue_id: str | None = None
    api_token: str | None = None
    api_base: str = API_BASE
    timeout: float = 30.0
    attempts: int = 5
    backoff_max: float = 10.0

    @property
    def via_worker(self) -> bool:
        return bool(self.worker_url)


@dataclass
class Pulled:
    """One message of a pull: its decoded body (UTF-8 bytes, as a report was signed),
    lease and id."""

    body: bytes
    lease_id: str
    message_id: str
    attempts: int = 1
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def receipt(self) -> str:
        return self.lease_id


def pack(sizes: Sequence[int], max_messages: int, max_bytes: int) -> list[tuple[int, int]]:
    """[start, end) ranges of at most `max_messages` messages and `max_bytes` (with each
    message's metadata), order kept; a message alone is always a range of its own."""
    ranges, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        cost = size + PER_MESSAGE_OVERHEAD
        if i > start and (i - start >= max_messages or total + cost > max_bytes):
            ranges.append((start, i))
            start, total = i, 0
        total += cost
    if start < len(sizes):
        ranges.append((start, len(sizes)))
    return ranges


class _Http:
    """requests with the retry policy: 429 and 5xx (and connection errors) again, with
    exponential backoff and jitter, honouring Retry-After; other answers raised."""

    def __init__(self, settings: CloudflareSettings, sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self.session = requests.Session()
        self.sleep = sleep

    def close(self) -> None:
        self.session.close()

    def retrying(self) -> Retrying:
        backoff = wait_exponential_jitter(multiplier=0.5, max=self.settings.backoff_max)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, Throttled) and exc.retry_after is not None:
                return min(exc.retry_after, self.settings.backoff_max)
            return backoff(state)

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("Cloudflare: %s; trying again (attempt %d of %d)",
                        exc, state.attempt_number + 1, self.settings.attempts)  # fmt: skip

        return Retrying(
            retry=retry_if_exception_type(ProviderUnavailable),
            stop=stop_after_attempt(self.settings.attempts),
            wait=wait,
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

    def post(self, what: str, url: str, *, data: bytes, headers: Mapping[str, str]) -> Any:
        """One POST; its JSON answer. Raises Throttled (429/5xx/connection: retry),
        ProviderError (4xx: fix something)."""
        try:
            resp = self.session.post(url, data=data, headers=dict(headers),
                                     timeout=self.settings.timeout)  # fmt: skip
        except requests.RequestException as exc:
            raise Throttled(f"{what}: {type(exc).__name__}: {exc}") from None
        return _answer(what, resp)

    def get(self, what: str, url: str, headers: Mapping[str, str] | None = None) -> Any:
        try:
            resp = self.session.get(url, headers=dict(headers or {}), timeout=self.settings.timeout)
        except requests.RequestException as exc:
            raise Throttled(f"{what}: {type(exc).__name__}: {exc}") from None
        return _answer(what, resp)


def _answer(what: str, resp: requests.Response) -> Any:
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code < 300:
        return body
    error = _error_text(body) or resp.reason or ""
    message = f"{what}: HTTP {resp.status_code}: {error}".rstrip(": ")
    if resp.status_code == 429 or resp.status_code >= 500:
        retry_after = resp.headers.get("Retry-After")
        done = body.get("enqueued", 0) if isinstance(body, dict) else 0
        raise Throttled(
            message,
            float(retry_after) if retry_after and retry_after.isdigit() else None,
            int(done) if isinstance(done, int) else 0,
        )
    if resp.status_code in (401, 403):
        raise ProviderError(f"{message} (check the secret or API token and its permissions)")
    raise ProviderError(message)


def _error_text(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    if isinstance(body.get("error"), str):
        return body["error"]
    errors = body.get("errors") or []
    return "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)


class QueueSubmitter:
    """Puts batch messages on the Cloudflare jobs queue, through the Worker or the REST API.
    The same interface as the SQS submitter: `max_message_bytes`, `submit`, `check`."""

    def __init__(self, settings: CloudflareSettings, sleep: Callable[[float], None] = time.sleep):
        if not settings.via_worker and not (settings.account_id and settings.queue_id):
            raise ProviderError(
                "providers.cloudflare: set worker_url (the Worker's /enqueue), or account_id, "
                "queue_id and auth_token (the Queues REST API)"
            )
        self.settings = settings
        self.http = _Http(settings, sleep)
        self.clock = time.time

    def close(self) -> None:
        self.http.close()

    def max_message_bytes(self) -> int:
        return MAX_MESSAGE_BYTES

    @property
    def target(self) -> str:
        s = self.settings
        return f"{s.worker_url}/enqueue" if s.via_worker else f"queue {s.queue_id}"

    def submit(
        self,
        batches: Mapping[str, Sequence[bytes]],
        tags: Mapping[str, Sequence[str]] | None = None,
    ) -> dict[str, BatchOutcome]:
        """Send every body of every batch (key → its bodies, in part order); a BatchOutcome
        per key, each part with an id once the queue took it. Raises MessageOverLimit
        before anything is sent, SubmitInterrupted (with what went in) when the queue
        cannot be reached after the retries."""
        entries = [(key, part, body) for key, bodies in batches.items()
                   for part, body in enumerate(bodies)]  # fmt: skip
        for key, part, body in entries:
            if len(body) > MAX_MESSAGE_BYTES:
                raise MessageOverLimit(
                    f"batch {key}: message part {part} is {len(body)} bytes, over Cloudflare "
                    f"Queues' {MAX_MESSAGE_BYTES}-byte message"
                )
        taken: dict[tuple[str, int], str] = {}
        errors: dict[tuple[str, int], str] = {}
        step = MESSAGES_PER_ENQUEUE if self.settings.via_worker else None
        if step:
            groups = [(lo, min(lo + step, len(entries))) for lo in range(0, len(entries), step)]
        else:
            groups = pack([len(b) for _, _, b in entries], MAX_SEND_MESSAGES, MAX_SEND_BYTES)
        for lo, hi in groups:
            group = entries[lo:hi]
            try:
                self._send([b for _, _, b in group])
            except ProviderUnavailable as exc:
                raise SubmitInterrupted(
                    f"{self.target}: {exc}", _outcomes(batches, taken, errors)
                ) from exc
            except ProviderError as exc:  # refused as it is: those messages fail
                for key, part, _ in group:
                    errors[(key, part)] = str(exc)
                continue
            for key, part, _ in group:
                taken[(key, part)] = f"cf:{key}:{part}"
        return _outcomes(batches, taken, errors)

    def _send(self, bodies: list[bytes]) -> None:
        messages = [json.loads(b) for b in bodies]
        if self.settings.via_worker:
            sent = [0]  # messages of this request the Worker has put in the queue

            def attempt() -> None:
                try:
                    self._enqueue(messages[sent[0] :])
                except Throttled as exc:
                    sent[0] += exc.done
                    raise

            for a in self.http.retrying():
                with a:
                    attempt()
        else:
            for a in self.http.retrying():
                with a:
                    self._rest_batch(messages)

    def _enqueue(self, messages: list[Any]) -> None:
        s = self.settings
        body = _compact({"schema": ENQUEUE_SCHEMA, "timestamp": int(self.clock()),
                         "messages": messages})  # fmt: skip
        headers = {"Content-Type": "application/json", "X-Signature": sign(s.secret or "", body)}
        self.http.post("Worker /enqueue", f"{s.worker_url}/enqueue", data=body, headers=headers)

    def _rest_batch(self, messages: list[Any]) -> None:
        payload = {"messages": [{"body": m, "content_type": "json"} for m in messages]}
        url = self._queue_url(self.settings.queue_id) + "/messages/batch"
        self.http.post("Queues messages/batch", url, data=_compact(payload),
                       headers=self._api_headers())  # fmt: skip

    def _queue_url(self, queue_id: str | None) -> str:
        s = self.settings
        return f"{s.api_base}/accounts/{s.account_id}/queues/{queue_id}"

    def _api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_token or ''}",
                "Content-Type": "application/json"}  # fmt: skip

    def health(self) -> dict:
        """The Worker's `GET /health` answer, ready (200) or misconfigured (503: `problems`
        names what to fix); raises ProviderUnavailable when it cannot be reached or does
        not answer as the Worker."""
        url = f"{self.settings.worker_url}/health"
        try:
            resp = self.http.session.get(url, timeout=self.settings.timeout)
            body = resp.json()
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"Worker {url}: {type(exc).__name__}: {exc}") from None
        except ValueError:
            raise ProviderUnavailable(
                f"Worker {url}: HTTP {resp.status_code}, not the moodle-offload Worker's answer"
            ) from None
        if not isinstance(body, dict) or "status" not in body:
            raise ProviderUnavailable(f"Worker {url}: not the moodle-offload Worker's answer")
        return body

    def queue_info(self, queue_id: str | None = None) -> dict:
        """The queue as the REST API describes it (name, consumers, producers)."""
        answer = self.http.get(f"Queues queue {queue_id or self.settings.queue_id}",
                               self._queue_url(queue_id or self.settings.queue_id),
                               self._api_headers())  # fmt: skip
        return answer.get("result") or {}


@dataclass(frozen=True)
class QueueMetrics:
    """Cloudflare's best-effort figures of one queue (approximate, like SQS's)."""

    backlog_count: int  # messages not yet acknowledged (a leased one counts)
    backlog_bytes: int
    oldest_message_timestamp_ms: int | None  # Unix ms of the oldest; None: empty or unknown


class QueueMetricsReader:
    """`GET /accounts/{account_id}/queues/{queue_id}/metrics` with an API token (Queues
    Read); one session, reused. The settings' `attempts` and `timeout` bound each read."""

    def __init__(self, settings: CloudflareSettings, sleep: Callable[[float], None] = time.sleep):
        if not (settings.account_id and settings.api_token):
            raise ProviderError(
                "providers.cloudflare: queue metrics need account_id and auth_token (an API "
                "token with Queues Read)"
            )
        self.settings = settings
        self.http = _Http(settings, sleep)

    def close(self) -> None:
        self.http.close()

    def metrics(self, queue_id: str) -> QueueMetrics:
        """The queue's backlog; raises ProviderUnavailable (429, 5xx, unreachable) or
        ProviderError (a refused token, an unknown queue)."""
        s = self.settings
        url = f"{s.api_base}/accounts/{s.account_id}/queues/{queue_id}/metrics"
        headers = {"Authorization": f"Bearer {s.api_token}"}
        what = f"Queues metrics {queue_id}"
        answer = None
        for a in self.http.retrying():
            with a:
                answer = self.http.get(what, url, headers)
        result = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(result, dict) or not isinstance(result.get("backlog_count"), int | float):
            raise ProviderError(f"{what}: not Cloudflare's answer (no result.backlog_count)")
        oldest = result.get("oldest_message_timestamp_ms")
        return QueueMetrics(
            int(result["backlog_count"]),
            int(result.get("backlog_bytes") or 0),
            int(oldest) if isinstance(oldest, int | float) and oldest > 0 else None,
        )


class PullReader:
    """A queue read with the Queues HTTP pull consumer: the SQS QueueReader's interface
    (`receive`, `delete`) over `messages/pull` and `messages/ack`."""

    def __init__(
        self,
        settings: CloudflareSettings,
        queue_id: str,
        *,
        batch_size: int = 100,
        visibility_ms: int = 60_000,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings = settings
        self.queue_id = queue_id
        self.batch_size = batch_size
        self.visibility_ms = visibility_ms
        self.http = _Http(settings, sleep)

    def close(self) -> None:
        self.http.close()

    def _url(self, tail: str) -> str:
        s = self.settings
        return f"{s.api_base}/accounts/{s.account_id}/queues/{self.queue_id}/messages/{tail}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_token or ''}",
                "Content-Type": "application/json"}  # fmt: skip

    def receive(self) -> list[Pulled]:
        body = json.dumps({"batch_size": self.batch_size,
                           "visibility_timeout_ms": self.visibility_ms}).encode()  # fmt: skip
        try:
            answer = self.http.post(f"Queues pull {self.queue_id}", self._url("pull"),
                                    data=body, headers=self._headers())  # fmt: skip
        except Throttled as exc:
            raise ProviderUnavailable(str(exc)) from None
        out = []
        for m in (answer.get("result") or {}).get("messages") or []:
            text, attributes = _decode(m.get("body"))
            lease, mid = str(m.get("lease_id", "")), str(m.get("id", ""))
            attempts = int(m.get("attempts") or 1)
            out.append(Pulled(text.encode("utf-8"), lease, mid, attempts, attributes))
        return out

    def delete(self, receipts: Sequence[str]) -> None:
        """Ack what was applied (a lease that ran out is accepted late)."""
        body = json.dumps({"acks": [{"lease_id": r} for r in receipts], "retries": []}).encode()
        try:
            self.http.post(f"Queues ack {self.queue_id}", self._url("ack"), data=body,
                           headers=self._headers())  # fmt: skip
        except Throttled as exc:
            raise ProviderUnavailable(str(exc)) from None


SIGNATURE_ATTRIBUTE = "signature"


def _decode(body: Any) -> tuple[str, dict[str, str]]:
    """A pulled body as text: JSON bodies arrive base64-encoded, text bodies as they are.
    A report `{"signature", "body"}` gives its signed body and the signature attribute."""
    text = body if isinstance(body, str) else json.dumps(body)
    for attempt in (text, _b64(text)):
        if attempt is None:
            continue
        try:
            value = json.loads(attempt)
        except ValueError:
            continue
        if isinstance(value, str):  # a JSON string holding the report
            try:
                value = json.loads(value)
            except ValueError:
                return value, {}
        if isinstance(value, dict) and isinstance(value.get("body"), str) and "signature" in value:
            return value["body"], {SIGNATURE_ATTRIBUTE: str(value["signature"])}
        return attempt, {}
    return text, {}


def _b64(text: str) -> str | None:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def _compact(value: Any) -> bytes:
    """JSON as the bodies were measured: UTF-8, no spaces (escaping non-ASCII text would
    make a message up to six times its measured size)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _outcomes(batches, taken, errors) -> dict[str, BatchOutcome]:
    return {
        key: BatchOutcome(
            key,
            tuple(taken.get((key, p)) for p in range(len(bodies))),
            tuple(errors.get((key, p)) for p in range(len(bodies))),
        )
        for key, bodies in batches.items()
    }
