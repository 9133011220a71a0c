"""Stream leases: how many /events streams one caller holds open across the whole fleet.

A stream takes a lease under its caller's name before its first byte, renews it while it runs
and gives it back when it ends. A lease is only good until its expiry, so a stream whose worker
died without giving it back stops counting once its last renewal runs out: nothing is held
forever by a crash.

Where leases live is a `StreamLeaseStore`: this process's memory, or (with [redis]) Redis that
every replica shares (music_facade.shared.stream_leases).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

LEASE = 30.0  # seconds a lease holds without renewal
RENEW_EVERY = 10.0  # seconds between renewals of a running stream's lease


class Lease(Protocol):
    """One stream's hold on its caller's cap."""

    def renew(self) -> None:
        """Extend the expiry by the lease's length from now (a failure is not the caller's:
        the lease then runs out on its own)."""

    def release(self) -> None:
        """Give the place back; later calls do nothing."""


class StreamLeaseStore(Protocol):
    """Leases by caller, each with an expiry."""

    def take(self, caller: str, stream: str, cap: int, lease: float) -> Lease | None:
        """A lease for the stream if the caller holds fewer than cap unexpired ones, else None."""


class MemoryStreamLeases:
    """Leases in this process's memory: a caller's cap holds per process."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, dict[str, float]] = {}  # caller -> stream -> expiry

    def take(self, caller: str, stream: str, cap: int, lease: float) -> MemoryLease | None:
        """Expired leases dropped, counted, and this one added if under the cap: one step."""
        with self._lock:
            now = self.clock()
            held = {s: e for s, e in self._held.get(caller, {}).items() if e > now}
            if len(held) >= cap:
                self._held[caller] = held
                return None
            held[stream] = now + lease
            self._held[caller] = held
        return MemoryLease(self, caller, stream, lease)

    def held(self, caller: str) -> int:
        """The caller's unexpired leases."""
        now = self.clock()
        with self._lock:
            return sum(1 for e in self._held.get(caller, {}).values() if e > now)

    def _renew(self, caller: str, stream: str, lease: float) -> None:
        with self._lock:
            self._held.setdefault(caller, {})[stream] = self.clock() + lease

    def _release(self, caller: str, stream: str) -> None:
        with self._lock:
            held = self._held.get(caller)
            if held is None:
                return
            held.pop(stream, None)
            if not held:
                del self._held[caller]  # a caller without streams costs no memory


class MemoryLease:
    """A lease in a MemoryStreamLeases."""

    def __init__(self, store: MemoryStreamLeases, caller: str, stream: str, lease: float) -> None:
        self._store = store
        self._caller = caller
        self._stream = stream
        self._lease = lease
        self._released = False

    def renew(self) -> None:
        """A new expiry, unless released already."""
        if not self._released:
            self._store._renew(self._caller, self._stream, self._lease)

    def release(self) -> None:
        """Removed (once)."""
        if not self._released:
            self._released = True
            self._store._release(self._caller, self._stream)
