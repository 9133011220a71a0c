"""Shared state in a real Redis: pages, fleet-wide single flight, and Redis going away."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask

from music_facade.auth import mint_key
from music_facade.cache import list_key
from music_facade.config import ClientSettings, RedisSettings, Secret
from music_facade.sandbox import SandboxServer
from music_facade.shared import FIRST_BACKOFF, SharedStore, StoreUnavailable, digest
from music_facade.shared.flights import FOLLOW_POLL, FleetFlights
from tests.support.helpers import AppFactory
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis

PAGE = "/music?user=studio&type=song"


@pytest.fixture
def fresh_redis(redis_server: RedisServer) -> RedisServer:
    if redis_server.proc is None:
        redis_server.start()
    redis_server.client().flushall()
    return redis_server


Replica = Callable[..., Flask]


@pytest.fixture
def replica(make_app: AppFactory, fresh_redis: RedisServer) -> Iterator[Replica]:
    """Apps that share the test's Redis, like replicas of one fleet; closed afterwards."""
    apps: list[Flask] = []

    def factory(**changes: Any) -> Flask:
        settings = RedisSettings(url=Secret(fresh_redis.url), prefix="t", backoff_max=0.5)
        app = make_app(redis=settings, **changes)
        flights: FleetFlights = app.extensions["music"].cache.fleet
        assert flights.wait_subscribed(5)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["music"].cache.fleet.close()
        app.extensions["store"].close()


def test_a_page_stored_by_one_replica_is_a_hit_on_another(
    replica: Replica, sandbox: SandboxServer
) -> None:
    one, two = replica().test_client(), replica().test_client()
    first = one.get(PAGE)
    assert first.status_code == 200
    assert first.headers["Cache-Status"] == "music-facade; fwd=miss; stored"
    second = two.get(PAGE)
    assert second.status_code == 200
    assert second.headers["Cache-Status"].startswith("music-facade; hit; ttl=")
    assert second.get_data() == first.get_data()
    assert second.headers["ETag"] == first.headers["ETag"]
    assert sandbox.state.call_count() == 1


def test_concurrent_cold_requests_across_replicas_make_one_upstream_call(
    replica: Replica, sandbox: SandboxServer
) -> None:
    apps = [replica() for _ in range(3)]
    sandbox.state.set_fault("1001", {"kind": "latency", "seconds": 0.5})
    start = threading.Barrier(30)

    def fetch(i: int) -> tuple[int, str]:
        client = apps[i % 3].test_client()
        start.wait()
        resp = client.get(PAGE)
        return resp.status_code, resp.headers.get("Cache-Status", "")

    with ThreadPoolExecutor(30) as pool:
        results = list(pool.map(fetch, range(30)))
    assert [status for status, _ in results] == [200] * 30
    assert sandbox.state.call_count() == 1
    stored = [c for _, c in results if c == "music-facade; fwd=miss; stored"]
    assert len(stored) == 1  # the one leader; everyone else waited on it
    assert all(c.endswith("collapsed") or c.startswith("music-facade; hit") for _, c in results
               if c not in stored)  # fmt: skip


def test_a_leaders_failure_reaches_the_waiters_of_other_replicas(
    replica: Replica, sandbox: SandboxServer
) -> None:
    # The upstream hangs past the service's read timeout: the one call fails after 0.3 s.
    one, two = replica(upstream_read_timeout=0.3), replica(upstream_read_timeout=0.3)
    sandbox.state.set_fault("1001", {"kind": "hang", "seconds": 5})
    barrier = threading.Barrier(2)

    def fetch(app: Flask) -> tuple[int, str]:
        client = app.test_client()
        barrier.wait()
        resp = client.get(PAGE)
        return resp.status_code, resp.get_json()["code"]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(fetch, [one, two]))
    assert results == [(504, "upstream_timeout"), (504, "upstream_timeout")]
    assert sandbox.state.call_count() == 1


