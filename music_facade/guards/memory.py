"""MemoryGuardStore: account guard states in this process's memory."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .state import CLEAR, AccountGuard


class MemoryGuardStore:
    """A dict of AccountGuard by user_id under one lock; forgets states once they expire."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._states: dict[str, AccountGuard] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def read(self, user_id: str) -> AccountGuard:
        """The account's state, CLEAR if none is stored."""
        with self._lock:
            return self._states.get(user_id, CLEAR)

    def read_after_call(self, user_id: str, again: Callable[[], None]) -> AccountGuard:
        """As read(): this process's own state is always current."""
        return self.read(user_id)

    def change(self, user_id: str, update: Callable[[AccountGuard], AccountGuard]) -> AccountGuard:
        """Apply update under the lock; an expired or clear state is dropped, not stored."""
        with self._lock:
            new = update(self._states.get(user_id, CLEAR))
            if new == CLEAR or new.expires_at() <= self._clock():
                self._states.pop(user_id, None)
            else:
                self._states[user_id] = new
            return new
