"""What every provider shares: the error tree and the Sender protocol."""

from email.message import EmailMessage
from typing import Protocol


class ProviderError(Exception):
    """Root of every provider error."""


class ProviderUnavailable(ProviderError):
    """The provider cannot be reached now (connection refused, timeout): retry later."""


class DeliveryError(ProviderError):
    """One message was not delivered; `reply` is what the server said."""

    def __init__(self, message: str, reply: str = ""):
        super().__init__(message)
        self.reply = reply or message


class TransientDeliveryError(DeliveryError):
    """A 4xx reply or a lost connection, after the in-process retries."""


class PermanentDeliveryError(DeliveryError):
    """A 5xx reply: this message will not be accepted as it is."""


class Sender(Protocol):
    def send(self, msg: EmailMessage) -> None: ...

    def close(self) -> None: ...
