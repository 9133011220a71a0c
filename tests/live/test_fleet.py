"""The fleet test: a real redis-server, two replicas (2 gunicorn workers each) and nginx.

Proves with upstream call counts on the sandbox that replicas share pages, flights, limits and
cooldowns, that a replica can be stopped under load without a failed request, and that losing
Redis degrades the fleet without a 5xx.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from music_facade.auth import mint_key
from music_facade.sandbox import SandboxServer
from music_facade.sandbox.app import encode_cursor
from music_facade.shared.flights import FOLLOW_POLL
from tests.support.fleet import Fleet, fleet
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.nginx]

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
    """The fleet with an empty Redis (no pages, counters or cooldowns) and a reset sandbox.

    Each worker's own tier of the page cache is not emptied: tests read pages of their own.
    """
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
    cold = (
        f"/music?user=studio&type=instrumental&cursor={encode_cursor('1001', 'instrumental', 10)}"
    )

    def fetch(_: int) -> int:
        start.wait()
        return get(live.url, live.app_key, cold).status_code

    with ThreadPoolExecutor(200) as pool:
        statuses = list(pool.map(fetch, range(200)))
    assert statuses == [200] * 200
    assert sandbox.state.call_count() == 1


def test_a_10_per_minute_client_gets_exactly_10_across_both_replicas(live: Fleet) -> None:
    # Pages no other test of the module reads: each worker's own cache tier outlives flushall.
    pages = [f"/music?user=studio&cursor={encode_cursor('1001', 'song', n)}" for n in (10, 20)]

    def fetch(i: int) -> int:
        return get(live.url, live.limited_key, pages[i % 2]).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(fetch, range(30)))
    assert statuses.count(200) == 10
    assert statuses.count(429) == 20


def test_a_429_through_one_replica_stops_upstream_calls_from_the_other(
    live: Fleet, sandbox: SandboxServer
) -> None:
    one, two = live.replicas
    sandbox.state.set_fault(
        "1002", {"kind": "status", "status": 429, "headers": {"Retry-After": "2"}}, times=1
    )
    first = get(one.url, live.app_key, "/music?user=edge")
    assert first.status_code == 503
    assert first.json()["code"] == "upstream_rate_limited"
    # Every worker of the other replica now refuses without calling the account.
    for path in ("/music?user=edge", "/music?user=edge&type=instrumental") * 4:
        refused = get(two.url, live.app_key, path)
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) <= 2
    assert sandbox.state.call_count() == 1
    # Once the cooldown ends (poll, at most its 2 s), the account is called again.
    deadline = time.monotonic() + 5
    while get(two.url, live.app_key, "/music?user=edge").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)  # poll interval
    assert sandbox.state.call_count() == 2


# --- a Redis blip while a replica leads a flight ------------------------------------------------

# Redis is blocked this long while the leader works; the upstream answers a cold page in LATENCY.
BLIP = 1.0
LATENCY = 0.6


@contextlib.contextmanager
def blip(kind: str, redis: RedisServer) -> Iterator[None]:
    """Redis blocked for BLIP seconds from now while the block runs; over when the block ends.

    client-pause: Redis holds every command and runs it once the pause is over. sigstop:
    connections stay open and nothing answers. full: maxmemory below what Redis holds, with
    noeviction, so every write fails with OOM.
    """
    client = redis.client()
    end: Callable[[], object]
    if kind == "client-pause":
        client.client_pause(int(BLIP * 1000))
        end = lambda: None  # noqa: E731 (the pause ends by itself)
    elif kind == "sigstop":
        assert redis.proc is not None
        pid = redis.proc.pid
        os.kill(pid, signal.SIGSTOP)
        end = lambda: os.kill(pid, signal.SIGCONT)  # noqa: E731
    else:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")
        end = lambda: client.config_set("maxmemory", "0")  # noqa: E731
    timer = threading.Timer(BLIP, end)
    timer.start()
    try:
        yield
    finally:
        timer.join()  # the blip is over, whatever the block did


def _scripts_run(redis: RedisServer) -> int:
    """How many EVALSHA calls Redis has answered (limits' scripts, the flights' lock)."""
    stats: dict[str, Any] = redis.client().info("commandstats")  # type: ignore[assignment]
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _poll(done: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline
        time.sleep(0.01)  # poll interval


@pytest.mark.parametrize(("kind", "offset"), [("client-pause", 1), ("sigstop", 2), ("full", 3)])
def test_a_redis_blip_while_a_replica_leads_does_not_stall_the_other(
    live: Fleet, sandbox: SandboxServer, kind: str, offset: int
) -> None:
    one, two = live.replicas
    path = f"/music?user=studio&cursor={encode_cursor('1001', 'song', offset)}"
    sandbox.state.set_fault("1001", {"kind": "latency", "seconds": LATENCY})
    with ThreadPoolExecutor(2) as pool:
        leader = pool.submit(get, one.url, live.app_key, path)
        _poll(lambda: sandbox.state.call_count() == 1)  # the leader holds the lock, calling
        scripts = _scripts_run(live.redis)
        started = time.monotonic()
        follower = pool.submit(get, two.url, live.app_key, path)
        # The follower found the lock taken: its two rate-limit scripts and the lock's ran.
        _poll(lambda: _scripts_run(live.redis) >= scripts + 3)
        with blip(kind, live.redis):
            assert follower.result().status_code == 200
            waited = time.monotonic() - started
        assert leader.result().status_code == 200
    # The follower waits at most for the blip, one Redis timeout, one poll of the lock and its
    # own upstream call (if the leader could not store the page), with half a second to spare.
    bound = BLIP + 0.25 + FOLLOW_POLL + LATENCY + 0.5
    print(f"{kind}: the follower waited {waited:.2f} s (bound {bound:.2f} s)")
    assert waited < bound


class SteadyLoad:
    """Client threads requesting cached and uncached pages and /healthz until stopped."""

    PATHS = ("/music?user=studio", "/music?user=studio&type=instrumental", "/healthz",
             "/music?user=edge")  # fmt: skip

    def __init__(
        self, url: str, key: str, clients: int = 8, paths: tuple[str, ...] | None = None
    ) -> None:
        self.url, self.key = url, key
        self.paths = paths or self.PATHS  # each client sends them in turn, from the first
        self.failures: list[str] = []  # statuses >= 500 and transport errors
        self.total = 0
        self.slowest = 0.0  # seconds: the longest answer
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]
        for t in self._threads:
            t.start()

    def _client(self) -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {self.key}"}
        sent = 0
        while not self._stop.is_set():
            path = self.paths[sent % len(self.paths)]
            sent += 1
            started = time.monotonic()
            try:
                resp = session.get(self.url + path, headers=headers, timeout=15)
                failure = f"{path}: {resp.status_code}" if resp.status_code >= 500 else None
            except requests.RequestException as exc:
                failure = f"{path}: {type(exc).__name__}"
            with self._lock:
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.total += 1
                if failure:
                    self.failures.append(failure)

    def stop(self) -> list[str]:
        """Stop every client and list the failures."""
        self._stop.set()
        for t in self._threads:
            t.join()
        return self.failures


@pytest.mark.parametrize(
    ("kind", "pages"),
    [
        ("sigstop", [("song", n) for n in (4, 5, 6, 7, 8, 9, 11, 12, 13)]),
        ("full", [("instrumental", n) for n in range(1, 10)]),
    ],
)
def test_a_redis_blip_under_load_stalls_no_request(
    live: Fleet, sandbox: SandboxServer, kind: str, pages: list[tuple[str, int]]
) -> None:
    # Eight clients ask for the same cold pages in turn, so flights (a leader and waiters on
    # other replicas) are always in progress when Redis blips.
    latency = 0.3
    sandbox.state.set_fault("1001", {"kind": "latency", "seconds": latency})
    paths = tuple(
        f"/music?user=studio&type={kind_}&cursor={encode_cursor('1001', kind_, n)}"
        for kind_, n in pages
    )
    load = SteadyLoad(live.url, live.app_key, paths=paths)
    time.sleep(0.2)  # flights under way (a measured stretch, not a readiness wait)
    with blip(kind, live.redis):
        pass
    time.sleep(1.0)  # the load runs on after the blip
    failures = load.stop()
    bound = BLIP + 0.25 + FOLLOW_POLL + latency + 0.5
    print(f"{kind} under load: {load.total} requests, slowest {load.slowest:.2f} s")
    assert failures == []
    assert load.slowest < bound


def test_redis_killed_under_load_gives_no_5xx_and_readiness_says_degraded(
    live: Fleet, sandbox: SandboxServer
) -> None:
    load = SteadyLoad(live.url, live.app_key)
    time.sleep(0.3)
    live.redis.stop()
    time.sleep(1.0)  # the fleet runs without Redis for a while
    for replica in live.replicas:
        ready = requests.get(replica.url + "/readyz", timeout=5)
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"redis": "degraded"}}
    live.redis.start()
    # Back to shared state: poll each replica's readiness until Redis is "ok" again.
    deadline = time.monotonic() + 10
    for replica in live.replicas:
        while requests.get(replica.url + "/readyz", timeout=5).json()["checks"]["redis"] != "ok":
            assert time.monotonic() < deadline
            time.sleep(0.1)  # poll interval
    failures = load.stop()
    print(f"Redis outage: {load.total} requests through nginx, {len(failures)} failed")
    assert failures == []
    live.redis.client().flushall()
    one, two = live.replicas
    assert get(one.url, live.app_key, "/music?user=edge&type=instrumental").status_code == 200
    calls = sandbox.state.call_count()
    shared = get(two.url, live.app_key, "/music?user=edge&type=instrumental")
    assert shared.headers["Cache-Status"].startswith("music-facade; hit")
    assert sandbox.state.call_count() == calls


def test_sigterm_to_one_replica_under_load_fails_no_request(
    running: Fleet, sandbox: SandboxServer
) -> None:
    load = SteadyLoad(running.url, running.app_key)
    time.sleep(0.5)  # load is flowing (a measured stretch, not a readiness wait)
    victim = running.replicas[0]
    assert victim.proc is not None
    victim.proc.terminate()  # SIGTERM: readiness flips, in-flight requests finish, exit
    # The test holds a copy of the replica's listening socket (to hand it to gunicorn): close
    # it, as a real replica's socket closes with its process.
    victim.sock.close()
    assert victim.proc.wait(timeout=30) == 0
    time.sleep(1.0)  # keep the load on the survivor for a while
    failures = load.stop()
    print(f"rolling kill: {load.total} requests through nginx, {len(failures)} failed")
    assert failures == []
    assert load.total > 50
    # (The last test of the module: the fleet keeps one replica from here on.)
