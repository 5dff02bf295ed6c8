"""SMTP delivery over one reused connection, paced to a rate, retrying what is temporary.

4xx replies and lost connections are retried in-process along `retry_backoff`, then
raised as TransientDeliveryError; 5xx replies raise PermanentDeliveryError carrying the
server's reply. The password is never logged.
"""

import logging
import smtplib
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage

from providers.base import PermanentDeliveryError, ProviderUnavailable, TransientDeliveryError
from providers.local.settings import SmtpSettings

log = logging.getLogger(__name__)


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()


class SmtpSender:
    def __init__(
        self,
        settings: SmtpSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self._sleep = sleep
        self._clock = clock
        self._conn: smtplib.SMTP | None = None
        self._next_slot: float | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- connection ------------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        return self.settings.ssl_context or ssl.create_default_context()

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.security == "tls":
                conn = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=self._context())
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
                if s.security == "starttls":
                    conn.starttls(context=self._context())
                    conn.ehlo()
            if s.user:
                conn.login(s.user, s.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentDeliveryError(
                f"SMTP {s.host}:{s.port}: login refused for {s.user}: "
                "check smtp_user/smtp_password",
                _reply(exc.smtp_code, exc.smtp_error),
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise ProviderUnavailable(f"SMTP {s.host}:{s.port}: cannot connect: {exc}") from None
        return conn

    def check(self) -> str:
        """Connect and EHLO; returns the server's name. Raises ProviderUnavailable."""
        conn = self._connect()
        try:
            code, text = conn.ehlo()
            return _reply(code, text).splitlines()[0]
        finally:
            self._quit(conn)

    def close(self) -> None:
        if self._conn is not None:
            self._quit(self._conn)
            self._conn = None

    @staticmethod
    def _quit(conn: smtplib.SMTP) -> None:
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            conn.close()

    # --- sending ---------------------------------------------------------------------------

    def _pace(self) -> None:
        rate = self.settings.rate_per_second
        if rate <= 0:
            return
        now = self._clock()
        if self._next_slot is None or self._next_slot < now:
            self._next_slot = now
        wait = self._next_slot - now
        if wait > 0:
            self._sleep(wait)
        self._next_slot += 1.0 / rate

    def send(self, msg: EmailMessage) -> None:
        """Send one message. Raises Transient/PermanentDeliveryError or ProviderUnavailable."""
        delays = list(self.settings.retry_backoff)
        while True:
            try:
                self._send_once(msg)
                return
            except TransientDeliveryError as exc:
                if not delays:
                    raise
                delay = delays.pop(0)
                log.warning("SMTP: temporary failure (%s); retrying in %ss", exc.reply, delay)
                self._sleep(delay)

    def _send_once(self, msg: EmailMessage) -> None:
        self._pace()
        if self._conn is None:
            self._conn = self._connect()
        try:
            refused = self._conn.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            self._raise_for(code, text)
        except smtplib.SMTPNotSupportedError:
            # an address with non-ASCII before the @ needs SMTPUTF8: no retry brings it
            reply = "the SMTP server does not offer SMTPUTF8, which this address needs"
            raise PermanentDeliveryError(f"SMTP refused: {reply}", reply) from None
        except smtplib.SMTPResponseException as exc:
            self._raise_for(exc.smtp_code, exc.smtp_error)
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise TransientDeliveryError(f"SMTP connection lost: {exc}", str(exc)) from None
        else:
            if refused:
                code, text = next(iter(refused.values()))
                self._raise_for(code, text)

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _raise_for(self, code: int, text) -> None:
        reply = _reply(code, text)
        if self._conn is not None:
            try:
                self._conn.rset()
            except (OSError, smtplib.SMTPException):
                self._drop()
        if code >= 500:
            raise PermanentDeliveryError(f"SMTP refused: {reply}", reply)
        raise TransientDeliveryError(f"SMTP temporary failure: {reply}", reply)
