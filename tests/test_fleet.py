"""The fleet test: a real redis-server, two replicas (2 gunicorn workers each) and nginx.

Proves with upstream call counts on the sandbox that replicas share pages, flights, limits and
cooldowns, that a replica can be stopped under load without a failed request, and that losing
Redis degrades the fleet without a 5xx.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from service.clients import mint_key
from service.sandbox import SandboxServer

from .fleet import Fleet, fleet

PAGE = "/music?user=studio&type=song"


@pytest.fixture(scope="module")
def running(
    sandbox_server: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    app_key, app_digest = mint_key()
    limited_key, limited_digest = mint_key()
    tmp = tmp_path_factory.mktemp("fleet")
    with fleet(sandbox_server, tmp, app_key, app_digest, limited_key, limited_digest) as f:
        yield f


@pytest.fixture
def live(running: Fleet, sandbox: SandboxServer) -> Fleet:
    """The fleet with an empty Redis (no pages, counters or cooldowns) and a reset sandbox."""
    if running.redis.proc is None:
        running.redis.start()
    running.redis.client().flushall()
    return running


def get(url: str, key: str, path: str = PAGE, **headers: str) -> requests.Response:
    return requests.get(
        url + path, headers={"Authorization": f"Bearer {key}", **headers}, timeout=15
    )


def test_a_page_fetched_through_one_replica_is_a_hit_on_the_other(
    live: Fleet, sandbox: SandboxServer
) -> None:
    one, two = live.replicas
    first = get(one.url, live.app_key)
    assert first.status_code == 200
    second = get(two.url, live.app_key)
    assert second.status_code == 200
    assert second.headers["Cache-Status"].startswith("music-facade; hit")
    assert second.headers["ETag"] == first.headers["ETag"]
    assert second.content == first.content
    assert sandbox.state.call_count() == 1


def test_200_concurrent_cold_requests_through_nginx_make_one_upstream_call(
    live: Fleet, sandbox: SandboxServer
) -> None:
    sandbox.state.set_fault("1001", {"kind": "latency", "seconds": 1.0})
    start = threading.Barrier(200)

    def fetch(_: int) -> int:
        start.wait()
        return get(live.url, live.app_key).status_code

    with ThreadPoolExecutor(200) as pool:
        statuses = list(pool.map(fetch, range(200)))
    assert statuses == [200] * 200
    assert sandbox.state.call_count() == 1
