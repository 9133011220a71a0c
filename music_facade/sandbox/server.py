"""SandboxServer: the sandbox app served over real HTTP from a background thread."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from music_facade.sandbox.app import (
    RAW_HEADERS_KEY,
    RAW_WRITER_KEY,
    SANDBOX_TOKEN,
    SandboxState,
    create_sandbox,
)

API_PREFIX = "/v1/tempolor"
# serve_forever notices shutdown() only between polls: keep stop() prompt.
_POLL_SECONDS = 0.05


class _RequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, also passing on the request headers exactly as sent."""

    def make_environ(self) -> Any:
        """The WSGI environ plus the raw header list (Werkzeug drops names with "_")."""
        environ = super().make_environ()
        environ[RAW_HEADERS_KEY] = list(self.headers.items())
        environ[RAW_WRITER_KEY] = self._write_raw
        return environ

    def _write_raw(self, data: bytes) -> None:
        """Bytes straight to the socket, for faults below Werkzeug's response writer."""
        self.close_connection = True
        self.wfile.write(data)
        self.wfile.flush()


class _QuietRequestHandler(_RequestHandler):
    """The same, without the per-request access log line."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log nothing: tests make hundreds of requests."""


class SandboxServer:
    """The sandbox upstream on a real socket; a context manager that starts and stops it."""

    def __init__(
        self,
        state: SandboxState | None = None,
        *,
        encodings: tuple[str, ...] | None = None,
        token: str = SANDBOX_TOKEN,
        page_size: int = 10,
        host: str = "127.0.0.1",
        port: int = 0,
        quiet: bool = True,
    ) -> None:
        if state is None:
            state = SandboxState() if encodings is None else SandboxState(encodings)
        self.state = state
        self.token = token
        self.app = create_sandbox(self.state, token=token, page_size=page_size)
        self._host = host
        self._port = port
        self._handler = _QuietRequestHandler if quiet else _RequestHandler
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        """http://host:port, where the /_sandbox control endpoints live."""
        if self._server is None:
            raise RuntimeError("the sandbox server is not bound; call start() first")
        host = self._server.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._server.port}"

    @property
    def base_url(self) -> str:
        """The upstream base URL to configure, e.g. http://127.0.0.1:43121/v1/tempolor."""
        return self.origin + API_PREFIX

    def bind(self) -> None:
        """Bind and listen (idempotent); requests queue until serving starts."""
        if self._server is None:
            self._server = make_server(
                self._host, self._port, self.app, threaded=True, request_handler=self._handler
            )

    def start(self) -> SandboxServer:
        """Bind, then serve from a daemon thread; the socket accepts connections on return."""
        if self._thread is not None:
            return self
        self.bind()
        assert self._server is not None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_SECONDS},
            name=f"sandbox-server-{self._server.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from the calling thread until interrupted, then close."""
        self.bind()
        assert self._server is not None
        try:
            self._server.serve_forever(poll_interval=_POLL_SECONDS)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving and close the socket, releasing hangs and drips in progress."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        if thread is not None:
            server.shutdown()
            thread.join()
        # Request threads are daemons (Werkzeug's choice), so server_close() does not join
        # them; releasing lets a hang or drip in progress finish instead of lingering.
        self.state.release()
        server.server_close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
