"""The round trips to Redis of one miss, counted in a real redis-server (MONITOR): a regression
guard on the miss path's cost with Redis, which is mostly round trips."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from music_facade.cache import list_key
from music_facade.config import RedisSettings, Secret
from music_facade.sandbox import SandboxServer
from music_facade.sandbox.app import encode_cursor
from music_facade.shared import digest
from music_facade.shared.flights import FleetFlights
from tests.support.helpers import AppFactory
from tests.support.redis_server import CommandLog, RedisServer

pytestmark = pytest.mark.redis

PAGE = "/music?user=studio&type=song"
OTHER = "/music?user=studio&type=instrumental"


Replica = Callable[..., Flask]


@pytest.fixture
def replica(make_app: AppFactory, redis_server: RedisServer) -> Iterator[Replica]:
    """Apps sharing the test's (emptied) Redis, like replicas of one fleet; closed afterwards."""
    redis_server.client().flushall()
    apps: list[Flask] = []

    def factory(**changes: Any) -> Flask:
        settings = RedisSettings(url=Secret(redis_server.url), prefix="t")
        app = make_app(redis=settings, **changes)
        flights: FleetFlights = app.extensions["music"].cache.fleet
        assert flights.wait_subscribed(5)
        # Once per process, not per miss: its scripts loaded and a pooled connection open.
        assert app.test_client().get(OTHER).status_code == 200
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["music"].cache.fleet.close()
        app.extensions["store"].close()


def test_a_miss_is_two_round_trips_a_hit_from_redis_one_a_local_hit_none(
    replica: Replica, sandbox: SandboxServer, redis_server: RedisServer
) -> None:
    one, two = replica(), replica()
    with CommandLog(redis_server) as log:
        miss = one.test_client().get(PAGE)
    assert miss.headers["Cache-Status"] == "music-facade; fwd=miss; stored"
    # The page, the guard generation and the lock in one script; the page stored, the lock
    # released and the waiters woken in another. The guards ask nothing more.
    assert log.commands == ["EVALSHA", "EVALSHA"]

    with CommandLog(redis_server) as log:
        hit = two.test_client().get(PAGE)
    assert hit.headers["Cache-Status"].startswith("music-facade; hit; ttl=")
    assert hit.get_data() == miss.get_data()
    assert log.commands == ["EVALSHA"]

    with CommandLog(redis_server) as log:
        again = two.test_client().get(PAGE)
    assert again.headers["Cache-Status"].startswith("music-facade; hit; ttl=")
    assert log.commands == []
    assert sandbox.state.call_count() == 2  # OTHER (then a hit from Redis for two) and PAGE


def test_a_guard_state_changed_elsewhere_is_read_once_then_known(
    replica: Replica, sandbox: SandboxServer, redis_server: RedisServer
) -> None:
    # One replica's 429 cools the account down for every replica: the other sees it on its
    # next miss, as before, at the cost of one read once the guard generation has moved.
    now = [1_000_000.0]
    one, two = replica(clock=lambda: now[0]), replica(clock=lambda: now[0])
    sandbox.state.set_fault(
        "1001", {"kind": "status", "status": 429, "headers": {"Retry-After": "20"}}, times=1
    )
    assert one.test_client().get(PAGE).status_code == 503
    with CommandLog(redis_server) as log:
        refused = two.test_client().get(PAGE)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "20"
    # The look (a new generation), the account's state with the generation, the release.
    assert log.commands == ["EVALSHA", "MGET", "EVALSHA"]
    now[0] += 21
    with CommandLog(redis_server) as log:
        assert two.test_client().get(PAGE).status_code == 200
    assert log.commands == ["EVALSHA", "EVALSHA"]  # known at this generation: no read


def test_a_stale_page_in_redis_is_served_by_another_replica_when_the_upstream_fails(
    replica: Replica, sandbox: SandboxServer, redis_server: RedisServer
) -> None:
    now = [3_000_000.0]
    one = replica(clock=lambda: now[0], cache_ttl=30)
    fresh = one.test_client().get(PAGE)
    assert fresh.status_code == 200
    now[0] += 40  # stale, still within stale_if_error
    two = replica(clock=lambda: now[0], cache_ttl=30)  # its memory has never seen PAGE
    sandbox.state.set_fault("1001", {"kind": "status", "status": 500}, times=1)
    with CommandLog(redis_server) as log:
        stale = two.test_client().get(PAGE)
    assert stale.status_code == 200
    assert stale.get_data() == fresh.get_data()
    assert "detail=stale-if-error" in stale.headers["Cache-Status"]
    # The look found the stale page and took the lock; the failure started a streak (the
    # guards' transaction, as before); the end released the lock with the failure.
    assert log.commands[0] == log.commands[-1] == "EVALSHA"
    assert log.commands[1:-1] == ["WATCH", "GET", "MULTI", "SET", "SET", "EXEC"], log.commands


