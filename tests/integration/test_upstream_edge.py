"""The upstream as a CDN edge sends it: compression, bombs, redirects, drips, cookies, headers."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from music_facade.sandbox import SandboxServer
from music_facade.sandbox.data import SONG, full_record
from music_facade.watchdog import Watchdog
from tests.support.helpers import AppFactory
from tests.support.problem import problem
from tests.support.serving import serving

# --- compressed and chunked pages -----------------------------------------------------------


def walk(make_app: AppFactory, kind: str) -> list[bytes]:
    """Every page of studio's `kind`, as the service's bodies, with the cache off."""
    client = make_app(cache_ttl=0).test_client()
    bodies: list[bytes] = []
    url = f"/music?user=studio&type={kind}"
    while True:
        resp = client.get(url)
        assert resp.status_code == 200
        bodies.append(resp.get_data())
        page = resp.get_json()
        if not page["has_more"]:
            return bodies
        url = f"/music?user=studio&type={kind}&cursor={page['next_cursor']}"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_pages_reshape_like_plain_ones(
    make_app: AppFactory, sandbox: SandboxServer, encoding: str
) -> None:
    sandbox.state.set_encodings(())
    plain = {kind: walk(make_app, kind) for kind in ("song", "instrumental")}
    sandbox.state.set_encodings((encoding,))
    compressed = {kind: walk(make_app, kind) for kind in ("song", "instrumental")}
    assert compressed == plain
    assert all(c.headers["Accept-Encoding"] == "gzip, deflate" for c in sandbox.state.calls())
    # The sandbox did compress, and sent the large pages chunked.
    raw = requests.get(
        sandbox.base_url + "/music/",
        params={"user_id": "1001"},
        headers={"Authorization": f"Bearer {sandbox.token}", "Accept-Encoding": encoding},
        stream=True,
        timeout=5,
    )
    with raw:
        assert raw.headers["Content-Encoding"] == encoding
        assert raw.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in raw.headers
        assert "Accept-Encoding" in raw.headers["Vary"]


class _GzipUpstream(BaseHTTPRequestHandler):
    """An upstream written here, not the sandbox: gzips its JSON when the request accepts it,
    and keeps connections alive (HTTP/1.1 with Content-Length), as a CDN edge does."""

    protocol_version = "HTTP/1.1"
    connections = 0

    page = json.dumps(
        {"records": [full_record("1001", SONG, i) for i in range(3)], "hasNext": False}
    ).encode()
    seen: list[str] = []  # noqa: RUF012 (one server per test, read after it stops)

    def setup(self) -> None:
        """Count connections: one handler per connection."""
        type(self).connections += 1
        super().setup()

    def do_GET(self) -> None:
        accepts = self.headers.get("Accept-Encoding", "")
        self.seen.append(accepts)
        body = self.page
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if "gzip" in accepts:
            body = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def gzip_upstream() -> Iterator[str]:
    """A gzip-compressing upstream on a random loopback port; yields its base URL."""
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _GzipUpstream)) as url:
        yield url


def test_an_independent_gzip_upstream(make_app: AppFactory, gzip_upstream: str) -> None:
    _GzipUpstream.seen = []
    client = make_app(upstream_base_url=gzip_upstream).test_client()
    resp = client.get("/music?user=studio")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    titles = [item["title"] for item in resp.get_json()["items"]]
    assert titles == [full_record("1001", SONG, i)["titleEn"] for i in range(3)]
    assert _GzipUpstream.seen == ["gzip, deflate"]


def test_upstream_connections_are_kept_alive(make_app: AppFactory, gzip_upstream: str) -> None:
    _GzipUpstream.connections = 0
    client = make_app(upstream_base_url=gzip_upstream, cache_ttl=0).test_client()
    for _ in range(5):  # the cache is off: five upstream calls
        assert client.get("/music?user=studio").status_code == 200
    assert _GzipUpstream.connections == 1  # no connection churn: one kept-alive connection


class _ClosingUpstream(_GzipUpstream):
    """Closes each connection after its answer without saying so (no Connection: close), as a
    server does when its keep-alive timeout passes between two calls."""

    def do_GET(self) -> None:
        super().do_GET()
        self.close_connection = True


class _ClosingServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ClosingUpstream)
        self.closed = threading.Semaphore(0)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        self.closed.release()  # the connection is closed on this side


def test_a_pooled_connection_the_upstream_closed_is_not_reused(make_app: AppFactory) -> None:
    # Retries are off: a call sent on the dead connection would fail. The pool's check before
    # reusing a connection (WatchedHTTPConnection.is_connected) sees the EOF and connects anew.
    _ClosingUpstream.connections = 0
    server = _ClosingServer()
    with serving(server) as url:
        client = make_app(upstream_base_url=url, cache_ttl=0).test_client()
        for _ in range(3):
            assert client.get("/music?user=studio").status_code == 200
            assert server.closed.acquire(timeout=10)
    assert _ClosingUpstream.connections == 3


# --- hostile answers ------------------------------------------------------------------------


class _CutShortUpstream(BaseHTTPRequestHandler):
    """Declares a Content-Length, sends part of the body, and hangs up (an edge that dropped
    the connection mid-answer)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        part = b'{"records": [], "hasNext": fa'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(part) + 100))
        self.end_headers()
        self.wfile.write(part)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


