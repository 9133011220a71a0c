"""The Origin of a request gunicorn refused, so its problem answer can carry CORS headers.

gunicorn refuses some requests while parsing them (414, 431, 400) and the app never sees them;
a page on an allowed origin can read such an answer only if it carries the CORS headers, which
depend on the request's Origin header. `HeadKeepingRequest` (gunicorn's Request, installed by
music_facade.worker) keeps a reference to the bytes it was parsing and hands them to the exception;
`origin_of` finds the Origin there, reading a little more of the request when the refusal came
before its headers (a request line too long), within a small bound in bytes and time.
"""

from __future__ import annotations

import re
import socket
from typing import Any

from gunicorn.http.message import Request

HEAD_ATTR = "_music_facade_head"
MORE_BYTES = 64 * 1024  # read at most this much more of a refused request's head
MORE_SECONDS = 0.5  # and wait at most this long for it
_ORIGIN_RE = re.compile(rb"\r\norigin:[ \t]*([!-~]{1,256})[ \t]*\r\n", re.IGNORECASE)


class HeadKeepingRequest(Request):  # type: ignore[misc]
    """gunicorn's Request, whose parse errors carry the bytes read so far (HEAD_ATTR)."""

    def read_into(self, unreader: Any, buf: bytearray, stop: bool = False) -> None:
        """gunicorn's read; the buffer it filled last holds the head read so far."""
        self._last_buf = buf  # a reference, not a copy: nothing added on the normal path
        super().read_into(unreader, buf, stop)

    def parse(self, unreader: Any) -> Any:
        """gunicorn's parse; an error leaving it carries the bytes read so far."""
        try:
            return super().parse(unreader)
        except Exception as exc:
            setattr(exc, HEAD_ATTR, bytes(getattr(self, "_last_buf", b"")))
            raise


def origin_of(exc: BaseException, client: socket.socket) -> str | None:
    """The Origin header of the request whose parsing raised exc, if it can be found."""
    head = getattr(exc, HEAD_ATTR, None)
    if head is None:
        return None
    # Only header lines count: from a line start, up to the end of the head.
    if b"\r\n\r\n" not in head:
        head += _read_more(client, head)
    found = _ORIGIN_RE.search(head.split(b"\r\n\r\n", 1)[0] + b"\r\n")
    return found.group(1).decode("ascii") if found else None


def _read_more(client: socket.socket, head: bytes) -> bytes:
    """The rest of the head, as far as MORE_BYTES and MORE_SECONDS allow."""
    more = bytearray()
    previous = client.gettimeout()
    client.settimeout(MORE_SECONDS)
    try:
        while len(more) < MORE_BYTES and b"\r\n\r\n" not in (head[-3:] + more):
            chunk = client.recv(8192)
            if not chunk:
                break
            more += chunk
    except OSError:
        pass  # a timeout or a reset: answer with what was read
    finally:
        client.settimeout(previous)
    return bytes(more)
