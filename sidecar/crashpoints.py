"""Named points where a test can make this process die (SIGKILL), to prove crash safety.

`MOODLE_OFFLOAD_CRASH_AT=welcome.generated` kills the process the first time it reaches
that point (read once, at import). Unset (always, outside the tests) it does nothing.
"""

import os
import signal

_AT = os.environ.get("MOODLE_OFFLOAD_CRASH_AT", "")


def reach(name: str) -> None:
    """Die here, at once and without cleanup, if the tests asked for it."""
    if _AT and _AT == name:
        os.kill(os.getpid(), signal.SIGKILL)