def test_a_body_cut_short_of_its_content_length_is_an_upstream_error(
    make_app: AppFactory,
) -> None:
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _CutShortUpstream)) as url:
        client = make_app(upstream_base_url=url).test_client()
        started = time.monotonic()
        body = problem(client.get("/music?user=studio"), 502, "upstream_error")
        assert "cut off" in body["detail"]
        assert time.monotonic() - started < 1.0


def test_gzip_bomb_in_process(client: Any, sandbox: SandboxServer) -> None:
    sandbox.state.set_fault("*", {"kind": "gzip_bomb"})
    started = time.monotonic()
    body = problem(client.get("/music?user=studio"), 502, "upstream_error")
    assert time.monotonic() - started < 2.0
    assert "larger than" in body["detail"]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"kind": "unknown_encoding"}, "content encoding"),
        ({"kind": "unknown_encoding", "encoding": "br"}, "(br)"),
        ({"kind": "redirect"}, "redirected (status 302)"),
        ({"kind": "redirect", "status": 308}, "redirected (status 308)"),
        ({"kind": "cdn", "status": 520}, "status 520"),
        ({"kind": "cdn", "status": 522}, "status 522"),
        ({"kind": "cdn", "status": 524}, "status 524"),
        ({"kind": "error_body"}, "200 with an error: Internal server error"),
        ({"kind": "huge_headers"}, "headers"),
        ({"kind": "huge_headers", "count": 150}, "headers"),
    ],
)
def test_hostile_answers_are_upstream_errors_at_once(
    make_app: AppFactory, sandbox: SandboxServer, spec: dict[str, Any], words: str
) -> None:
    client = make_app(upstream_retries=2).test_client()
    sandbox.state.set_fault("*", spec)
    started = time.monotonic()
    body = problem(client.get("/music?user=studio"), 502, "upstream_error")
    assert words in body["detail"]
    assert time.monotonic() - started < 1.0
    assert sandbox.state.call_count() == 1  # never retried, never followed


def test_a_200_error_body_never_replaces_a_cached_page(
    make_app: AppFactory, sandbox: SandboxServer
) -> None:
    from tests.support.clock import Clock

    clock = Clock()
    client = make_app(clock=clock, cache_ttl=30, cache_stale_if_error=300).test_client()
    good = client.get("/music?user=studio")
    sandbox.state.set_fault("*", {"kind": "error_body"}, times=1)
    clock.now += 31
    stale = client.get("/music?user=studio")
    assert stale.status_code == 200
    assert stale.get_data() == good.get_data()
    assert "detail=stale-if-error" in stale.headers["Cache-Status"]
    # The upstream recovered: the next request fetches and stores the real page again.
    again = client.get("/music?user=studio")
    assert again.headers["Cache-Status"] == "music-facade; fwd=stale; stored"
    assert again.get_data() == good.get_data()
    assert sandbox.state.call_count() == 3