def test_a_dead_leaders_lock_expires_and_a_waiter_takes_over(
    replica: Replica, sandbox: SandboxServer, fresh_redis: RedisServer
) -> None:
    app = replica()
    store: SharedStore = app.extensions["store"]
    # A leader that died holding the lock: nobody will publish; the lock has 300 ms left.
    cache_key = list_key("1001", "song", None)
    fresh_redis.client().set(store.key("lock", digest(cache_key)), "dead-leader", px=300)
    resp = app.test_client().get(PAGE)
    assert resp.status_code == 200
    assert sandbox.state.call_count() == 1


Flights = Callable[[float], FleetFlights]


@pytest.fixture
def flights(fresh_redis: RedisServer) -> Iterator[Flights]:
    """FleetFlights(lock_seconds) on their own store of the test's Redis; closed afterwards."""
    made: list[tuple[FleetFlights, SharedStore]] = []

    def factory(lock_seconds: float) -> FleetFlights:
        store = SharedStore(RedisSettings(url=Secret(fresh_redis.url), prefix="t"))
        runner = FleetFlights(store, lock_seconds)
        made.append((runner, store))
        assert runner.wait_subscribed(5)
        return runner

    yield factory
    for runner, store in made:
        runner.close()
        store.close()


def test_a_release_the_backoff_skipped_is_sent_once_redis_answers(
    flights: Flights, fresh_redis: RedisServer
) -> None:
    runner = flights(30)
    store = runner.store
    watcher = fresh_redis.client().pubsub()  # type: ignore[no-untyped-call]
    watcher.subscribe(runner.channel)
    assert watcher.get_message(timeout=5)["type"] == "subscribe"
    pause = 0.6

    def lead() -> str:
        # A Redis blip while leading: a call times out and the process backs off, so the
        # release and the wake-up at the end of the flight find Redis backed off.
        fresh_redis.client().client_pause(int(pause * 1000))
        with pytest.raises(StoreUnavailable):
            store.call(lambda r: r.get("t:anything"))
        return "page"

    started = time.monotonic()
    assert runner.run("a page", lead, lambda: None) == "page"
    message = None
    while message is None and time.monotonic() - started < 10:
        message = watcher.get_message(timeout=0.1)
    waited = time.monotonic() - started
    watcher.close()
    assert message is not None, "the waiters were never woken"
    assert json.loads(message["data"]) == {"key": digest("a page"), "problem": None}
    assert fresh_redis.client().exists(store.key("lock", digest("a page"))) == 0
    # The blip, the backoff it started, one listener tick, and some slack.
    assert waited < pause + FIRST_BACKOFF + 0.25 + 0.5


def test_a_waiter_finds_the_page_without_the_wake_up(
    flights: Flights, fresh_redis: RedisServer
) -> None:
    runner = flights(10)
    # Another process leads and will never publish (its wake-up was lost); it stores the page
    # after 0.2 s.
    fresh_redis.client().set(runner.store.key("lock", digest("a page")), "silent", px=10_000)
    stored = threading.Event()
    timer = threading.Timer(0.2, stored.set)
    timer.start()
    started = time.monotonic()
    found = runner.run("a page", lambda: "own load", lambda: "page" if stored.is_set() else None)
    waited = time.monotonic() - started
    timer.join()
    assert found == "page"
    assert waited < 0.2 + FOLLOW_POLL + 0.5


def test_a_waiter_loads_on_its_own_once_a_lock_outlives_its_longest_lease(
    flights: Flights, fresh_redis: RedisServer
) -> None:
    runner = flights(1)  # our leaders hold a lock 1 s at most; this one says 60 s
    fresh_redis.client().set(runner.store.key("lock", digest("a page")), "stuck", px=60_000)
    started = time.monotonic()
    assert runner.run("a page", lambda: "own load", lambda: None) == "own load"
    assert time.monotonic() - started < 1 + FOLLOW_POLL + 0.5


def test_redis_down_serves_per_process_and_comes_back(
    replica: Replica,
    sandbox: SandboxServer,
    fresh_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    one, two = replica(), replica()
    store: SharedStore = one.extensions["store"]
    fresh_redis.stop()
    caplog.set_level(logging.WARNING, logger="music_facade.shared")

    def outage_logs() -> int:
        return sum("Redis unavailable" in r.getMessage() for r in caplog.records)

    assert one.test_client().get(PAGE).status_code == 200
    assert store.status() == "degraded"
    logged = outage_logs()
    for _ in range(10):
        assert one.test_client().get(PAGE).status_code == 200
    # Once per backoff period and process (each replica's listener notices too), never per
    # request.
    assert 1 <= logged <= 2
    assert outage_logs() == logged
    assert two.test_client().get(PAGE).status_code == 200  # its own upstream call
    assert sandbox.state.call_count() == 2
    fresh_redis.start()
    # Poll until the backoff period (at most backoff_max = 0.5 s) has passed and Redis answers.
    client = one.test_client()
    statuses: list[str] = []
    for _ in range(200):
        client.get("/music?user=studio&type=instrumental")
        statuses.append(store.status())
        if statuses[-1] == "ok":
            break
        threading.Event().wait(0.02)  # poll interval
    assert statuses[-1] == "ok"
    # Shared again: a page stored through one replica is a hit on the other.
    assert one.test_client().get("/music?user=edge").status_code == 200
    calls = sandbox.state.call_count()
    again = two.test_client().get("/music?user=edge")
    assert again.headers["Cache-Status"].startswith("music-facade; hit")
    assert sandbox.state.call_count() == calls


# --- configuration and secrets -----------------------------------------------------------------


def test_redis_password_never_reaches_the_logs(
    make_app: AppFactory, sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with RedisServer(password="correct-horse-battery") as server:
        wrong = RedisSettings(
            url=Secret(f"redis://:wrong-password-123@127.0.0.1:{server.port}/0"), prefix="pw"
        )
        app = make_app(redis=wrong)
        try:
            assert app.test_client().get(PAGE).status_code == 200  # Redis refused: per process
            assert app.extensions["store"].status() == "degraded"
        finally:
            app.extensions["music"].cache.fleet.close()
            app.extensions["store"].close()
        right = RedisSettings(
            url=Secret(f"redis://:correct-horse-battery@127.0.0.1:{server.port}/0"), prefix="pw"
        )
        app = make_app(redis=right)
        try:
            assert app.extensions["music"].cache.fleet.wait_subscribed(5)
            assert app.test_client().get(PAGE).status_code == 200
            assert app.extensions["store"].status() == "ok"
            assert server.client().keys("pw:page:*")
        finally:
            app.extensions["music"].cache.fleet.close()
            app.extensions["store"].close()
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "wrong-password-123" not in logged
    assert "correct-horse-battery" not in logged


def test_a_429_seen_by_one_replica_cools_the_account_down_on_every_replica(
    replica: Replica, sandbox: SandboxServer
) -> None:
    now = [1_000_000.0]
    one, two = replica(clock=lambda: now[0]), replica(clock=lambda: now[0])
    sandbox.state.set_fault(
        "1001", {"kind": "status", "status": 429, "headers": {"Retry-After": "20"}}, times=1
    )
    first = one.test_client().get(PAGE)
    assert first.status_code == 503
    assert first.get_json()["code"] == "upstream_rate_limited"
    refused = two.test_client().get(PAGE)  # another replica: no upstream call
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "20"
    assert sandbox.state.call_count() == 1
    now[0] += 21  # the cooldown is over for everyone
    assert two.test_client().get(PAGE).status_code == 200
    assert sandbox.state.call_count() == 2


def test_an_open_breaker_is_shared_and_one_replica_probes(
    replica: Replica, sandbox: SandboxServer
) -> None:
    now = [2_000_000.0]
    one = replica(clock=lambda: now[0], upstream_breaker_failures=2, upstream_breaker_open=15)
    two = replica(clock=lambda: now[0], upstream_breaker_failures=2, upstream_breaker_open=15)
    sandbox.state.set_fault("1002", {"kind": "status", "status": 500}, times=2)
    assert one.test_client().get("/music?user=edge").status_code == 502
    assert two.test_client().get("/music?user=edge&type=instrumental").status_code == 502
    # Two failures across two replicas opened the shared breaker: no call from either.
    for app in (one, two):
        resp = app.test_client().get("/music?user=edge&cursor=x")
        assert resp.status_code == 503
        assert resp.get_json()["code"] == "upstream_unavailable"
    assert sandbox.state.call_count() == 2
    now[0] += 16  # half-open: the next call probes, succeeds, and closes it for all
    assert two.test_client().get("/music?user=edge").status_code == 200
    assert one.test_client().get("/music?user=edge&type=instrumental").status_code == 200
    assert sandbox.state.call_count() == 4


def test_the_first_request_of_a_window_in_redis_resets_a_window_from_now(
    replica: Replica, sandbox: SandboxServer
) -> None:
    key, digest = mint_key()
    limited = ClientSettings("fresh", (digest,), frozenset({"*"}), "5/minute")
    app = replica(clients=(limited,))
    before = time.time()
    resp = app.test_client().get(PAGE, headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200
    # Redis's windows start at a counter's first hit: this one ends a minute from now.
    assert resp.headers["RateLimit"] in ('"music";r=4;t=60', '"music";r=4;t=59')
    assert before + 59 <= int(resp.headers["X-RateLimit-Reset"]) <= time.time() + 61


def test_a_clients_limit_is_exact_across_replicas(
    replica: Replica, sandbox: SandboxServer, fresh_redis: RedisServer
) -> None:
    key, digest = mint_key()
    limited = ClientSettings("shared", (digest,), frozenset({"*"}), "5/minute")
    apps = [replica(clients=(limited,)) for _ in range(3)]
    auth = {"Authorization": f"Bearer {key}"}
    statuses = [apps[i % 3].test_client().get(PAGE, headers=auth).status_code for i in range(12)]
    assert statuses == [200] * 5 + [429] * 7
    remaining = [
        apps[i % 3].test_client().get(PAGE, headers=auth).headers.get("X-RateLimit-Remaining")
        for i in range(2)
    ]
    assert remaining == ["0", "0"]
    # Redis gone: each process counts on its own again (never a 5xx), limits per process.
    fresh_redis.stop()
    fallback = apps[0].test_client().get("/music?user=edge", headers=auth)
    assert fallback.status_code == 200
    assert fallback.headers["X-RateLimit-Remaining"] == "4"


def test_pages_still_flow_after_redis_forgets_its_scripts(
    replica: Replica, fresh_redis: RedisServer
) -> None:
    # A restarted Redis has no scripts cached: EVALSHA's NOSCRIPT is answered with the script's
    # text, once, and the connection stays in step for the next call.
    a, b = replica(), replica()
    fresh_redis.client().script_flush()
    assert a.test_client().get(PAGE).status_code == 200
    fresh_redis.client().script_flush()
    hit = b.test_client().get(PAGE)
    assert hit.status_code == 200
    assert "hit" in hit.headers["Cache-Status"]  # stored through the re-sent script
    store: SharedStore = a.extensions["music"].cache.fleet.store
    assert store.status() == "ok"  # no failure was counted
    assert a.test_client().get("/music?user=studio&type=instrumental").status_code == 200


def test_a_scripts_error_reply_is_a_failed_call_not_a_broken_connection(
    fresh_redis: RedisServer,
) -> None:
    store = SharedStore(RedisSettings(url=Secret(fresh_redis.url), prefix="t", backoff_max=0.5))
    try:
        failing = store.redis.register_script("return redis.error_reply('no such thing')")
        echo = store.redis.register_script("return ARGV[1]")
        with pytest.raises(StoreUnavailable):
            store.script(failing, [], [])
        time.sleep(FIRST_BACKOFF + 0.1)  # the failure started a backoff period
        assert store.script(echo, [], ["still in step"]) == b"still in step"
        assert store.status() == "ok"
    finally:
        store.close()
