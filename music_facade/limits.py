"""Rate limits per client (or per address in open mode), with RateLimit headers and 429 problems.

The `limits` library directly (Flask-Limiter wraps it, and resolved the limit of every request
through Flask's machinery): each configured limit string is parsed once, and a request costs a
storage hit and a window read per limit. Counters live in this worker's memory
(SweptMemoryStorage) or, for a fleet, in Redis (music_facade/shared/limits.py).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from functools import lru_cache
from typing import NamedTuple, Protocol

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage

from .auth import Caller
from .config import LimitSettings
from .errors import Problem

log = logging.getLogger(__name__)


class RateLimited(Problem, code="rate_limited"):
    """The caller is over its rate limit."""


class LimitState(NamedTuple):
    """The limit a request counted against (the breached one, else the shortest window)."""

    item: RateLimitItem
    remaining: int
    reset_at: float
    breached: bool

    def headers(self) -> list[tuple[str, str]]:
        """RateLimit (IETF draft) and X-RateLimit-* headers, and Retry-After when breached."""
        amount, window = self.item.amount, self.item.get_expiry()
        reset_in = max(0, math.ceil(self.reset_at - time.time()))
        remaining = 0 if self.breached else max(0, self.remaining)
        headers = [
            ("RateLimit-Policy", f'"music";q={amount};w={window}'),
            ("RateLimit", f'"music";r={remaining};t={reset_in}'),
            ("X-RateLimit-Limit", str(amount)),
            ("X-RateLimit-Remaining", str(remaining)),
            ("X-RateLimit-Reset", str(math.ceil(self.reset_at))),  # as t: never before it
        ]
        if self.breached:
            headers.append(("Retry-After", str(max(1, reset_in))))
        return headers


Window = tuple[bool, int, float, int, float]
"""A hit's outcome: acquired, then previous count, its seconds left, current count, its left."""


class LimitStorage(Protocol):
    """Where counters live: this worker's memory, or Redis for a fleet (music_facade/shared)."""

    def hit_sliding_window(self, key: str, limit: int, expiry: int) -> Window:
        """Take one entry if the window has room; the window's state after it."""


class SweptMemoryStorage(MemoryStorage):
    """limits' MemoryStorage, minus its expiry timer, with a one-pass sliding-window hit.

    MemoryStorage starts a timer thread 10 ms after every hit (a greenlet under gevent) to drop
    expired counters, guards each counter with a re-entrant lock, and reads the window twice
    per hit; measured under the gevent worker, a keyed hit cost a third more than one without
    a limit. Here one lock guards all counters, reads ignore expired ones, and a sweep every
    SWEEP_EVERY increments frees their memory. Same algorithm and API (SlidingWindowCounter-
    Support), so a shared storage (Redis) can replace it.
    """

    SWEEP_EVERY = 1024

    def __init__(self) -> None:
        super().__init__()
        self.timer.cancel()
        self._lock = threading.Lock()
        self._since_sweep = 0

    def _count(self, key: str, now: float) -> int:
        """A live counter's value (0 once expired); the caller holds the lock."""
        if self.expirations.get(key, 0) <= now:
            return 0
        return self.storage.get(key, 0)

    def _add(self, key: str, amount: int, expiry: float, now: float) -> int:
        if self.expirations.get(key, 0) <= now:
            self.storage[key] = 0
            self.expirations[key] = now + expiry
        value = self.storage[key] = self.storage[key] + amount
        self._since_sweep += 1
        if self._since_sweep >= self.SWEEP_EVERY:
            self._since_sweep = 0
            self._sweep(now)
        return value

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add amount to a counter (expiring `expiry` seconds after its first increment)."""
        with self._lock:
            return self._add(key, amount, expiry, time.time())

    def decr(self, key: str, amount: int = 1) -> int:
        """Take amount off a counter, not below 0."""
        with self._lock:
            if self._count(key, time.time()) == 0:
                return 0
            value = self.storage[key] = max(self.storage[key] - amount, 0)
            return value

    def _window(self, key: str, expiry: int, now: float) -> tuple[int, float, int, float, str]:
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        previous, current = self._count(previous_key, now), self._count(current_key, now)
        previous_ttl = (1 - (((now - expiry) / expiry) % 1)) * expiry if previous else 0.0
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        return previous, previous_ttl, current, current_ttl, current_key

    def acquire_sliding_window_entry(
        self, key: str, limit: int, expiry: int, amount: int = 1
    ) -> bool:
        """MemoryStorage's sliding-window hit, in one pass under one lock."""
        if amount > limit:
            return False
        now = time.time()
        with self._lock:
            previous, previous_ttl, current, _, current_key = self._window(key, expiry, now)
            if math.floor(previous * previous_ttl / expiry + current) + amount > limit:
                return False
            # A new counter lives two windows (the next window weighs it as the previous).
            self._add(current_key, amount, 2 * expiry, now)
            return True

    def hit_sliding_window(self, key: str, limit: int, expiry: int) -> Window:
        """acquire_sliding_window_entry and the window after it, in one pass under one lock."""
        now = time.time()
        with self._lock:
            previous, previous_ttl, current, current_ttl, current_key = self._window(
                key, expiry, now
            )
            if math.floor(previous * previous_ttl / expiry + current) + 1 > limit:
                return False, previous, previous_ttl, current, current_ttl
            current = self._add(current_key, 1, 2 * expiry, now)
            return True, previous, previous_ttl, current, current_ttl

    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        """Previous and current window counts and how long each has left."""
        with self._lock:
            return self._window(key, expiry, time.time())[:4]

    def _sweep(self, now: float) -> None:
        for key, expires in list(self.expirations.items()):
            if expires <= now:
                self.storage.pop(key, None)
                self.expirations.pop(key, None)
                self.locks.pop(key, None)