def test_header_drip_is_bound_by_one_deadline(make_app: AppFactory, sandbox: SandboxServer) -> None:
    # Each byte arrives well within read_timeout; only the whole-exchange deadline ends it.
    client = make_app(upstream_read_timeout=2.0, upstream_deadline=1.0).test_client()
    sandbox.state.set_fault("*", {"kind": "header_drip", "interval": 0.1, "seconds": 30})
    started = time.monotonic()
    problem(client.get("/music?user=studio"), 504, "upstream_timeout")
    assert time.monotonic() - started < 2.0


def test_body_drip_is_bound_by_the_same_deadline(
    make_app: AppFactory, sandbox: SandboxServer
) -> None:
    client = make_app(upstream_read_timeout=2.0, upstream_deadline=1.0).test_client()
    sandbox.state.set_fault("*", {"kind": "drip", "interval": 0.05, "seconds": 30})
    started = time.monotonic()
    problem(client.get("/music?user=studio"), 504, "upstream_timeout")
    assert time.monotonic() - started < 2.0


class _LateWatchdog(Watchdog):
    """A watchdog whose thread has not run yet (a busy worker's greenlet, a starved thread):
    nothing marks an exchange expired or cuts its socket, so only the body read's own deadline
    check notices the deadline."""

    def _ensure_thread(self) -> None:
        """Never started."""


def test_a_body_read_past_the_deadline_before_the_watchdog_fires_is_an_outage(
    make_app: AppFactory, sandbox: SandboxServer
) -> None:
    app = make_app(
        upstream_read_timeout=2.0, upstream_deadline=0.5, upstream_breaker_failures=2, cache_ttl=0
    )
    upstream = app.extensions["music"].client
    upstream.watchdog = _LateWatchdog()
    client = app.test_client()
    sandbox.state.set_fault("1001", {"kind": "status", "status": 500}, times=1)
    problem(client.get("/music?user=studio"), 502, "upstream_error")
    assert upstream.guards.store.read("1001").failures == 1
    # The whole body arrives, a few bytes every 50 ms for 1 s: past the 0.5 s deadline.
    sandbox.state.set_fault("1001", {"kind": "drip", "interval": 0.05, "seconds": 1.0}, times=1)
    problem(client.get("/music?user=studio"), 504, "upstream_timeout")
    state = upstream.guards.store.read("1001")
    assert state.failures == 2  # a second outage in a row, not a success that resets the count
    assert state.open_until > 0
    calls = sandbox.state.call_count()
    problem(client.get("/music?user=studio"), 503, "upstream_unavailable")
    assert sandbox.state.call_count() == calls  # the open breaker made no call


def test_header_drip_that_ends_in_time_is_a_page(
    make_app: AppFactory, sandbox: SandboxServer
) -> None:
    client = make_app(upstream_deadline=3.0).test_client()
    sandbox.state.set_fault("*", {"kind": "header_drip", "interval": 0.05, "seconds": 0.3})
    assert client.get("/music?user=studio").status_code == 200


def test_cookies_are_never_kept(make_app: AppFactory, sandbox: SandboxServer) -> None:
    client = make_app(cache_ttl=0).test_client()
    sandbox.state.set_fault("*", {"kind": "cookies", "count": 10, "bytes": 4000})
    for _ in range(10):  # 100 cookies of 4 kB: replayed, they would pass any header limit
        assert client.get("/music?user=studio").status_code == 200
    calls = sandbox.state.calls()
    assert len(calls) == 10
    assert all("Cookie" not in call.headers for call in calls)


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_429_retry_after_in_both_forms(client: Any, sandbox: SandboxServer, form: str) -> None:
    sandbox.state.set_fault("*", {"kind": "rate_limited", "seconds": 20, "form": form})
    resp = client.get("/music?user=studio")
    problem(resp, 503, "upstream_rate_limited")
    assert 18 <= int(resp.headers["Retry-After"]) <= 20
