"""Verify and apply a worker's callback (CONTRACTS §4): one function for HTTP and results queues."""

from sidecar.errors import SidecarError


class CallbackRejected(SidecarError):
    """A callback refused as a whole; nothing was changed. `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason
