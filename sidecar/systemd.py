"""sd_notify without a dependency: no-op outside systemd, never raises."""

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> None:
    """Send `state` (e.g. "READY=1") to $NOTIFY_SOCKET if set."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendall(state.encode())
    except OSError:
        log.debug("sd_notify %r failed", state, exc_info=True)
