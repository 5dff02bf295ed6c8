"""The side effects for one recipient: the certificate PDF into S3, the email through SES v2.

Throttling (SES `TooManyRequestsException`, S3 `SlowDown`, …), HTTP 5xx and connection
errors are retried here, with exponential backoff and jitter, on top of botocore's own
"standard" retries; when they persist, `Backoff` tells the caller to give the SQS record
back. Every other refusal (`MessageRejected`, `AccessDenied`, an unrenderable PDF, …)
is `Refused`: this recipient will not pass as it is.

SES takes no idempotency key, so a SendEmail whose request may have reached SES is never
sent again: a lost answer (read timeout, connection closed mid-answer) is `Unknown`, and
the caller records the recipient as an unknown outcome. Only errors that prove SES did
not take the request (an error answer, no connection made) are retried; the SES client
is built without botocore retries for that reason (`NO_RETRY_SERVICES`).
"""

import logging
import random
import re
from collections.abc import Callable
from email import policy
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from providers.aws.clients import error_parts, is_transient
from providers.aws.worker.batch import Batch, Recipient
from providers.aws.worker.settings import WorkerSettings
from providers.base import ProviderError
from providers.email import build_message, make_message_id

log = logging.getLogger(__name__)

ATTACHMENT_NAME = "certificate.pdf"
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")
# non-ASCII bodies go base64, not 8bit; List-Unsubscribe stays one line (providers.email)
_RAW_POLICY = policy.SMTP.clone(cte_type="7bit", refold_source="none")


class Backoff(Exception):
    """A throttled or failing service outlasted the retries: stop, let SQS redeliver."""


#: services whose calls are not idempotent: their clients get no botocore retries
NO_RETRY_SERVICES = frozenset({"sesv2"})


class Unknown(Exception):
    """The request may have reached the service and its answer was lost: not retried."""


class Refused(Exception):
    """This recipient cannot be delivered as it is; `code` is a short, address-free label."""

    def __init__(self, reason: str, code: str):
        super().__init__(reason)
        self.code = code


class Delivery:
    """S3 and SES v2 calls for one recipient at a time; `client(service)` gives the clients."""

    def __init__(
        self,
        settings: WorkerSettings,
        client: Callable[[str], Any],
        *,
        sleep: Callable[[float], None],
        rng: random.Random,
    ):
        self.settings = settings
        self._client = client
        self._sleep = sleep
        self._rng = rng

    def store_certificate(
        self, who: str, batch: Batch, r: Recipient
    ) -> tuple[str | None, bytes | None]:
        """Render and store the certificate: its S3 key and PDF, or (None, None) when none.

        The key is fixed by (key_prefix, userid), so storing again overwrites the same
        object. Raises Refused (unrenderable, or S3 refused) and Backoff (throttled).
        """
        if not (batch.make_certificate and r.certificate_html):
            if not batch.send_email:
                raise Refused("no certificate_html for this recipient", "no certificate")
            return None, None
        pdf = render_certificate(r.certificate_html)
        key = batch.certificate_key(r.userid)
        params = {
            "Bucket": batch.bucket, "Key": key, "Body": pdf,
            "ContentType": "application/pdf", "ServerSideEncryption": self.settings.cert_sse,
        }  # fmt: skip
        if self.settings.cert_kms_key_id:
            params["SSEKMSKeyId"] = self.settings.cert_kms_key_id
        self._call(who, "S3 PutObject", self._client("s3").put_object, params)
        return key, pdf

    def send_email(self, who: str, batch: Batch, r: Recipient, pdf: bytes | None) -> str:
        """Send the recipient's email; SES's MessageId. Raises Refused and Backoff.

        With `attach_certificate` and a PDF the message is raw MIME with the PDF attached;
        with an `unsubscribe_url` it is raw MIME carrying List-Unsubscribe and
        List-Unsubscribe-Post (SES simple content takes custom headers only in botocore
        releases newer than some Lambda runtimes ship); otherwise SES simple content.
        """
        params: dict[str, Any] = {
            "FromEmailAddress": batch.sender,
            "Destination": {"ToAddresses": [r.email]},
            "EmailTags": [
                {"Name": "job_id", "Value": tag_value(batch.job_id)},
                {"Name": "batch_id", "Value": tag_value(batch.batch_id)},
                {"Name": "userid", "Value": tag_value(r.userid)},
            ],
        }
        if batch.reply_to:
            params["ReplyToAddresses"] = [batch.reply_to]
        configuration_set = batch.configuration_set or self.settings.ses_configuration_set
        if configuration_set:
            params["ConfigurationSetName"] = configuration_set
        attach = pdf if batch.attach_certificate else None
        if attach is not None or r.unsubscribe_url:
            params["Content"] = {"Raw": {"Data": raw_message(batch, r, attach)}}
        else:
            body = {kind: {"Data": data, "Charset": "UTF-8"}
                    for kind, data in (("Html", r.html), ("Text", r.text)) if data}  # fmt: skip
            subject = {"Data": r.subject, "Charset": "UTF-8"}
            params["Content"] = {"Simple": {"Subject": subject, "Body": body}}
        send = self._client("sesv2").send_email
        resp = self._call(who, "SES SendEmail", send, params, idempotent=False)
        return resp["MessageId"]

    def _call(
        self,
        who: str,
        what: str,
        method: Callable[..., Any],
        params: dict,
        *,
        idempotent: bool = True,
    ) -> Any:
        """`method(**params)`, throttling retried; raises Backoff (persistent) or Refused,
        and Unknown when a call that is not `idempotent` may have been taken."""
        retries = self.settings.ses_retries
        for attempt in range(retries + 1):
            try:
                return method(**params)
            except ClientError as exc:
                code, status, text = error_parts(exc)
                if not is_transient(code, status):
                    reason = f"{what}: {code}: {text}".rstrip(": ")
                    raise Refused(reason, f"{what}: {code}") from None
                reason = f"{what}: {code or f'HTTP {status}'}"
            except BotoConnectionError as exc:  # no connection: the request was not sent
                reason = f"{what}: {exc}"
            except HTTPClientError as exc:  # sent; the answer was lost
                if not idempotent:
                    raise Unknown(f"{what}: {type(exc).__name__}: {exc}") from None
                reason = f"{what}: {exc}"
            except BotoCoreError as exc:  # e.g. parameter validation: will not pass later
                raise Refused(f"{what}: {exc}", f"{what}: {type(exc).__name__}") from None
            if attempt == retries:
                raise Backoff(f"{reason} (after {retries + 1} tries)")
            delay = self._backoff(attempt)
            log.warning("%s: %s; retry %d/%d in %.2fs", who, reason, attempt + 1, retries, delay)
            self._sleep(delay)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        cap = min(self.settings.backoff_max, self.settings.backoff_base * 2**attempt)
        return self._rng.uniform(cap / 2, cap)


def render_certificate(html: str) -> bytes:
    """The certificate PDF (the renderer local delivery uses); raises Refused."""
    # imported here: xhtml2pdf takes a second to load, which email-only jobs need not pay
    from providers.local.pdf import render_pdf

    try:
        return render_pdf(html)
    except ProviderError as exc:
        raise Refused(str(exc), "certificate PDF not rendered") from None
    except Exception as exc:  # xhtml2pdf raises many kinds on bad markup; none passes later
        reason = f"certificate PDF could not be rendered: {type(exc).__name__}: {exc}"
        raise Refused(reason.rstrip(": "), "certificate PDF not rendered") from None


def raw_message(batch: Batch, r: Recipient, pdf: bytes | None) -> bytes:
    """The recipient's email as 7-bit MIME, with the PDF attached when given and the
    one-click unsubscribe headers when the recipient has a link; raises Refused."""
    sender = batch.sender or ""
    headers = {}
    if r.unsubscribe_url:
        headers = {
            "List-Unsubscribe": f"<{r.unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
    try:
        msg = build_message(
            sender=sender,
            to=r.email,
            subject=r.subject,
            html=r.html,
            text=r.text,
            message_id=make_message_id(batch.job_id, r.userid, sender.rpartition("@")[2]),
            reply_to=batch.reply_to,
            headers=headers,
            attachments=[(ATTACHMENT_NAME, pdf, "application/pdf")] if pdf is not None else [],
        )
        return msg.as_bytes(policy=_RAW_POLICY)
    except (ValueError, TypeError) as exc:  # e.g. a line break in a header value
        raise Refused(f"the email cannot be built: {exc}", "email not built") from None


def tag_value(value: object) -> str:
    """`value` as SES accepts in a message tag (letters, digits, _ - . @), at most 256 long."""
    return _TAG_UNSAFE.sub("_", str(value))[:256] or "_"
