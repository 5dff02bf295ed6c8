"""RFC 5322 messages for bulk mail: text + HTML, attachments, a stable Message-ID."""

from collections.abc import Mapping, Sequence
from email import policy
from email.message import EmailMessage
from email.utils import formatdate

#: Headers written exactly as given, on one line: a URL list (RFC 2369) has no space to
#: fold at, so a policy would fold a long one by turning it into RFC 2047 encoded-words,
#: which no mailbox provider reads as a link (and then shows no unsubscribe button).
VERBATIM_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})
#: RFC 5322: a line is at most 998 characters
MAX_LINE = 998
#: the default policy, except that a header set verbatim is never refolded; every other
#: header is still folded, and encoded when it is not ASCII
POLICY = policy.default.clone(refold_source="none")


def make_message_id(job_id: str, userid: int, domain: str) -> str:
    """The same (job, recipient) always gives the same Message-ID, so a resend is recognisable."""
    return f"<{job_id}.{userid}@{domain or 'moodle-offload.invalid'}>"


def verbatim_header(name: str, value: str) -> str:
    """`value` when it can go as one unencoded header line; raises ValueError otherwise
    (a line break, a character that is not printable ASCII, or a line over 998)."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"the {name} header has a line break in it")
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"the {name} header must be printable ASCII")
    if len(name) + 2 + len(value) > MAX_LINE:
        raise ValueError(f"the {name} header is over the {MAX_LINE}-character line limit")
    return value


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
    """A multipart/alternative message (mixed when there are attachments).

    `headers` named in VERBATIM_HEADERS go out exactly as given; raises ValueError when
    one cannot (see verbatim_header) or any header value holds a line break.
    """
    msg = EmailMessage(policy=POLICY)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id
    if reply_to:
        msg["Reply-To"] = reply_to
    for name, value in (headers or {}).items():
        if name.lower() in VERBATIM_HEADERS:
            msg.set_raw(name, verbatim_header(name, value))
        else:
            msg[name] = value
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    for filename, data, mimetype in attachments:
        maintype, _, subtype = mimetype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg
