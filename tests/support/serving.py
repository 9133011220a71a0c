"""Servers of a test's own on loopback ports, each run from a thread: an upstream (an
http.server), or the app itself with werkzeug's threaded server (for streams, which Flask's
test client cannot hold open alongside other requests)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer

from flask import Flask
from werkzeug.serving import make_server


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[str]:
    """Run server in a thread until the block ends; yields its upstream base URL."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/tempolor"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@contextmanager
def served(app: Flask) -> Iterator[str]:
    """The app on a loopback port (a thread per request) until the block ends; its URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        app.extensions["lifecycle"].begin_shutdown()  # open streams end within a second
        server.shutdown()
        thread.join()
        server.server_close()
