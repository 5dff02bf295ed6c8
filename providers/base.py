"""What every provider shares: the error tree, the Sender protocol, and what a queue
submitter (SQS, Cloudflare Queues) answers."""

from dataclasses import dataclass
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


class MessageOverLimit(ProviderError):
    """A body is over the queue's limit: it should have been split by build_batch_parts."""


class SubmitInterrupted(ProviderUnavailable):
    """The queue became unreachable mid-submission; `outcomes` holds what it took so far."""

    def __init__(self, message: str, outcomes: "dict[str, BatchOutcome]"):
        super().__init__(message)
        self.outcomes = outcomes


@dataclass(frozen=True)
class BatchOutcome:
    """One batch's parts: the queue's message id per accepted part, an error per failed one."""

    batch_id: str
    message_ids: tuple[str | None, ...]
    errors: tuple[str | None, ...]

    @property
    def queued(self) -> bool:
        """True when the queue accepted every part of the batch."""
        return all(self.message_ids)

    @property
    def error(self) -> str | None:
        return next((e for e in self.errors if e), None)
