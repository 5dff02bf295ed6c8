"""Named points where a test can make this process die (SIGKILL), to prove crash safety,
or make a thread hang, to prove the systemd watchdog notices.

`MOODLE_OFFLOAD_CRASH_AT=welcome.generated` kills the process the first time it reaches
that point; `MOODLE_OFFLOAD_HANG_AT=delivery.run` blocks the thread that reaches that point
for good, as a call that never returns would (both read once, at import). Unset (always,
outside the tests) they do nothing.
"""

import os
import signal
import threading

_AT = os.environ.get("MOODLE_OFFLOAD_CRASH_AT", "")
_HANG_AT = os.environ.get("MOODLE_OFFLOAD_HANG_AT", "")


def reach(name: str) -> None:
    """Die here, at once and without cleanup, if the tests asked for it."""
    if _AT and _AT == name:
        os.kill(os.getpid(), signal.SIGKILL)


def hang(name: str) -> None:
    """Block this thread for good here, if the tests asked for it."""
    if _HANG_AT and _HANG_AT == name:
        threading.Event().wait()
