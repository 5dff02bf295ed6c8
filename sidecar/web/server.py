"""Serve the WSGI app with waitress in a daemon thread: bind at start, close and join at stop."""

import errno
import logging
import threading
from typing import Any

from waitress import wasyncore
from waitress.server import create_server

from sidecar.errors import ConfigError

log = logging.getLogger(__name__)

#: waitress buffers a whole request before the app runs; this caps that buffer well above
#: the app's own limit, so the app (not waitress) answers the usual 413 in JSON.
_BUFFER_FACTOR = 4
_MIN_BUFFER = 16 * 1024 * 1024


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class HttpServer:
    """The HTTP listener for one app; `start()` binds (port 0 picks a free port)."""

    def __init__(self, app: Any, host: str, port: int, *, threads: int = 8):
        self.app = app
        self.host = host.strip("[]")
        self.requested_port = port
        self.threads = threads
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def address(self) -> str:
        """`host:port` as asked for (the bound port once started)."""
        port = self.port if self._server is not None else self.requested_port
        return f"{_format_host(self.host)}:{port}"

    @property
    def port(self) -> int:
        """The bound port; raises RuntimeError before `start()`."""
        if self._server is None:
            raise RuntimeError("HttpServer.port: the server is not started")
        return int(self._server.effective_port)

    @property
    def url(self) -> str:
        """`http://host:port` of the bound socket, without a trailing slash."""
        return f"http://{_format_host(self.host)}:{self.port}"

    def start(self) -> None:
        """Bind and serve in a daemon thread; raises ConfigError naming the address on failure."""
        if self._server is not None:
            raise RuntimeError(f"HttpServer on {self.address} is already started")
        max_body = getattr(self.app, "max_body", 0)
        try:
            self._server = create_server(
                self.app,
                host=self.host,
                port=self.requested_port,
                threads=self.threads,
                ident="moodle-offload",
                expose_tracebacks=False,
                max_request_body_size=max(max_body * _BUFFER_FACTOR, _MIN_BUFFER),
            )
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            hint = (
                "another process is listening there; stop it or choose another [server] listen"
                if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE
                else "check [server] listen (host must be a local address, port 0-65535)"
            )
            raise ConfigError(f"cannot listen on {self.address}: {reason}; {hint}") from None
        self._thread = threading.Thread(target=self._run, name=f"http-{self.port}", daemon=True)
        self._thread.start()
        log.debug("http: serving on %s", self.url)

    def _run(self) -> None:
        try:
            self._server.run()
        except Exception:  # noqa: BLE001 - thread boundary: the listener died
            log.exception("http: the listener on %s stopped unexpectedly", self.address)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection, then join the threads (idempotent)."""
        server, thread = self._server, self._thread
        if server is None or self._stopped:
            return
        self._stopped = True
        done = threading.Event()

        def close_all() -> None:  # runs inside the asyncore loop thread
            wasyncore.close_all(server._map, ignore_all=True)
            done.set()

        if thread is not None and thread.is_alive():
            try:
                server.trigger.pull_trigger(close_all)
            except OSError:
                close_all()
            thread.join(timeout)
            if thread.is_alive():
                log.warning(
                    "http: the listener on %s did not stop within %ss", self.address, timeout
                )
        else:
            close_all()
        server.task_dispatcher.shutdown(timeout=timeout)
        log.debug("http: stopped %s", self.address)
