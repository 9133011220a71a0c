"""Rate limits per client (or per address in open mode), with RateLimit headers and 429 problems.

The `limits` library directly (Flask-Limiter wraps it, and resolved the limit of every request
through Flask's machinery): each configured limit string is parsed once, and a request costs a
storage hit and a window read per limit. Counters live in this worker's memory
(SweptMemoryStorage); any `limits` storage with sliding-window support can replace it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from .clients import Caller
from .config import LimitSettings
from .errors import Problem

log = logging.getLogger(__name__)


class RateLimited(Problem):
    status, code, title = 429, "rate_limited", "Too many requests"


@dataclass(frozen=True)
class LimitState:
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
            ("X-RateLimit-Reset", str(int(self.reset_at))),
        ]
        if self.breached:
            headers.append(("Retry-After", str(max(1, reset_in))))
        return headers


class SweptMemoryStorage(MemoryStorage):
    """limits' MemoryStorage, minus its expiry timer: expired counters are swept inline.

    MemoryStorage starts a timer thread 10 ms after every hit (a greenlet under gevent) to drop
    expired counters, and guards each counter with a re-entrant lock; measured under the gevent
    worker, that made a keyed hit cost a third more than one without a limit. Reads already
    ignore expired counters, so only memory needs the sweep, every SWEEP_EVERY increments.
    """

    SWEEP_EVERY = 1024

    def __init__(self) -> None:
        super().__init__()
        self.timer.cancel()
        self._lock = threading.Lock()
        self._since_sweep = 0

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add amount to a counter (expiring `expiry` seconds after its first increment)."""
        self.get(key)  # drops the counter if it expired
        with self._lock:
            value = self.storage[key] = self.storage[key] + amount
            if value == amount:
                self.expirations[key] = time.time() + expiry
            self._since_sweep += 1
            if self._since_sweep >= self.SWEEP_EVERY:
                self._since_sweep = 0
                self._sweep()
        return value

    def decr(self, key: str, amount: int = 1) -> int:
        """Take amount off a counter, not below 0."""
        self.get(key)
        with self._lock:
            value = self.storage[key] = max(self.storage[key] - amount, 0)
        return value

    def _sweep(self) -> None:
        now = time.time()
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

    def __init__(self, settings: LimitSettings, clients_required: bool) -> None:
        self.settings = settings
        self.clients_required = clients_required
        self.limiter = SlidingWindowCounterRateLimiter(SweptMemoryStorage())

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
        found = self._bucket_and_limit(who, remote_addr)
        if found is None:
            return None
        bucket, limit = found
        try:
            state = self._hit(bucket, _parsed(limit))
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

    def _hit(self, bucket: str, items: tuple[RateLimitItem, ...]) -> LimitState:
        state = None
        for item in items:
            allowed = self.limiter.hit(item, "music", bucket)
            stats = self.limiter.get_window_stats(item, "music", bucket)
            if not allowed:
                return LimitState(item, 0, stats.reset_time, breached=True)
            if state is None:  # the shortest window's, when none is breached
                state = LimitState(item, stats.remaining, stats.reset_time, breached=False)
        assert state is not None  # parse_many never returns an empty list
        return state
