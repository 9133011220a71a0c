"""Event-stream tickets in a real Redis: issued by one replica, redeemed once by any.

Two SharedStores on one redis-server stand for two replicas; the tickets are the service's own
(music_facade.tickets.digest names them, as the issuing route does).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from music_facade.shared.tickets import SharedTicketStore
from music_facade.tickets import MemoryTicketStore, digest
from tests.support.redis_server import RedisServer, replica_stores

pytestmark = pytest.mark.redis


@pytest.fixture
def replicas(redis_server: RedisServer) -> Iterator[tuple[SharedTicketStore, SharedTicketStore]]:
    with replica_stores(redis_server) as (one, two):
        yield (
            SharedTicketStore(one, MemoryTicketStore(time.time)),
            SharedTicketStore(two, MemoryTicketStore(time.time)),
        )


def test_one_replica_issues_another_redeems_once_and_only_a_hash_is_kept(
    replicas: tuple[SharedTicketStore, SharedTicketStore], redis_server: RedisServer
) -> None:
    one, two = replicas
    ticket = secrets.token_urlsafe(32)
    one.put(digest(ticket), b'{"grant": 1}', 60)
    client = redis_server.client()
    keys: list[bytes] = client.keys("*")  # type: ignore[assignment]  # the sync client
    assert [k.decode() for k in keys] == [f"t:ticket:{digest(ticket)}"]
    assert ticket.encode() not in keys[0]
    left: int = client.pttl(keys[0])  # type: ignore[assignment]
    assert 0 < left <= 60_000
    assert two.take(digest(ticket)) == b'{"grant": 1}'
    assert two.take(digest(ticket)) is None
    assert one.take(digest(ticket)) is None


def test_of_many_redeeming_one_ticket_at_once_exactly_one_gets_it(
    replicas: tuple[SharedTicketStore, SharedTicketStore],
) -> None:
    one, two = replicas
    ticket = secrets.token_urlsafe(32)
    one.put(digest(ticket), b"grant", 60)
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda i: (one, two)[i % 2].take(digest(ticket)), range(16)))
    assert got.count(b"grant") == 1
    assert got.count(None) == 15


def test_while_redis_is_away_a_ticket_is_kept_and_redeemed_in_this_process(
    replicas: tuple[SharedTicketStore, SharedTicketStore], redis_server: RedisServer
) -> None:
    one, _ = replicas
    redis_server.stop()
    try:
        ticket = secrets.token_urlsafe(32)
        one.put(digest(ticket), b"grant", 60)
        assert one.take(digest(ticket)) == b"grant"
        assert one.take(digest(ticket)) is None
    finally:
        redis_server.start()
