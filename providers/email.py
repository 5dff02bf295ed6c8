"""RFC 5322 messages for bulk mail: text + HTML, attachments, a stable Message-ID."""

from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate


def make_message_id(job_id: str, userid: int, domain: str) -> str:
    """The same (job, recipient) always gives the same Message-ID, so a resend is recognisable."""
    return f"<{job_id}.{userid}@{domain or 'moodle-offload.invalid'}>"


def build_message(
    *,
    sender: str,
    to: str,
    subject: str,
    html: str,
    text: str,
    message_id: str,
    reply_to: str | None = None,
    headers: Mapping[str, str] | None = None,
    attachments: Sequence[tuple[str, bytes, str]] = (),
) -> EmailMessage:
    """A multipart/alternative message (mixed when there are attachments)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id
    if reply_to:
        msg["Reply-To"] = reply_to
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    for filename, data, mimetype in attachments:
        maintype, _, subtype = mimetype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg
