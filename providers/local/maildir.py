"""Delivery into a Maildir folder instead of an SMTP server (demo, staging, archiving)."""

import mailbox
from email.message import EmailMessage
from pathlib import Path

from providers.base import ProviderUnavailable


class MaildirSender:
    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.box = mailbox.Maildir(self.path, create=True)
        except OSError as exc:
            raise ProviderUnavailable(f"maildir {self.path}: {exc.strerror}") from None

    def send(self, msg: EmailMessage) -> None:
        """Write the whole message as one file in new/. Raises ProviderUnavailable on I/O errors."""
        try:
            self.box.add(msg)
        except OSError as exc:
            raise ProviderUnavailable(f"maildir {self.path}: {exc.strerror}") from None

    def check(self) -> str:
        return f"maildir {self.path}"

    def close(self) -> None:
        self.box.close()
