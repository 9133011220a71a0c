"""Each caller's /events stream leases in a real Redis: one cap held by every replica together,
a lease nobody renews running out by Redis's clock, and this process's memory while Redis is away.

Two SharedStores on one redis-server stand for two replicas.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from music_facade.shared.stream_leases import SharedStreamLeases
from music_facade.stream_leases import LEASE, MemoryStreamLeases
from tests.support.redis_server import RedisServer, replica_stores
from tests.support.waiting import wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
def replicas(redis_server: RedisServer) -> Iterator[tuple[SharedStreamLeases, SharedStreamLeases]]:
    with replica_stores(redis_server) as (one, two):
        yield (
            SharedStreamLeases(one, MemoryStreamLeases(time.time)),
            SharedStreamLeases(two, MemoryStreamLeases(time.time)),
        )


def test_two_replicas_hold_one_cap_together_and_a_release_frees_a_place(
    replicas: tuple[SharedStreamLeases, SharedStreamLeases], redis_server: RedisServer
) -> None:
    one, two = replicas
    first = one.take("client:app", "s1", 3, LEASE)
    second = two.take("client:app", "s2", 3, LEASE)
    third = one.take("client:app", "s3", 3, LEASE)
    assert first is not None
    assert second is not None
    assert third is not None
    assert two.take("client:app", "s4", 3, LEASE) is None
    assert one.take("client:app", "s4", 3, LEASE) is None
    assert two.take("client:other", "s5", 3, LEASE) is not None  # another caller's own cap
    client = redis_server.client()
    members: list[bytes] = client.zrange("t:streams:client:app", 0, -1)  # type: ignore[assignment]
    assert sorted(members) == [b"s1", b"s2", b"s3"]
    left: int = client.pttl("t:streams:client:app")  # type: ignore[assignment]
    assert 0 < left <= LEASE * 1000
    second.release()
    assert one.take("client:app", "s4", 3, LEASE) is not None
    assert two.take("client:app", "s6", 3, LEASE) is None


def test_a_lease_nobody_renews_runs_out_and_a_renewed_one_does_not(
    replicas: tuple[SharedStreamLeases, SharedStreamLeases],
) -> None:
    one, two = replicas
    # The stream holding it died with its replica: nobody renews or releases it.
    assert one.take("client:app", "dead", 2, 0.5) is not None
    alive = one.take("client:app", "alive", 2, 0.5)
    assert alive is not None
    assert two.take("client:app", "new", 2, 0.5) is None
    deadline = time.monotonic() + 0.9
    while time.monotonic() < deadline:
        alive.renew()
        time.sleep(0.1)
    # The dead one's place is free again; the renewed one still counts.
    assert two.take("client:app", "new", 2, 0.5) is not None
    assert two.take("client:app", "newer", 2, 0.5) is None


def test_while_redis_is_away_the_cap_holds_in_this_process(
    replicas: tuple[SharedStreamLeases, SharedStreamLeases], redis_server: RedisServer
) -> None:
    one, _ = replicas
    redis_server.stop()
    try:
        held = one.take("client:app", "s1", 1, LEASE)
        assert held is not None
        assert one.take("client:app", "s2", 1, LEASE) is None
        held.renew()  # neither raises while Redis is down
        held.release()
        assert one.take("client:app", "s3", 1, LEASE) is not None
    finally:
        redis_server.start()
    wait_until(lambda: one.store.available, timeout=5)
