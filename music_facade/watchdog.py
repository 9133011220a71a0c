"""Watchdog: one deadline for a whole upstream exchange, enforced by shutting its socket down.

requests' read timeout bounds each wait for bytes, so an upstream that sends one header byte
every few seconds can hold a call for minutes. A single watchdog thread per process keeps the
deadlines of the exchanges in flight in a heap and, when one passes, shuts that exchange's socket
down: whatever read is blocked on it returns at once, and the client answers 504. It uses only
`threading` primitives, so under gevent's monkey-patching it is one greenlet, never a thread or
greenlet per call.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from gevent import monkey
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current: contextvars.ContextVar[Exchange | None] = contextvars.ContextVar(
    "upstream_exchange", default=None
)


class Exchange:
    """One upstream exchange's deadline (monotonic seconds) and the socket it is using."""

    def __init__(self, watchdog: Watchdog, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self._watchdog = watchdog
        self._sock: Any = None
        self._done = False

    def remaining(self) -> float:
        """Seconds left before the deadline (negative once past it)."""
        return self.deadline - self._watchdog.clock()

    def attach(self, sock: Any) -> None:
        """Watch this socket from now on (a retry may use another connection)."""
        with self._watchdog.cond:
            self._sock = sock
            if self.expired:
                _shutdown(sock)

    def fire(self) -> None:
        """The deadline passed: mark it and cut the socket (called under the watchdog's lock)."""
        if self._done:
            return
        self.expired = True
        if self._sock is not None:
            _shutdown(self._sock)

    def close(self) -> None:
        """The exchange is over: the watchdog never touches its socket again."""
        with self._watchdog.cond:
            self._done = True
            self._sock = None

    def __enter__(self) -> Exchange:
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)
        self.close()


def _shutdown(sock: Any) -> None:
    # The socket object, not its file descriptor number: once closed its fileno is -1, so a
    # late shutdown can never hit another connection that reused the number.
    # OSError: already closed or never connected, so nothing is left to interrupt.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class Watchdog:
    """A heap of exchange deadlines and one lazily started thread that fires them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # A plain lock (nothing takes it twice): under gevent, threading's RLock is its
        # pure-Python fallback, and every exchange takes this lock three times.
        self.cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Exchange]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopped = False
        # When the thread will next look at the heap by itself (inf: only when notified).
        self._wake_at = 0.0

    def exchange(self, seconds: float) -> Exchange:
        """A new exchange that must end within `seconds`; use it as a context manager."""
        ex = Exchange(self, self.clock() + seconds)
        with self.cond:
            self._ensure_thread()
            # Exchanges mostly end in the order they began, so the oldest is usually done: drop
            # it here. The thread sleeps until the oldest deadline and would otherwise keep
            # every exchange of the last `seconds` (calls per second times the deadline).
            while self._heap and self._heap[0][2]._done:
                heapq.heappop(self._heap)
            heapq.heappush(self._heap, (ex.deadline, next(self._order), ex))
            # Woken only when it would otherwise sleep past this deadline: deadlines mostly
            # grow, so the thread already wakes in time (waking it costs a miss a switch to
            # its greenlet and back, a twentieth of the service's own time).
            if ex.deadline < self._wake_at:
                self.cond.notify()
        return ex

    def stop(self) -> None:
        """End the thread (exchanges still in flight are no longer bounded)."""
        with self.cond:
            self._stopped = True
            self.cond.notify()

    def _ensure_thread(self) -> None:
        # Started on first use, and again in a forked worker (threads do not survive a fork).
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="upstream-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self.cond:
            while not self._stopped:
                while self._heap and self._heap[0][2]._done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake_at = math.inf
                    self.cond.wait()
                    self._wake_at = 0.0
                    continue
                self._wake_at = self._heap[0][0]
                wait = self._wake_at - self.clock()
                if wait > 0:
                    self.cond.wait(wait)
                    self._wake_at = 0.0
                    continue
                self._wake_at = 0.0
                heapq.heappop(self._heap)[2].fire()


def current_exchange() -> Exchange | None:
    """The exchange the calling thread (or greenlet) is in, if any."""
    return _current.get()


# The system's poll, even once gevent has patched select: a poll(0) never waits, and gevent's
# emulation answers it through watchers and a trip round the hub (measured: a tenth of a miss).
_poll = monkey.get_original("select", "poll")


class _WatchedMixin:
    """Hands the connection's socket to the current exchange once the request is sent."""

    sock: Any

    @property
    def is_connected(self) -> bool:
        """urllib3's check before reusing a pooled connection: open, and nothing to read (a
        closed peer's EOF or stray bytes make the socket readable). One poll(0) system call."""
        if self.sock is None:
            return False
        poller = _poll()
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)

    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)  # type: ignore[misc]
        ex = _current.get()
        if ex is not None and self.sock is not None:
            ex.attach(self.sock)


class WatchedHTTPConnection(_WatchedMixin, HTTPConnection):
    """urllib3's HTTPConnection, watched."""


class WatchedHTTPSConnection(_WatchedMixin, HTTPSConnection):
    """urllib3's HTTPSConnection, watched."""


class WatchedHTTPConnectionPool(HTTPConnectionPool):
    """A pool of watched HTTP connections."""

    ConnectionCls = WatchedHTTPConnection


class WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    """A pool of watched HTTPS connections."""

    ConnectionCls = WatchedHTTPSConnection


POOL_CLASSES = {"http": WatchedHTTPConnectionPool, "https": WatchedHTTPSConnectionPool}
"""For a PoolManager's pool_classes_by_scheme."""
