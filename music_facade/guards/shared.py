"""SharedGuardStore: account guard states in Redis, so a 429 seen by one replica stops them all.

Each account's state is one JSON value under the store's prefix, changed with an optimistic
transaction (WATCH, then MULTI/EXEC, retried when another replica changed it in between), and
expiring by itself when the state stops mattering. While Redis is unavailable the process falls
back to its own memory store, as without Redis.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any

import redis

from ..shared import SharedStore, StoreUnavailable
from .memory import MemoryGuardStore
from .state import CLEAR, AccountGuard

# A state whose expiry is "while counting" (a failure streak, an open breaker awaiting its probe)
# is kept this long at most after its last change.
COUNTING_TTL = 3600.0
_FIELDS = frozenset(f.name for f in fields(AccountGuard))


def _decode(value: Any) -> AccountGuard:
    if not isinstance(value, bytes | str):
        return CLEAR
    try:
        data = json.loads(value)
        if not isinstance(data, dict) or set(data) - _FIELDS:
            return CLEAR
        return AccountGuard(**data)
    except (ValueError, TypeError):
        return CLEAR


class SharedGuardStore:
    """GuardStore over Redis, with this process's memory store while Redis is unavailable."""

    def __init__(self, store: SharedStore, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self.fallback = MemoryGuardStore(clock)

    def _key(self, user_id: str) -> str:
        return self.store.key("guard", user_id)

    def read(self, user_id: str) -> AccountGuard:
        """The shared state, or this process's own while Redis is unavailable."""
        try:
            return _decode(self.store.call(lambda r: r.get(self._key(user_id))))
        except StoreUnavailable:
            return self.fallback.read(user_id)

    def change(self, user_id: str, update: Callable[[AccountGuard], AccountGuard]) -> AccountGuard:
        """Apply update atomically in Redis (retried on a concurrent change), else in memory."""
        key = self._key(user_id)
        result: list[AccountGuard] = []

        def transaction(pipe: redis.client.Pipeline) -> None:
            new = update(_decode(pipe.get(key)))
            ttl = new.expires_at() - self.clock()
            pipe.multi()
            if new == CLEAR or ttl <= 0:
                pipe.delete(key)
            else:
                seconds = COUNTING_TTL if math.isinf(ttl) else ttl
                pipe.set(key, json.dumps(asdict(new)), px=max(1, math.ceil(seconds * 1000)))
            result[:] = [new]

        try:
            self.store.call(lambda r: r.transaction(transaction, key))
        except StoreUnavailable:
            return self.fallback.change(user_id, update)
        return result[0]
