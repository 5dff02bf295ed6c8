"""Callbacks to the sidecar (docs/callback.md): an HTTP POST, or a message on a results queue.

The Lambda runtime has no `requests`, so HTTP goes through `urllib.request`, with
redirects refused: urllib would turn a redirected POST into a body-less GET and a
callback could look delivered when it was not.
"""

import hashlib
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from providers.base import ProviderUnavailable
from providers.message import make_callback

log = logging.getLogger(__name__)

#: a callback body stays under this, so it fits an SQS message with its attribute
MAX_CALLBACK_BYTES = 240 * 1024
_SQS_REGION = re.compile(r"^https://sqs[.-]([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/")


class CallbackUndelivered(ProviderUnavailable):
    """The sidecar did not take a callback (network error, non-2xx but 409, queue error)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError with the 3xx status


_OPENER = urllib.request.build_opener(_NoRedirect)


def callback_bodies(
    job_id: str, batch_id: str, updates: Sequence[Mapping[str, Any]]
) -> list[bytes]:
    """One callback body for `updates`, or several when one would exceed MAX_CALLBACK_BYTES."""
    body = make_callback(job_id, batch_id, updates)
    if len(body) <= MAX_CALLBACK_BYTES or len(updates) == 1:
        return [body]
    mid = len(updates) // 2
    return callback_bodies(job_id, batch_id, updates[:mid]) + callback_bodies(
        job_id, batch_id, updates[mid:]
    )


def post(url: str, body: bytes, signature: str, *, timeout: float) -> int:
    """POST `body` to the sidecar; the HTTP status. Raises CallbackUndelivered unless 2xx/409.

    409 means the sidecar has already applied this callback_id: delivered.
    """
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "X-Signature": signature},
    )
    try:
        with _OPENER.open(request, timeout=timeout) as resp:
            resp.read(65536)
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 409:
            return exc.code
        raise CallbackUndelivered(f"callback URL {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CallbackUndelivered(f"callback URL {url} unreachable: {reason}") from None


def enqueue(sqs: Any, url: str, body: bytes, signature: str, *, group: str) -> str:
    """Send `body` to the results queue at `url`, signature as the `signature` attribute.

    Returns the SQS MessageId; raises CallbackUndelivered. On a FIFO queue the group is
    `group` (the batch_id) and the deduplication id the body's SHA-256.
    """
    params: dict[str, Any] = {
        "QueueUrl": url,
        "MessageBody": body.decode("utf-8"),
        "MessageAttributes": {"signature": {"DataType": "String", "StringValue": signature}},
    }
    if url.endswith(".fifo"):
        params["MessageGroupId"] = group
        params["MessageDeduplicationId"] = hashlib.sha256(body).hexdigest()
    try:
        return sqs.send_message(**params)["MessageId"]
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise CallbackUndelivered(
            f"results queue {url}: {err.get('Code', '?')}: {err.get('Message', '')}"
        ) from None
    except BotoCoreError as exc:
        raise CallbackUndelivered(f"results queue {url}: {exc}") from None


def queue_region(url: str) -> str | None:
    """The region in an AWS SQS queue URL, or None (a custom endpoint: the default region)."""
    match = _SQS_REGION.match(url)
    return match.group(1) if match else None


def read_secret(secretsmanager: Any, arn: str) -> str:
    """The SecretString of `arn`; raises CallbackUndelivered (the secret is never in it)."""
    try:
        value = secretsmanager.get_secret_value(SecretId=arn).get("SecretString")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        raise CallbackUndelivered(f"secret {arn} cannot be read: {code}") from None
    except BotoCoreError as exc:
        raise CallbackUndelivered(f"secret {arn} cannot be read: {exc}") from None
    if not value:
        raise CallbackUndelivered(f"secret {arn} has no SecretString")
    return value