@lru_cache(maxsize=256)
def _parsed(limit: str) -> tuple[RateLimitItem, ...]:
    """A limit string's items, shortest window first (config validated them at start)."""
    return tuple(sorted(parse_many(limit), key=lambda item: item.get_expiry()))


class Limits:
    """One worker's limiter: which bucket a request counts against, and how much it holds."""

    def __init__(
        self,
        settings: LimitSettings,
        clients_required: bool,
        storage: LimitStorage | None = None,
    ) -> None:
        """storage: where counters live, this worker's memory by default."""
        self.settings = settings
        self.clients_required = clients_required
        self._storage: LimitStorage = storage if storage is not None else SweptMemoryStorage()

    @property
    def storage(self) -> LimitStorage:
        """Where the counters live, chosen at construction."""
        return self._storage

    def _bucket_and_limit(self, who: Caller, remote_addr: str | None) -> tuple[str, str] | None:
        """The bucket and limit for a caller; None: not counted (open mode without per_address)."""
        client = who.client
        if client is not None:
            return f"client:{client.name}", client.rate_limit or self.settings.default
        if not self.clients_required:
            if self.settings.per_address is None:
                return None
            return f"addr:{remote_addr}", self.settings.per_address
        return f"addr:{remote_addr}", self.settings.default

    def check(self, who: Caller, remote_addr: str | None) -> LimitState | None:
        """Count one request; raise RateLimited (with the headers) when over a limit."""
        return self.charge(who, remote_addr)

    def charge(
        self, who: Caller, remote_addr: str | None, open_limit: str | None = None
    ) -> LimitState | None:
        """Count one more unit of work against the caller's limits, as check() counts a request.

        GET /library calls it once per upstream page it actually fetched, beside the one
        check() of the request itself; RateLimited stops it like a request past the limit.
        open_limit: the limit per address where nothing else counts (open mode without
        per_address), so upstream calls made for a caller are never free.
        """
        found = self._bucket_and_limit(who, remote_addr)
        if found is None and open_limit is not None:
            found = f"addr:{remote_addr}", open_limit
        if found is None:
            return None
        bucket, limit = found
        try:
            state = self._hit(_counters(limit, bucket))
        except Exception:  # a limiter fault must not take /music down; it is logged
            log.exception("rate limiter failed; request not counted")
            return None
        if state.breached:
            log.warning(
                "rate limit exceeded", extra={"client": who.client.name if who.client else None}
            )
            raise RateLimited(
                f"Over the limit of {state.item} requests; slow down.",
                headers=dict(state.headers()),
            )
        return state

    def _hit(self, counters: tuple[_Counter, ...]) -> LimitState:
        """Count a hit against each limit (shortest window first), stopping at a breached one.

        The storage's sliding-window calls directly, with each counter's key made once: the
        strategy object's hit + get_window_stats spent most of their time making keys.
        """
        state = None
        for item, key, amount, expiry in counters:
            allowed, previous, previous_ttl, current, current_ttl = (
                self._storage.hit_sliding_window(key, amount, expiry)
            )
            reset_at = _reset_at(expiry, previous, previous_ttl, current, current_ttl)
            if not allowed:
                return LimitState(item, 0, reset_at, True)
            if state is None:  # the shortest window's, when none is breached
                used = math.floor(previous * previous_ttl / expiry + current)
                state = LimitState(item, max(0, amount - used), reset_at, False)
        assert state is not None  # parse_many never returns an empty list
        return state


_Counter = tuple[RateLimitItem, str, int, int]


@lru_cache(maxsize=4096)
def _counters(limit: str, bucket: str) -> tuple[_Counter, ...]:
    """A bucket's counters for a limit string: item, storage key, amount, window (seconds)."""
    return tuple(
        (item, item.key_for("music", bucket), item.amount, item.get_expiry())
        for item in _parsed(limit)
    )


def _reset_at(
    expiry: int, previous: float, previous_ttl: float, current: float, current_ttl: float
) -> float:
    """When the next request frees up (limits' SlidingWindowCounterRateLimiter.get_window_stats).

    The current counter lives two windows, so its TTL is in (expiry, 2 * expiry] and the
    window ends TTL - expiry from now. limits takes TTL % expiry, which is 0 when the TTL is a
    whole 2 * expiry: the first hit of a window in Redis (a fresh counter set with PX 2 *
    expiry) or in memory on a window boundary then read "resets now" (RateLimit t=0).
    """
    now = time.time()
    previous_in = previous_ttl % (expiry / previous) if previous else math.inf
    current_in = (current_ttl % expiry or expiry) if current else math.inf
    soonest = min(previous_in, current_in)
    return now if soonest == math.inf else now + soonest
