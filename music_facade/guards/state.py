"""An upstream account's guard state, and GuardStore: where the states of all accounts live.

Plain data with expiry times, below both the rules (Guards) and the stores (memory.py,
shared.py), so each of them imports it and none imports the other's module to get it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class AccountGuard:
    """One account's guard state; every time is clock seconds, 0 meaning "not set"."""

    cooldown_until: float = 0.0
    """After a 429: no upstream call before this."""
    auth_failed_until: float = 0.0
    """After a 401/402/403/596: that answer is repeated from memory until this."""
    auth_status: int = 0
    """The remembered auth failure's upstream status."""
    failures: int = 0
    """Consecutive outages (5xx answers, timeouts, unreachable)."""
    open_until: float = 0.0
    """Non-zero: the breaker opened; it is open until this, then half-open."""
    probe_until: float = 0.0
    """Half-open: the one probing call holds this lease until this time."""

    def expires_at(self) -> float:
        """When the state stops mattering (a store may forget it then); inf while counting."""
        if self.failures or self.open_until:
            return math.inf
        return max(self.cooldown_until, self.auth_failed_until)


CLEAR = AccountGuard()


class GuardStore(Protocol):
    """Where account states live: each process's memory, or a store replicas share."""

    def read(self, user_id: str) -> AccountGuard:
        """The account's state (CLEAR if none is stored)."""

    def read_after_call(self, user_id: str, again: Callable[[], None]) -> AccountGuard:
        """The account's state after an upstream call. A store that answers from a copy it
        kept from before the call calls again() (which reads and acts once more) when it
        learns the copy may have gone out of date during the call."""

    def change(self, user_id: str, update: Callable[[AccountGuard], AccountGuard]) -> AccountGuard:
        """Apply update to the stored state atomically and return the new state.

        update must be a pure function of the state: a shared store may call it again when
        another replica changed the state in between.
        """
