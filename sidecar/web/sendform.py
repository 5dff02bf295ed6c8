"""The fields of `send csv` as the dashboard's send page and `POST /api/v1/send/csv` take
them (multipart form fields), checked once for both, and the preview as JSON."""

from collections.abc import Mapping

from sidecar import sendcsv
from sidecar.web.errors import BadRequest

MAX_SUBJECT = 255
MAX_MESSAGE = 20_000
MAX_KEY = 100
PROBLEMS_SHOWN = 50
_YES = {"on", "true", "1", "yes"}


def flag(form: Mapping[str, str], name: str) -> bool:
    """A checkbox ("on") or an API flag ("true"/"1"/"yes")."""
    return (form.get(name) or "").strip().lower() in _YES


def message_of(form: Mapping[str, str], templates: list[str]) -> sendcsv.CsvMessage:
    """The message the fields describe; BadRequest naming the field that is wrong."""
    template_id = form.get("template") or "custom"
    if template_id not in templates:
        raise BadRequest(f"template: no such email template {template_id[:60]!r}")
    subject = (form.get("subject") or "").strip() or None
    body = (form.get("message") or "").replace("\r\n", "\n").strip() or None
    if subject and len(subject) > MAX_SUBJECT:
        raise BadRequest(f"subject: at most {MAX_SUBJECT} characters")
    if body and len(body) > MAX_MESSAGE:
        raise BadRequest(f"message: at most {MAX_MESSAGE} characters")
    if template_id == "custom" and (subject is None or body is None):
        raise BadRequest("the custom template needs a subject and a message")
    key = (form.get("key") or "").strip() or None
    if key and len(key) > MAX_KEY:
        raise BadRequest(f"key: at most {MAX_KEY} characters")
    return sendcsv.CsvMessage(template_id, subject, body, flag(form, "certificate"), key)


def fields_of(message: sendcsv.CsvMessage) -> dict:
    """The message as plain JSON fields (kept with a staged upload)."""
    return {
        "template_id": message.template_id,
        "subject": message.subject,
        "body": message.body,
        "certificate": message.certificate,
        "key": message.key,
    }


def message_from(fields: Mapping) -> sendcsv.CsvMessage:
    return sendcsv.CsvMessage(
        fields["template_id"], fields["subject"], fields["body"], fields["certificate"],
        fields.get("key"),
    )  # fmt: skip


def preview_json(pv: sendcsv.CsvPreview, filename: str) -> dict:
    """What the preview shows, for the API: counts, invalid rows by line, the sample."""
    held: dict[str, int] = {}
    for why in pv.held_back.values():
        reason = "suppressed address" if why.startswith("suppressed") else why
        held[reason] = held.get(reason, 0) + 1
    sample = pv.sample
    return {
        "file": filename,
        "key": pv.key,
        "valid_rows": len(pv.data.rows),
        "invalid_rows": [{"line": p.line, "message": p.message} for p in pv.problems],
        "merged_rows": [{"line": n.line, "message": n.message} for n in pv.data.merged],
        "extra_columns": list(pv.data.extra_columns),
        "already_sent": pv.already_sent,
        "held_back": held,
        "to_send": pv.to_send,
        "sample": None if sample is None
        else {"subject": sample.subject, "text": sample.text, "html": sample.html},
    }  # fmt: skip
