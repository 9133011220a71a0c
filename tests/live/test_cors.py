"""CORS on gunicorn's own refusals (431, 414, 400): an allowed origin can read them, no other."""

from __future__ import annotations

import socket
from pathlib import Path

from music_facade.sandbox import SandboxServer
from tests.support.helpers import live_service

APP = "https://app.example.com"


def _raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_gunicorn_refusals_carry_cors(sandbox: SandboxServer, tmp_path: Path) -> None:
    with live_service(sandbox, tmp_path, f'[cors]\norigins = ["{APP}"]\n') as service:
        origin = f"Origin: {APP}\r\n".encode()
        big_header = b"X-Big: " + b"b" * 9000 + b"\r\n"
        cases = {
            431: b"GET /music HTTP/1.1\r\nHost: x\r\n" + origin + big_header + b"\r\n",
            # The Origin comes after a request line gunicorn stopped reading: read on to find it.
            414: b"GET /music?" + b"q" * 20000 + b" HTTP/1.1\r\nHost: x\r\n" + origin + b"\r\n",
            400: b"GET /music HTTP/1.1\r\nHost: x\r\n" + origin + b"Bad Header: x\r\n\r\n",
        }
        for status, request in cases.items():
            answer = _raw(service.url, request)
            head = answer.split(b"\r\n\r\n", 1)[0].decode()
            assert head.startswith(f"HTTP/1.1 {status} "), head
            assert f"Access-Control-Allow-Origin: {APP}" in head, head
            assert "WWW-Authenticate" in head  # in the exposed list
        # Another origin, or none: no CORS headers.
        for request in (
            cases[431].replace(APP.encode(), b"https://evil.example.com"),
            cases[431].replace(origin, b""),
        ):
            head = _raw(service.url, request).split(b"\r\n\r\n", 1)[0].decode()
            assert head.startswith("HTTP/1.1 431 "), head
            assert "Access-Control-Allow-Origin" not in head, head
