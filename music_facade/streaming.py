"""A streamed answer's hold on its worker: a slot among a few, and a bound on every write.

A stream lives as long as its caller reads, so it is the one answer a caller can make last:
a caller that stops reading leaves the worker's write blocked, the page being written held in
memory, and the stream's upstream budget unspent. `StreamSlots` caps how many streams one
worker runs at once (past it: 503 `library_busy`), and `Connection` gives each write a
timeout (gunicorn's gevent worker writes with a plain `sock.sendall`, which waits forever
otherwise), says whether the caller hung up, and drops the connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from .errors import Problem

# How long a refused caller should wait: streams end within seconds to minutes.
BUSY_RETRY_AFTER = 10


class LibraryBusy(Problem, code="library_busy"):
    """The worker already runs as many streams as it allows."""


class Slot:
    """One taken place among a worker's streams; release() gives it back (once)."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        """Give the place back; later calls do nothing."""
        release, self._release = self._release, None
        if release is not None:
            release()


class StreamSlots:
    """How many streams one worker process runs at once, refused rather than queued."""

    def __init__(self, size: int, busy: Callable[[int], Problem] | None = None) -> None:
        self.size = size
        self._free = threading.BoundedSemaphore(size)
        self._busy = busy or _library_busy

    def take(self) -> Slot:
        """A free slot, or the refusal (LibraryBusy unless told: 503 with Retry-After)."""
        if not self._free.acquire(blocking=False):
            raise self._busy(self.size)
        return Slot(self._free.release)


def _library_busy(size: int) -> Problem:
    return LibraryBusy(
        f"This process already streams {size} libraries; retry shortly.",
        headers={"Retry-After": str(BUSY_RETRY_AFTER)},
    )


class Connection:
    """The caller's socket, where the server tells (gunicorn: environ["gunicorn.socket"])."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._timeout = sock.gettimeout()

    @classmethod
    def of(cls, environ: dict[str, Any]) -> Connection | None:
        """The request's connection, or None where the server does not expose its socket."""
        sock = environ.get("gunicorn.socket")  # gevent's socket class under the gevent worker
        return None if sock is None else cls(sock)

    def bound_sends(self, seconds: float) -> None:
        """Make each write (one sendall) fail after `seconds` without completing."""
        with contextlib.suppress(OSError):
            self.sock.settimeout(seconds)

    def restore(self) -> None:
        """The socket's own timeout again, for the next request on a kept-alive connection."""
        with contextlib.suppress(OSError):
            self.sock.settimeout(self._timeout)

    def gone(self) -> bool:
        """Whether the caller closed its end (read side shows end of file, or an error).

        A caller that only half-closed (shut down its sending side, still reading) looks the
        same; HTTP clients do not, and one that did gets an answer cut short, never a wrong one.
        """
        # A non-blocking peek, not select(): select() refuses a descriptor numbered 1024 or
        # more (ValueError), which a worker holding a thousand streams hands out, and such a
        # caller would be taken for gone at its stream's first wait.
        sock = self.sock
        try:
            timeout = sock.gettimeout()
            sock.settimeout(0)
            try:
                # Bytes of a pipelined next request (still there), or the end (gone).
                return sock.recv(1, socket.MSG_PEEK) == b""
            finally:
                sock.settimeout(timeout)
        except BlockingIOError:  # nothing to read: still connected
            return False
        except (OSError, ValueError):  # reset, or already closed
            return True

    def stop_reading(self) -> None:
        """Let the answer's last bytes out, then have the server close the connection: its
        next read for another request on it finds the end. (A kept-alive connection would
        keep a leaving worker busy, and a client would ask again on it.)"""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)

    def drop(self) -> None:
        """End the connection at once: the server's next write fails, so it closes quietly
        instead of completing the answer (a stream cut short must not look complete)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class Stream:
    """A streamed body holding its slot and its write bound until the server closes it.

    PEP 3333 servers call close() on every body, started or not; should a body ever be dropped
    without that, collecting it releases the slot all the same.
    """

    def __init__(
        self,
        chunks: Iterator[bytes],
        slot: Slot,
        connection: Connection | None,
        send_timeout: float,
    ) -> None:
        self._chunks = chunks
        if connection is not None:
            connection.bound_sends(send_timeout)
        self._finish = weakref.finalize(self, _finish, chunks, slot, connection)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        """Close the chunks, restore the socket's timeout, give the slot back (once)."""
        self._finish()


def _finish(chunks: Iterator[bytes], slot: Slot, connection: Connection | None) -> None:
    try:
        close = getattr(chunks, "close", None)
        if close is not None:
            # "generator already executing" (ValueError): at interpreter exit the finalizer runs
            # while the thread serving the stream is still inside it; that thread ends it.
            with contextlib.suppress(ValueError):
                close()
    finally:
        if connection is not None:
            connection.restore()
        slot.release()