def test_a_link_with_its_own_expiry_is_shared_and_not_served_past_it(
    replica: Replica, sandbox: SandboxServer
) -> None:
    now = [time.time()]
    audio = "/music/6dc9a08fa3e7d6a/audio?user=studio"  # account 1001's third song: completed
    one, two = replica(clock=lambda: now[0]), replica(clock=lambda: now[0])
    first = one.test_client().get(audio, headers={"Accept": "application/json"})
    assert first.status_code == 200
    calls = sandbox.state.call_count()
    second = two.test_client().get(audio, headers={"Accept": "application/json"})
    assert second.headers["Cache-Status"].startswith("music-facade; hit; ttl=")
    assert second.get_data() == first.get_data()
    assert sandbox.state.call_count() == calls
    # Past the link's own expiry (well within the cache's ttl): a new one from the upstream.
    now[0] += 3600
    third = two.test_client().get(audio, headers={"Accept": "application/json"})
    assert third.status_code == 200
    assert "fwd=stale; stored" in third.headers["Cache-Status"]
    assert sandbox.state.call_count() > calls


def test_a_guard_generation_evicted_from_redis_never_passes_for_the_kept_one(
    replica: Replica, sandbox: SandboxServer, redis_server: RedisServer
) -> None:
    now = [4_000_000.0]
    app = replica(clock=lambda: now[0])
    assert app.test_client().get(PAGE).status_code == 200  # the account's state kept: clear
    # A cooldown set in Redis, and the generation that said so evicted (allkeys-lru).
    redis = redis_server.client()
    redis.set("t:guard:1001", json.dumps({"cooldown_until": now[0] + 20}))
    redis.delete("t:guards:gen")
    refused = app.test_client().get(
        "/music?user=studio&type=song&cursor=" + encode_cursor("1001", "song", 10)
    )
    assert refused.status_code == 503
    assert refused.get_json()["code"] == "upstream_rate_limited"
    assert sandbox.state.call_count() == 2  # OTHER and PAGE; nothing after the cooldown


def test_a_failure_recorded_elsewhere_during_the_call_is_ended_by_its_success(
    replica: Replica, sandbox: SandboxServer, redis_server: RedisServer
) -> None:
    app = replica()
    redis = redis_server.client()
    sandbox.state.set_fault("1001", {"kind": "latency", "seconds": 0.5}, times=1)
    answered: list[int] = []
    call = threading.Thread(target=lambda: answered.append(app.test_client().get(PAGE).status_code))
    call.start()
    deadline = time.monotonic() + 5
    while sandbox.state.call_count() < 2 and time.monotonic() < deadline:  # OTHER, then PAGE
        time.sleep(0.01)  # poll interval
    # Another replica's outage for the account, recorded while this one's call is under way.
    redis.set("t:guard:1001", json.dumps({"failures": 1}))
    redis.set("t:guards:gen", "another-replicas-change")
    call.join(5)
    assert answered == [200]
    # The success ended the streak, as a read after the call would have: no state is left.
    assert redis.get("t:guard:1001") is None


def test_a_damaged_page_in_redis_is_replaced_not_waited_on(
    replica: Replica, sandbox: SandboxServer, redis_server: RedisServer
) -> None:
    app = replica()
    page_key = "t:page:" + digest(list_key("1001", "song", None))
    # Fresh by its time, but not a page this version can read (its ETag is not ASCII).
    redis_server.client().set(page_key, b"9999999999.0\n\xff\xfe\n{}")
    started = time.monotonic()
    resp = app.test_client().get(PAGE)
    assert resp.status_code == 200
    assert resp.headers["Cache-Status"] == "music-facade; fwd=miss; stored"
    assert time.monotonic() - started < 1
    assert redis_server.client().get(page_key) != b"9999999999.0\n\xff\xfe\n{}"


def test_a_miss_nobody_waits_on_wakes_no_listener_and_one_waited_on_does(
    replica: Replica, sandbox: SandboxServer, redis_server: RedisServer
) -> None:
    one, two = replica(), replica()
    watcher = redis_server.client().pubsub()  # type: ignore[no-untyped-call]
    watcher.subscribe("t:flights")
    assert watcher.get_message(timeout=5)["type"] == "subscribe"
    assert one.test_client().get(PAGE).status_code == 200
    assert watcher.get_message(timeout=0.3) is None  # every process's listener stays asleep
    sandbox.state.set_fault("1001", {"kind": "latency", "seconds": 0.3}, times=1)
    barrier = threading.Barrier(2)
    statuses: list[str] = []

    def fetch(app: Flask) -> None:
        barrier.wait()
        resp = app.test_client().get(OTHER + "&cursor=" + encode_cursor("1001", "instrumental", 10))
        statuses.append(resp.headers["Cache-Status"])

    threads = [threading.Thread(target=fetch, args=(app,)) for app in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert sorted(statuses) == [
        "music-facade; fwd=miss; stored",
        "music-facade; fwd=miss; stored; collapsed",
    ]
    message = watcher.get_message(timeout=1)
    watcher.close()
    assert message is not None
    assert message["type"] == "message"
