"""One step added to the request pipeline reaches gunicorn's own refusals as well."""

from __future__ import annotations

from pathlib import Path

import requests

from music_facade.sandbox import SandboxServer
from tests.support import stamped
from tests.support.helpers import live_service
from tests.support.refusals import refused_requests, response_head

NAME, VALUE = stamped.HEADER
APP = "https://app.example.com"


def test_an_added_step_puts_its_header_on_every_answer(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    # With CORS on, a refused request is read to the end of its head (for its Origin): the
    # connection closes cleanly, no reset under a request line gunicorn stopped reading.
    cors = f'[cors]\norigins = ["{APP}"]\n'
    with live_service(sandbox, tmp_path, cors, app=stamped.APP) as service:
        url = service.url
        requests.get(url + "/music?user=studio", timeout=10)
        hit = requests.get(url + "/music?user=studio", timeout=10)
        assert "hit" in hit.headers["Cache-Status"]
        answers = {
            "/music hit": hit,
            "/healthz": requests.get(url + "/healthz", timeout=10),
            "404": requests.get(url + "/no-such-path", timeout=10),
            "405": requests.post(url + "/music", timeout=10),
        }
        assert [a.status_code for a in answers.values()] == [200, 200, 404, 405]
        for label, answer in answers.items():
            assert answer.headers.get(NAME) == VALUE, label
        # gunicorn refuses these before the app sees them: the pipeline still runs.
        refusals = refused_requests(APP)
        for status, request in refusals.items():
            head = response_head(url, request)
            assert head.startswith(f"HTTP/1.1 {status} "), head
            assert f"\r\n{NAME}: {VALUE}\r\n" in head + "\r\n", head
            assert "\r\nX-Request-ID: " in head, head
            assert "\r\ntraceparent: 00-" in head, head
            assert f"\r\nAccess-Control-Allow-Origin: {APP}\r\n" in head + "\r\n", head
