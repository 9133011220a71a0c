"""/metrics under gunicorn with two gevent workers: every worker's numbers summed, exactly."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.launch import GunicornProcess
from service.sandbox import SandboxServer
from tests.support.helpers import get_on_each_worker, live_service
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
