"""SharedGuardStore: account guard states in Redis, so a 429 seen by one replica stops them all.

Each account's state is one JSON value under the store's prefix, changed with an optimistic
transaction (WATCH, then MULTI/EXEC, retried when another replica changed it in between), and
expiring by itself when the state stops mattering. While Redis is unavailable the process falls
back to its own memory store, as without Redis.

Every change also sets the guard generation (one key for all accounts) to a new random value in
the same transaction, and the process keeps each state it read or wrote with the generation it
was current at. A page's miss reads the generation in the exchange that takes the page's lock
(music_facade/shared/flights.py); while that load runs, a kept state of the same generation is
what Redis holds, so the guards ask nothing more. A check after the upstream call made on such a
state is made again once the load ends if the generation moved during the call (the load's end
reads it again). Any other call reads the state and the generation in one round trip, as a
plain read did.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any

import redis

from ..shared import GUARD_GENERATION, SharedStore, StoreUnavailable, seen_generation
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
        self.generation = store.key(GUARD_GENERATION)
        # user_id -> (state, the generation it was current at); one entry per upstream account.
        self._known: dict[str, tuple[AccountGuard, str]] = {}
        self._lock = threading.Lock()

    def _key(self, user_id: str) -> str:
        return self.store.key("guard", user_id)

    def _keep(self, user_id: str, state: AccountGuard, generation: Any) -> None:
        # No generation in Redis: "", which no load's generation equals (a missing one is set).
        tag = generation.decode() if isinstance(generation, bytes) else str(generation or "")
        with self._lock:
            self._known[user_id] = (state, tag)

    def read(self, user_id: str) -> AccountGuard:
        """The shared state, or this process's own while Redis is unavailable."""
        return self._read(user_id)[0]

    def read_after_call(self, user_id: str, again: Callable[[], None]) -> AccountGuard:
        """As read(); a state kept from before the call has again() called once the page's
        load ends, if the guard generation moved meanwhile."""
        state, kept = self._read(user_id)
        view = seen_generation.get()
        if kept and view is not None:
            view.again.append(again)
        return state

    def _read(self, user_id: str) -> tuple[AccountGuard, bool]:
        """The state, and whether it is the one kept at the running load's generation."""
        view = seen_generation.get()
        if view is not None:
            with self._lock:
                known = self._known.get(user_id)
            # A counting state (a failure streak, an open breaker) expires in Redis after
            # COUNTING_TTL without a new generation: only states with their own end are kept.
            if (
                known is not None
                and known[1] == view.generation
                and not math.isinf(known[0].expires_at())
            ):
                return known[0], True
        key = self._key(user_id)
        try:
            values: list[Any] = self.store.call(lambda r: r.mget([key, self.generation]))  # type: ignore[arg-type,return-value]
        except StoreUnavailable:
            return self.fallback.read(user_id), False
        state = _decode(values[0])
        self._keep(user_id, state, values[1])
        return state, False

    def change(self, user_id: str, update: Callable[[AccountGuard], AccountGuard]) -> AccountGuard:
        """Apply update atomically in Redis (retried on a concurrent change), else in memory."""
        key = self._key(user_id)
        result: list[AccountGuard] = []
        generation = uuid.uuid4().hex

        def transaction(pipe: redis.client.Pipeline) -> None:
            new = update(_decode(pipe.get(key)))
            ttl = new.expires_at() - self.clock()
            pipe.multi()
            if new == CLEAR or ttl <= 0:
                pipe.delete(key)
            else:
                seconds = COUNTING_TTL if math.isinf(ttl) else ttl
                pipe.set(key, json.dumps(asdict(new)), px=max(1, math.ceil(seconds * 1000)))
            # In the same transaction: no process can keep the old state as current.
            pipe.set(self.generation, generation)
            result[:] = [new]

        try:
            self.store.call(lambda r: r.transaction(transaction, key))
        except StoreUnavailable:
            return self.fallback.change(user_id, update)
        self._keep(user_id, result[0], generation)
        return result[0]
