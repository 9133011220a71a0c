"""One step added to the request pipeline reaches every response Flask or the handler makes."""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from music_facade.app import create_app
from music_facade.pipeline import Exchange, Pipeline, Step
from music_facade.sandbox import SandboxServer
from tests.support import stamped
from tests.support.helpers import AppFactory, sandbox_settings

NAME, VALUE = stamped.HEADER


def _stamped_app(sandbox: SandboxServer) -> Flask:
    app = stamped.create_app(sandbox_settings(sandbox))
    app.config["TESTING"] = True
    return app


def test_an_added_step_puts_its_header_on_every_answer(sandbox: SandboxServer) -> None:
    app = _stamped_app(sandbox)
    client = app.test_client()
    try:
        client.get("/music?user=studio")  # a miss: the page is stored
        hit = client.get("/music?user=studio")
        assert hit.status_code == 200
        assert "hit" in hit.headers["Cache-Status"]
        answers = {
            "/music hit": hit,
            "/healthz": client.get("/healthz"),
            "404": client.get("/no-such-path"),
            "405": client.post("/music"),
            "/music problem": client.get("/music?user=nobody-known"),
        }
        assert [answer.status_code for answer in answers.values()] == [200, 200, 404, 405, 400]
        for label, answer in answers.items():
            assert answer.headers.get(NAME) == VALUE, label
            # Beside what the standard steps give every response.
            assert answer.headers["X-Content-Type-Options"] == "nosniff", label
            assert answer.headers["X-Request-ID"], label
            assert answer.headers["traceparent"], label
    finally:
        app.extensions["music"].client.close()


def test_without_the_step_no_header(sandbox: SandboxServer) -> None:
    app = create_app(sandbox_settings(sandbox))
    try:
        assert NAME not in app.test_client().get("/healthz").headers
    finally:
        app.extensions["music"].client.close()


class _Recorder(Step):
    """Records which phase of which step ran, in order."""

    def __init__(self, name: str, seen: list[str]) -> None:
        self.name = name
        self.seen = seen

    def begin(self, ex: Exchange) -> None:
        self.seen.append(f"begin {self.name}")

    def headers(self, ex: Exchange, out: list[tuple[str, str]]) -> None:
        self.seen.append(f"headers {self.name}")

    def end(self, ex: Exchange) -> None:
        self.seen.append(f"end {self.name}")


def test_begin_and_headers_run_in_order_end_in_reverse() -> None:
    seen: list[str] = []
    pipeline = Pipeline([_Recorder("a", seen), Step(), _Recorder("b", seen)])
    ex = Exchange({}, "GET", "/x", "/x")
    pipeline.begin(ex)
    pipeline.headers(ex, [])
    pipeline.end(ex)
    assert seen == [
        "begin a", "begin b", "headers a", "headers b", "end b", "end a",
    ]  # fmt: skip


def test_a_refusal_gets_the_pipelines_headers_and_no_access_line(
    sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    origin = "https://app.example.com"
    app = stamped.create_app(sandbox_settings(sandbox, cors_origins=(origin,)))
    try:
        pipeline: Pipeline = app.extensions["pipeline"]
        with caplog.at_level(logging.INFO, logger="music_facade.access"):
            headers = dict(pipeline.refusal_headers(origin, "GET"))
        assert headers[NAME] == VALUE
        assert headers["Access-Control-Allow-Origin"] == origin
        assert len(headers["X-Request-ID"]) == 32
        assert headers["traceparent"].startswith("00-")
        # gunicorn's warning is a refusal's log line; it has no route to count.
        assert not [r for r in caplog.records if r.name == "music_facade.access"]
    finally:
        app.extensions["music"].client.close()


def test_the_access_line_carries_the_requests_upstream_calls(
    make_app: AppFactory, sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_app().test_client()
    with caplog.at_level(logging.INFO):
        assert client.get("/music?user=studio").status_code == 200  # a miss
        assert client.get("/music?user=studio").status_code == 200  # a hit
        sandbox.state.set_fault("1001", {"kind": "status", "status": 500}, times=1)
        failed = client.get("/music?user=studio&type=instrumental")
        assert failed.status_code == 502
    miss, hit, fail = [r.__dict__ for r in caplog.records if r.name == "music_facade.access"]
    assert miss["upstream_calls"] == 1
    assert miss["upstream_status"] == 200
    assert 0 < miss["upstream_ms"] <= miss["duration_ms"]
    assert "upstream_calls" not in hit  # answered from the cache: no call to report
    assert (fail["upstream_calls"], fail["upstream_status"]) == (1, 500)
    # Each call's own line is DEBUG while a request's access line reports it.
    assert [r for r in caplog.records if r.getMessage() == "upstream answered"] == []


def test_a_call_outside_any_request_writes_its_own_line(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = make_app().extensions["music"].client
    with caplog.at_level(logging.INFO):
        upstream.list_music("1001", "song", None, "background-1")
    [line] = [r.__dict__ for r in caplog.records if r.getMessage() == "upstream answered"]
    assert line["levelname"] == "INFO"
    assert line["upstream_status"] == 200
    assert line["upstream_bytes"] > 0


def test_a_library_streams_later_pages_write_their_own_lines(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_app().test_client()
    with caplog.at_level(logging.INFO):
        resp = client.get("/library?user=studio")
        assert resp.status_code == 200
        resp.get_data()  # the whole stream
    [access] = [r.__dict__ for r in caplog.records if r.name == "music_facade.access"]
    later = [r for r in caplog.records if r.getMessage() == "upstream answered"]
    # The first page is read before the answer (its access line reports it); the rest stream
    # after that line, each call with its own.
    assert access["upstream_calls"] == 1
    assert len(later) >= 1
    assert all(r.levelname == "INFO" for r in later)
