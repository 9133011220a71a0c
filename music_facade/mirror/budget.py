"""The mirror's per-account call budget: at most `limit` upstream calls in any 60-second window.

A sliding window of the times of the calls made, not a token bucket: a bucket refilled at
limit/60 per second still lets a burst of `limit` calls follow a full minute of calls at the
refill rate, so some 60-second window would hold almost twice the limit. With the times kept,
"any window" holds exactly: a call is allowed only when fewer than `limit` calls happened in the
60 seconds before it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW = 60.0


class Budget:
    """Upstream calls per account (any hashable key) in a sliding window, on an injectable clock."""

    def __init__(
        self, limit: int, window: float = WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ValueError("a budget allows at least one call per window")
        self.limit = limit
        self.window = window
        self.clock = clock
        self._calls: dict[str, deque[float]] = {}

    def take(self, account: str) -> float:
        """Take one call for the account: 0.0 if it may call now (the call is counted), else the
        seconds until it may (nothing is counted: the caller waits and asks again)."""
        now = self.clock()
        calls = self._recent(account, now)
        if len(calls) < self.limit:
            calls.append(now)
            return 0.0
        # The oldest call in the window leaves it `window` seconds after it was made.
        return max(calls[0] + self.window - now, 0.0) or _EPSILON

    def wait(self, account: str) -> float:
        """The seconds until the account may call (0.0: now), without taking a call."""
        now = self.clock()
        calls = self._recent(account, now)
        if len(calls) < self.limit:
            return 0.0
        return max(calls[0] + self.window - now, 0.0) or _EPSILON

    def used(self, account: str) -> int:
        """How many calls the account made in the window ending now."""
        return len(self._recent(account, self.clock()))

    def _recent(self, account: str, now: float) -> deque[float]:
        calls = self._calls.setdefault(account, deque())
        # A call made exactly `window` seconds ago is out: windows are half-open [t, t + window).
        while calls and calls[0] <= now - self.window:
            calls.popleft()
        return calls


# A refusal is never "wait 0 seconds", which the caller would read as "go".
_EPSILON = 1e-3
