"""Leased rate-limit budget in a real Redis: shares, give-backs, the limit held across holders."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from music_facade.config import RedisSettings, Secret
from music_facade.limits import SweptMemoryStorage
from music_facade.shared import SharedStore
from music_facade.shared.limit_leases import LeasedLimitStorage, share_of
from music_facade.shared.limits import SharedLimitStorage
from tests.support.clock import Clock
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[SharedStore]:
    if redis_server.proc is None:
        redis_server.start()
    redis_server.client().flushall()
    shared = SharedStore(RedisSettings(url=Secret(redis_server.url), prefix="t", backoff_max=0.5))
    yield shared
    shared.close()


def leased(store: SharedStore, clock: Clock | None = None, sync: float = 5) -> LeasedLimitStorage:
    """A worker's storage: its own leases, this test's Redis."""
    if clock is None:
        return LeasedLimitStorage(store, SweptMemoryStorage(), sync)
    return LeasedLimitStorage(store, SweptMemoryStorage(), sync, clock=clock)


def counted(redis_server: RedisServer, key: str) -> int:
    """The current window's counter in Redis, as limits lays it out."""
    value: bytes | None = redis_server.client().get(f"t:limits:{{{key}}}")  # type: ignore[assignment]
    return int(value or 0)


def test_a_lease_takes_a_share_and_later_hits_stay_local(
    store: SharedStore, redis_server: RedisServer
) -> None:
    storage = leased(store)
    first = storage.hit_sliding_window("k", 1000, 60)
    assert first[0] is True
    assert counted(redis_server, "k") == share_of(1000) == 10
    assert first[3] == 1  # the window as this worker sees it: one admitted so far
    for n in range(2, 11):
        acquired, _, _, current, current_ttl = storage.hit_sliding_window("k", 1000, 60)
        assert acquired
        assert current == n
        assert 59 < current_ttl - 60 <= 60  # the window ends about a minute from its first hit
    assert counted(redis_server, "k") == 10  # nine hits without a round trip
    storage.hit_sliding_window("k", 1000, 60)  # spent: a new lease of 1% of the 990 left
    assert counted(redis_server, "k") == 10 + share_of(990) == 19


def test_a_small_limit_is_counted_one_request_at_a_time(
    store: SharedStore, redis_server: RedisServer
) -> None:
    holders = [leased(store) for _ in range(4)]
    admitted = [holders[i % 4].hit_sliding_window("small", 10, 60)[0] for i in range(14)]
    assert admitted == [True] * 10 + [False] * 4
    assert counted(redis_server, "small") == 10


def test_holders_never_admit_more_than_the_limit_and_return_what_they_did_not_use(
    store: SharedStore, redis_server: RedisServer
) -> None:
    clock = Clock()
    holders = [leased(store, clock) for _ in range(4)]
    admitted = 0
    for i in range(2000):
        admitted += holders[i % 4].hit_sliding_window("big", 500, 60)[0]
    assert admitted == 500  # each share was spent before a new one was taken
    # One holder stops after a few hits of a fresh share; its unused units go back with its
    # next lease once the lease has ended (sync_interval), and another holder can take them.
    redis_server.client().flushall()
    assert holders[0].hit_sliding_window("fresh", 500, 60)[0]
    assert counted(redis_server, "fresh") == 5
    clock.now += 5  # the lease has ended
    assert holders[0].hit_sliding_window("fresh", 500, 60)[0]
    assert counted(redis_server, "fresh") == 1 + share_of(499)


def test_exact_and_leased_workers_share_one_counter(
    store: SharedStore, redis_server: RedisServer
) -> None:
    exact = SharedLimitStorage(store, SweptMemoryStorage())
    lease = leased(store)
    assert lease.hit_sliding_window("mixed", 300, 60)[0]  # takes 3
    admitted = sum(exact.hit_sliding_window("mixed", 300, 60)[0] for _ in range(300))
    assert admitted == 297
    assert lease.hit_sliding_window("mixed", 300, 60)[0]  # from its lease
    assert lease.hit_sliding_window("mixed", 300, 60)[0]
    assert not lease.hit_sliding_window("mixed", 300, 60)[0]


def test_the_sweeper_gives_back_an_idle_workers_units(
    store: SharedStore, redis_server: RedisServer
) -> None:
    idle = leased(store, sync=0.2)
    assert idle.hit_sliding_window("idle", 1000, 60)[0]
    assert counted(redis_server, "idle") == 10
    deadline = time.monotonic() + 5
    while counted(redis_server, "idle") != 1:
        assert time.monotonic() < deadline, "the unused units did not go back"
        time.sleep(0.02)  # poll interval


def test_units_of_an_ended_window_go_back_to_it_as_the_previous_window(
    store: SharedStore, redis_server: RedisServer
) -> None:
    clock = Clock()
    storage = leased(store, clock, sync=30)
    assert storage.hit_sliding_window("roll", 500, 1)[0]  # 5 counted, 4 unused
    time.sleep(1.1)  # the one-second window has rolled in Redis
    clock.now += 1.1
    acquired, previous, _, current, _ = storage.hit_sliding_window("roll", 500, 1)
    assert acquired
    assert previous == 1  # the four unused units went back to the window they came from
    assert current == 1


def test_redis_down_counts_in_memory(store: SharedStore, redis_server: RedisServer) -> None:
    storage = leased(store, sync=0.1)
    assert storage.hit_sliding_window("down", 3, 60)[0]
    redis_server.stop()
    admitted = [storage.hit_sliding_window("down", 3, 60)[0] for _ in range(4)]
    assert admitted == [True, True, True, False]  # this process's own count of 3
