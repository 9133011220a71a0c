"""A webhook receiver for the tests: a real HTTP server on a loopback port that verifies every
delivery with the Standard Webhooks reference library, as a receiver would, and answers with
the statuses the test scripts."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from .waiting import wait_until


def new_secret() -> str:
    """A fresh whsec_ secret (32 random bytes)."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass(frozen=True)
class Received:
    """One POST the receiver was sent."""

    path: str
    id: str | None  # the webhook-id header
    headers: dict[str, str]
    body: bytes
    payload: Any  # the verified JSON, or None when it did not verify
    answered: int


class _Server(ThreadingHTTPServer):
    # Deliverers attempt up to a batch at once each: http.server's backlog of 5 would refuse
    # some connections on a loaded machine, and a refused attempt waits for its retry.
    request_queue_size = 128
    daemon_threads = True


class Receiver:
    """Records each delivery, verified; answers the next scripted status (default 204)."""

    def __init__(self, secret: str, port: int = 0) -> None:
        self.secret = secret
        self.received: list[Received] = []
        self.answers: deque[int] = deque()
        self.failing: dict[str, int] = {}  # track id → how many more of its deliveries get 500
        self.delay = 0.0  # seconds to wait before answering (a slow receiver)
        self.redirect_to: str | None = None  # answer 307 to this path instead
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.answer(self, headers, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def answer(self, handler: BaseHTTPRequestHandler, headers: dict[str, str], body: bytes) -> None:
        """Verify, record, wait if told to, answer."""
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            payload = None
        with self._lock:
            status = self.answers.popleft() if self.answers else 204
            track = _track_id(payload)
            if self.failing.get(track, 0) > 0:
                self.failing[track] -= 1
                status = 500
            if payload is None:
                status = 401
            redirect = self.redirect_to if handler.path == "/hooks" else None
            if redirect is not None:
                status = 307
            self.received.append(
                Received(handler.path, headers.get("webhook-id"), headers, body, payload, status)
            )
        if self.delay:
            time.sleep(self.delay)
        handler.send_response(status)
        if redirect is not None:
            handler.send_header("Location", f"http://127.0.0.1:{self.port}{redirect}")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def verified(self) -> list[Any]:
        """The payloads that verified, in the order they came."""
        with self._lock:
            return [r.payload for r in self.received if r.payload is not None]

    def ids(self) -> list[str | None]:
        with self._lock:
            return [r.id for r in self.received]

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Until `count` deliveries have come."""
        wait_until(lambda: len(self.received) >= count, timeout)

    def start(self) -> Receiver:
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
            self._thread = None
        self.server.server_close()


def _track_id(payload: Any) -> str:
    """The id of the track a verified payload is about ("" when none)."""
    if not isinstance(payload, dict):
        return ""
    data = payload.get("data", {})
    return str(data.get("track", {}).get("id") or data.get("id") or "")


@contextmanager
def receiving(secret: str, port: int = 0) -> Iterator[Receiver]:
    """A started Receiver until the block ends."""
    receiver = Receiver(secret, port).start()
    try:
        yield receiver
    finally:
        receiver.stop()
