"""/metrics under gunicorn: every worker's numbers summed exactly, and every 500 counted."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, Response

from music_facade.cache import CacheBackend, CachedPage, list_key
from music_facade.error_handler import LastResort
from music_facade.launch import GunicornProcess
from music_facade.sandbox import SandboxServer
from tests.support.helpers import LIVE_CONFIG, get_on_each_worker, live_service
from tests.support.metrics import scrape, total, wait_for_workers, worker_gauges

# The known mix of traffic; each request on a new connection, half of it to each worker.
MIX = {
    "/music?user=studio": 20,  # a miss in each worker that meets it first, then hits
    "/music?user=edge": 5,
    "/music?user=nobody": 3,  # 400 unknown_user
    "/healthz": 4,
}


def send_mix(server: GunicornProcess) -> set[int]:
    """Send MIX, half of it answered by each worker."""
    paths = [path for path, times in MIX.items() for _ in range(times)]
    return set(get_on_each_worker(server, paths))


@pytest.fixture(scope="module")
def two_workers(
    sandbox_server: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornProcess]:
    """The service under gunicorn, 2 workers, against the sandbox."""
    tmp: Path = tmp_path_factory.mktemp("metrics-live")
    with live_service(sandbox_server, tmp, workers=2) as server:
        yield server


def test_counts_are_summed_over_both_workers(two_workers: GunicornProcess) -> None:
    url = two_workers.url
    wait_for_workers(two_workers)
    # Readiness polls of /healthz came before: count from here.
    before = scrape(url)
    assert send_mix(two_workers) == {200, 400}
    music = "music_facade_requests_total"
    # Whichever worker answers the scrape, the sums are the same and exact.
    for _ in range(6):
        found = scrape(url)

        def delta(name: str, **labels: str) -> float:
            return total(found, name, **labels) - total(before, name, **labels)  # noqa: B023

        assert delta(music, route="/music", status="200") == 25
        assert delta(music, route="/music", status="400") == 3
        assert delta(music, route="/healthz") == 4
        assert delta("music_facade_request_duration_seconds_count", route="/music") == 28
        cache = "music_facade_page_cache_total"
        misses = delta(cache, outcome="miss")
        assert 2 <= misses <= 4  # one per alias in each worker that met it
        # Concurrent first requests wait on one flight: "collapsed", not a miss each.
        assert sum(delta(cache, outcome=o) for o in ("miss", "hit", "collapsed")) == 25
        assert delta("music_facade_upstream_calls_total", outcome="ok") == misses
        # Per-process gauges: one sample per worker, labelled with its pid; pages stored in
        # both show that both answered /music.
        entries = worker_gauges(found, "music_facade_cache_entries")
        assert set(entries) == {str(p) for p in two_workers.worker_pids()}
        assert all(n >= 1 for n in entries.values()), entries


def test_a_dead_workers_live_gauges_leave(two_workers: GunicornProcess) -> None:
    before = two_workers.worker_pids()
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = two_workers.worker_pids()
        if before[0] not in now and len(now) == 2:
            pids = worker_gauges(scrape(two_workers.url), "music_facade_cache_entries")
            if str(before[0]) not in pids:
                break
        time.sleep(0.05)  # poll interval
    else:
        pytest.fail("the killed worker's gauges stayed in /metrics")
    # Its counters stay: the requests it answered were answered.
    assert total(scrape(two_workers.url), "music_facade_requests_total", route="/healthz") >= 4


class _Breaking:
    """A page-cache backend that fails, as a bug would, on the keys it is given."""

    def __init__(self, backend: CacheBackend, broken: set[str]) -> None:
        self.backend = backend
        self.broken = broken

    def get(self, key: str) -> CachedPage | None:
        if key in self.broken:
            raise RuntimeError("deliberately broken cache read")
        return self.backend.get(key)

    def set(self, key: str, page: CachedPage) -> None:
        self.backend.set(key, page)

    def size(self) -> tuple[int, int]:
        return self.backend.size()


def broken_app() -> Flask:
    """The service (configured from MUSIC_CONFIG) with deliberate bugs, for gunicorn to load as
    `tests.live.test_metrics_live:broken_app()`: GET /broken raises in a Flask view,
    /music?user=edge fails inside MusicHandler, page 2 of studio's songs fails in the middle of
    a /library stream, and GET /escape fails outside every handler."""
    from music_facade import create_app
    from music_facade.sandbox.app import encode_cursor

    app = create_app()

    @app.get("/broken")
    def broken() -> Response:
        raise RuntimeError("deliberately broken route")

    cache = app.extensions["music"].cache
    keys = {
        list_key("1002", "song", None),
        list_key("1001", "song", encode_cursor("1001", "song", 10)),
    }
    cache.backend = _Breaking(cache.backend, keys)
    outermost = app.wsgi_app
    assert isinstance(outermost, LastResort)
    inner = outermost.app

    def escaping(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/escape":
            raise RuntimeError("deliberately escaping every handler")
        return inner(environ, start_response)

    outermost.app = escaping
    return app


def test_every_500_is_counted_under_gunicorn(sandbox: SandboxServer, tmp_path: Path) -> None:
    config = tmp_path / "music.toml"
    config.write_text(LIVE_CONFIG.format(base_url=sandbox.base_url))
    env = {"MUSIC_CONFIG": str(config), "USEAPI_TOKEN": sandbox.token}
    app = "tests.live.test_metrics_live:broken_app()"
    with GunicornProcess(env, app=app, log_path=tmp_path / "gunicorn.log") as server:
        for path in ("/broken", "/music?user=edge", "/escape"):
            resp = requests.get(server.url + path, headers={"X-Request-ID": "req-500"}, timeout=10)
            assert resp.status_code == 500, (path, resp.text)
            # Every entrance answers through the request pipeline, the outermost one too.
            assert resp.headers["X-Request-ID"] == "req-500"
            assert resp.headers["traceparent"].startswith("00-")
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Content-Type"] == "application/problem+json"
            assert resp.json()["code"] == "internal_error"
            assert "deliberately" not in resp.text
        library = requests.get(server.url + "/library?user=studio", timeout=10)
        assert library.status_code == 200  # the status had gone out before page 2 failed
        summary = json.loads(library.text.splitlines()[-1])["summary"]
        assert summary["problem"]["code"] == "internal_error"
        found = scrape(server.url)
    requests_total = "music_facade_requests_total"
    for route in ("/broken", "/music", "/library", "unmatched"):
        assert total(found, requests_total, route=route, status="500") == 1, route
    assert total(found, requests_total, route="/library", status="200") == 0
    assert total(found, requests_total, status="500") == 4
    log = (tmp_path / "gunicorn.log").read_text()
    assert log.count("deliberately") >= 4  # each one logged with its traceback
