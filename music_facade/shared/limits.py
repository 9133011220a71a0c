"""Rate-limit counters in Redis: a client's limit holds across every worker of every replica.

The counters are limits' own sliding-window counters, with its Lua scripts and key layout
(`limits.storage.RedisStorage`, on the SharedStore's connection pool). A hit and the window it
leaves are sent as one pipeline: one Redis round trip per limit of a request. While Redis is
unavailable, this process's memory counters stand in (limits then hold per process, as without
Redis) and shared counting resumes when Redis answers again.
"""

from __future__ import annotations

from typing import Any

from limits.storage import RedisStorage

from ..limits import SweptMemoryStorage, Window
from . import SharedStore, StoreUnavailable


class SharedLimitStorage:
    """hit_sliding_window in Redis, else in this process's memory."""

    def __init__(self, store: SharedStore, fallback: SweptMemoryStorage) -> None:
        self.store = store
        self.fallback = fallback
        # The URI is not dialled: the client runs on the store's pool, with its timeouts.
        self.redis = RedisStorage(
            "redis://", connection_pool=store.pool, key_prefix=store.key("limits")
        )

    def hit_sliding_window(self, key: str, limit: int, expiry: int) -> Window:
        """Take one entry if the window has room; the window's counts and times left after it."""
        keys = [
            self.redis.prefixed_key(self.redis._previous_window_key(key)),
            self.redis.prefixed_key(self.redis._current_window_key(key)),
        ]

        def hit(r: object) -> list[Any]:
            pipe = self.redis.storage.pipeline(transaction=False)
            self.redis.lua_acquire_sliding_window(keys, [limit, expiry, 1], client=pipe)
            self.redis.lua_sliding_window(keys, [expiry], client=pipe)
            result: list[Any] = pipe.execute()
            return result

        try:
            acquired, window = self.store.call(hit)
        except StoreUnavailable:
            return self.fallback.hit_sliding_window(key, limit, expiry)
        previous, previous_ttl, current, current_ttl = window or (0, 0, 0, 0)
        return (
            bool(acquired),
            int(previous or 0),
            max(0.0, float(previous_ttl or 0)) / 1000,
            int(current or 0),
            max(0.0, float(current_ttl or 0)) / 1000,
        )
