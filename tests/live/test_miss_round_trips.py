"""The round trips to Redis of one miss, counted in a real redis-server (MONITOR): a regression
guard on the miss path's cost with Redis, which is mostly round trips."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from music_facade.config import RedisSettings, Secret
from music_facade.sandbox import SandboxServer
from music_facade.shared.flights import FleetFlights
from tests.support.helpers import AppFactory
from tests.support.redis_server import CommandLog, RedisServer

pytestmark = pytest.mark.redis

PAGE = "/music?user=studio&type=song"
OTHER = "/music?user=studio&type=instrumental"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


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
