"""`SandboxServer`: the sandbox over real HTTP (waitress, several threads) on 127.0.0.1."""

import logging
import threading

from waitress import wasyncore
from waitress.server import create_server

from moodle_ws.sandbox.app import SandboxApp
from moodle_ws.sandbox.site import Site

log = logging.getLogger(__name__)


class SandboxServer:
    """Serve `site` on 127.0.0.1:`port` (0 = any free port) until `stop()`.

    `url` is the site's wwwroot; starting sets `site.wwwroot` to it, so every URL the
    site returns points at this server. Usable as a context manager.
    """

    def __init__(self, site: Site, port: int = 0, host: str = "127.0.0.1", threads: int = 16):
        self.site = site
        self.host, self.port, self.threads = host, port, threads
        self._server = None
        self._thread: threading.Thread | None = None
        self._url = ""
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`, the Moodle wwwroot (set once started)."""
        if not self._url:
            raise RuntimeError("the sandbox server is not started")
        return self._url

    def start(self) -> "SandboxServer":
        """Bind and serve in a background thread; returns self. Idempotent."""
        if self._server is not None:
            return self
        self._server = create_server(
            SandboxApp(self.site),
            host=self.host,
            port=self.port,
            threads=self.threads,
            ident="Apache",
            connection_limit=1000,
            channel_timeout=30,
            clear_untrusted_proxy_headers=True,
        )
        self._url = f"http://{self.host}:{self._server.effective_port}"
        self.site.wwwroot = self._url
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="moodle-sandbox", daemon=True)
        self._thread.start()
        log.info("moodle sandbox: serving %s", self.url)
        return self

    def _serve(self) -> None:
        # waitress's own run() cannot be stopped from another thread (closing its sockets
        # under a running select() fails), so the loop runs here and closes itself.
        server = self._server
        assert server is not None
        try:
            while not self._stopping.is_set():
                server.asyncore.loop(
                    timeout=0.5, map=server._map, use_poll=server.adj.asyncore_use_poll, count=1
                )
        finally:
            server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
            wasyncore.close_all(server._map)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and wait for the server thread (at most `timeout` seconds)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        try:
            server.pull_trigger()  # wake the loop now rather than at its next timeout
        except OSError:
            pass  # the loop saw the flag first and closed the trigger already
        if thread is not None:
            thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
