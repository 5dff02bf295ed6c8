"""One SQS record body as the worker reads it: an `offload.batch.v1` message, validated.

Everything is checked before anything is sent, so a message the sidecar built wrong
is refused whole (and ends in the dead-letter queue) instead of half delivered.
Error messages name the field path, never a value: values may be email addresses.
"""

import re
from dataclasses import dataclass
from typing import Any

from providers.message import BATCH_SCHEMA, MessageError, decode_body

CALLBACK_MODES = ("http", "sqs")
_URL = re.compile(r"https?://[!-~]{1,2000}")  # printable ASCII: no space, no line break
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class Recipient:
    userid: int
    email: str
    subject: str
    html: str
    text: str
    certificate_html: str | None
    unsubscribe_url: str | None = None  # one-click unsubscribe (RFC 8058): both headers


@dataclass(frozen=True)
class Batch:
    """What the worker uses of one message; header extensions are described in handler.py."""

    job_id: str
    batch_id: str
    attempt: int
    send_email: bool
    make_certificate: bool
    sender: str | None
    reply_to: str | None
    configuration_set: str | None
    attach_certificate: bool
    bucket: str | None
    key_prefix: str
    callback_url: str
    callback_mode: str
    recipients: tuple[Recipient, ...]
    part: int | None = None
    part_count: int | None = None

    def certificate_key(self, userid: int) -> str:
        """The S3 key of a recipient's certificate: `{key_prefix}{userid}.pdf`."""
        return f"{self.key_prefix}{userid}.pdf"

    def describe(self) -> str:
        """`batch <id>` plus `part i/n` for a split batch, for log lines."""
        if self.part is None:
            return f"batch {self.batch_id}"
        return f"batch {self.batch_id} part {self.part + 1}/{self.part_count}"


def parse_batch(raw: bytes) -> Batch:
    """The batch in one SQS body (envelope unwrapped); raises MessageError naming the field."""
    obj = decode_body(raw)
    if obj.get("schema") != BATCH_SCHEMA:
        raise MessageError(f"schema: expected {BATCH_SCHEMA!r}")
    actions = _section(obj, "actions")
    send_email = _flag(actions, "actions.email")
    make_certificate = _flag(actions, "actions.certificate")
    if not (send_email or make_certificate):
        raise MessageError("actions: neither email nor certificate is asked for")
    email = _section(obj, "email") if send_email else {}
    certificate = _section(obj, "certificate") if make_certificate else {}
    callback = _section(obj, "callback")
    mode = callback.get("mode")
    if mode not in CALLBACK_MODES:
        raise MessageError(f"callback.mode: expected one of {', '.join(CALLBACK_MODES)}")
    url = _text(callback, "callback.url")
    if mode == "http" and not url.lower().startswith(("https://", "http://")):
        raise MessageError("callback.url: expected an http:// or https:// URL")
    attempt = obj.get("attempt", 0)
    if type(attempt) is not int or attempt < 0:
        raise MessageError("attempt: expected a non-negative integer")
    items = obj.get("recipients")
    if type(items) is not list or not items:
        raise MessageError("recipients: expected a non-empty list")
    part, part_count = obj.get("part"), obj.get("part_count")
    if part is not None and (type(part) is not int or type(part_count) is not int):
        raise MessageError("part, part_count: expected integers")
    return Batch(
        job_id=_uuid(obj, "job_id"),
        batch_id=_uuid(obj, "batch_id"),
        attempt=attempt,
        send_email=send_email,
        make_certificate=make_certificate,
        sender=_text(email, "email.from") if send_email else None,
        reply_to=_optional_text(email, "email.reply_to"),
        configuration_set=_optional_text(email, "email.configuration_set"),
        attach_certificate=_flag(email, "email.attach_certificate"),
        bucket=_text(certificate, "certificate.bucket") if make_certificate else None,
        key_prefix=_optional_text(certificate, "certificate.key_prefix") or "",
        callback_url=url,
        callback_mode=mode,
        recipients=tuple(_recipient(i, item, send_email) for i, item in enumerate(items)),
        part=part,
        part_count=part_count,
    )


def _recipient(index: int, item: Any, send_email: bool) -> Recipient:
    path = f"recipients[{index}]"
    if type(item) is not dict:
        raise MessageError(f"{path}: expected an object")
    userid = item.get("userid")
    if type(userid) is not int or userid <= 0:
        raise MessageError(f"{path}.userid: expected a positive integer")
    fields = {}
    for key in ("subject", "html", "text"):
        value = item.get(key, "")
        if type(value) is not str:
            raise MessageError(f"{path}.{key}: expected a string")
        fields[key] = value
    certificate_html = item.get("certificate_html")
    if certificate_html is not None and type(certificate_html) is not str:
        raise MessageError(f"{path}.certificate_html: expected a string or null")
    unsubscribe_url = item.get("unsubscribe_url")
    if unsubscribe_url is not None and (
        type(unsubscribe_url) is not str
        or not _URL.fullmatch(unsubscribe_url)
        or any(c in unsubscribe_url for c in "<>")
    ):
        raise MessageError(f"{path}.unsubscribe_url: expected an http(s) URL or null")
    return Recipient(
        userid=userid,
        email=_text(item, f"{path}.email") if send_email else str(item.get("email") or ""),
        certificate_html=certificate_html,
        unsubscribe_url=unsubscribe_url,
        **fields,
    )


def _section(obj: dict, key: str) -> dict:
    value = obj.get(key)
    if type(value) is not dict:
        raise MessageError(f"{key}: expected an object")
    return value


def _flag(obj: dict, path: str) -> bool:
    value = obj.get(path.rpartition(".")[2], False)
    if type(value) is not bool:
        raise MessageError(f"{path}: expected true or false")
    return value


def _text(obj: dict, path: str) -> str:
    value = obj.get(path.rpartition(".")[2])
    if type(value) is not str or not value.strip():
        raise MessageError(f"{path}: expected a non-empty string")
    return value


def _optional_text(obj: dict, path: str) -> str | None:
    value = obj.get(path.rpartition(".")[2])
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise MessageError(f"{path}: expected a string or null")
    return value


def _uuid(obj: dict, key: str) -> str:
    value = obj.get(key)
    if type(value) is not str or not _UUID.fullmatch(value):
        raise MessageError(f"{key}: expected a UUID string")
    return value.lower()
