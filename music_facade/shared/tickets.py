"""Event-stream tickets in Redis: a ticket any replica issued, any replica redeems once.

A ticket is kept under the SHA-256 music_facade.tickets gives it, with Redis's own expiry, and
taken with GETDEL (Redis 6.2): reading and deleting are one command, so of two replicas
redeeming the same ticket at once only one gets it. While Redis is unavailable this process's
memory stands in: a ticket issued then is redeemable on this process only.
"""

from __future__ import annotations

import math

import redis

from ..tickets import MemoryTicketStore
from . import SharedStore, StoreUnavailable


class SharedTicketStore:
    """Tickets in Redis, else in this process's memory."""

    def __init__(self, store: SharedStore, fallback: MemoryTicketStore) -> None:
        self.store = store
        self.fallback = fallback

    def _key(self, digest: str) -> str:
        return self.store.key("ticket", digest)

    def put(self, digest: str, grant: bytes, ttl: float) -> None:
        """SET with an expiry (in memory while Redis is unavailable)."""
        key = self._key(digest)
        try:
            self.store.call(lambda r: r.set(key, grant, px=max(1, math.ceil(ttl * 1000))))
        except StoreUnavailable:
            self.fallback.put(digest, grant, ttl)

    def take(self, digest: str) -> bytes | None:
        """GETDEL; a ticket not in Redis may be one issued here while Redis was away."""
        key = self._key(digest)

        def getdel(r: redis.Redis) -> bytes | None:
            value: bytes | None = r.getdel(key)  # type: ignore[assignment]  # sync client
            return value

        try:
            found = self.store.call(getdel)
        except StoreUnavailable:
            found = None
        return found if found is not None else self.fallback.take(digest)
