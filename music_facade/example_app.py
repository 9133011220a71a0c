"""ExampleAppServer: the example web app's static files on a loopback origin of their own.

The demo serves the app from a port other than the service's, so the browser treats the service
as another origin and CORS is exercised as it is for a real frontend. The app's `config.js` is
answered from memory with the service's base URL, so the app needs no file written by hand.
"""

from __future__ import annotations

import json
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

# The app's files ship in the package (the wheel's package data); examples/web links here.
APP_DIR = Path(__file__).parent / "web"


class _Handler(SimpleHTTPRequestHandler):
    """Static files from APP_DIR, and config.js naming the service."""

    config_js: ClassVar[bytes] = b""
    # Not the host's mime.types: ES modules load only with a JavaScript type.
    extensions_map: ClassVar[dict[str, str]] = {  # type: ignore[misc]
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".html": "text/html; charset=utf-8",
    }

    def do_GET(self) -> None:
        """config.js from memory; anything else from the app's directory."""
        if self.path.split("?", 1)[0] == "/config.js":
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript; charset=utf-8")
            self.send_header("Content-Length", str(len(self.config_js)))
            self.send_header("Cache-Control", "no-store")  # a new demo may use another port
            self.end_headers()
            self.wfile.write(self.config_js)
            return
        super().do_GET()

    def end_headers(self) -> None:
        """No caching: a restarted demo serves the same URLs with other settings."""
        if not self.path.startswith("/config.js"):
            self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the demo's terminal is for its banner and the service's log."""


class ExampleAppServer:
    """The example app on `sock` (a listening socket the caller opened), from a daemon thread."""

    def __init__(self, sock: socket.socket, api_base: str) -> None:
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        config_js = f"export const API_BASE = {json.dumps(api_base)};\n".encode()
        handler = type("ExampleAppHandler", (_Handler,), {"config_js": config_js})
        self.server = ThreadingHTTPServer(
            sock.getsockname()[:2],
            partial(handler, directory=str(APP_DIR)),
            bind_and_activate=False,
        )
        self.server.socket.close()
        self.server.socket = sock  # already bound and listening: the port was checked earlier
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    def __enter__(self) -> ExampleAppServer:
        self.thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
