"""CORS on gunicorn's own refusals (431, 414, 400): an allowed origin can read them, no other."""

from __future__ import annotations

from pathlib import Path

from music_facade.sandbox import SandboxServer
from tests.support.helpers import live_service
from tests.support.refusals import refused_requests, response_head

APP = "https://app.example.com"


def test_gunicorn_refusals_carry_cors(sandbox: SandboxServer, tmp_path: Path) -> None:
    with live_service(sandbox, tmp_path, f'[cors]\norigins = ["{APP}"]\n') as service:
        cases = refused_requests(APP)
        for status, request in cases.items():
            head = response_head(service.url, request)
            assert head.startswith(f"HTTP/1.1 {status} "), head
            assert f"Access-Control-Allow-Origin: {APP}" in head, head
            assert "WWW-Authenticate" in head  # in the exposed list
        # Another origin, or none: no CORS headers.
        for request in (
            cases[431].replace(APP.encode(), b"https://evil.example.com"),
            cases[431].replace(f"Origin: {APP}\r\n".encode(), b""),
        ):
            head = response_head(service.url, request)
            assert head.startswith("HTTP/1.1 431 "), head
            assert "Access-Control-Allow-Origin" not in head, head
