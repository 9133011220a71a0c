"""Requests gunicorn refuses before the app sees them, sent as raw bytes, and their answers."""

from __future__ import annotations

import socket


def refused_requests(origin: str) -> dict[int, bytes]:
    """One request per refusal status (431, 414, 400), each sent from origin."""
    sent_from = f"Origin: {origin}\r\n".encode()
    big_header = b"X-Big: " + b"b" * 9000 + b"\r\n"
    return {
        431: b"GET /music HTTP/1.1\r\nHost: x\r\n" + sent_from + big_header + b"\r\n",
        # The Origin comes after a request line gunicorn stopped reading: read on to find it.
        414: b"GET /music?" + b"q" * 20000 + b" HTTP/1.1\r\nHost: x\r\n" + sent_from + b"\r\n",
        400: b"GET /music HTTP/1.1\r\nHost: x\r\n" + sent_from + b"Bad Header: x\r\n\r\n",
    }


def response_head(url: str, request: bytes) -> str:
    """Send request on a new connection to url; the status line and headers of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).split(b"\r\n\r\n", 1)[0].decode()
