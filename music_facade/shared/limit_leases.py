"""Leased rate-limit budget: a worker counts a share of a window locally, the limit still shared.

With `[limits] sync_interval` above 0, a hit that finds no usable lease takes one from Redis in
one script call on limits' own sliding-window counters (the keys SharedLimitStorage uses): the
share, SHARE of what the window has left (at least 1, never more than is left), is added to the
window's counter at once, and the worker admits that many requests without asking Redis again
until the share is spent, `sync_interval` seconds pass or the window ends. Unused units go back
to the window they were taken from (with the next lease, or from a sweeper once the lease has
ended); a unit is only ever admitted inside the window it was counted in, so the fleet never
admits more than the limit. The cost is the other way round: a caller can be refused while
other workers hold units it has not used yet, for at most `sync_interval` seconds (the bound is
in docs/callers.md "Rate limits"). A window with less than 2 / SHARE left grants one unit at a
time: a round trip per request, exact, as with sync_interval = 0.

While Redis is unavailable, hits count in this process's memory, as SharedLimitStorage's do.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from ..limits import SweptMemoryStorage, Window
from . import SharedStore, StoreUnavailable

log = logging.getLogger(__name__)

SHARE = 0.01
"""The fraction of a window's remaining budget one lease takes."""

# KEYS: the previous and current window counters (limits' layout). ARGV: limit, window (s),
# share (0: take nothing), units given back, and how many ms the window they were taken from
# had left when the worker sent them (negative: it has ended). Times are in ms, as in limits'
# acquire_sliding_window.lua, whose window shift this repeats.
_LEASE = """
local limit = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2]) * 1000
local share = tonumber(ARGV[3])
local back = tonumber(ARGV[4])
local back_left = tonumber(ARGV[5])

local current_ttl = tonumber(redis.call('pttl', KEYS[2]))
if current_ttl > 0 and current_ttl < expiry then
    redis.call('rename', KEYS[2], KEYS[1])
    redis.call('set', KEYS[2], 0, 'PX', current_ttl + expiry)
    current_ttl = current_ttl + expiry
end

-- Windows end a whole window apart, so half a window tells which one the units came from.
if back > 0 and current_ttl > 0 then
    local left = current_ttl - expiry
    local key = nil
    if math.abs(back_left - left) < expiry / 2 then
        key = KEYS[2]
    elseif math.abs(back_left - (left - expiry)) < expiry / 2 then
        key = KEYS[1]
    end
    if key then
        local n = math.min(back, tonumber(redis.call('get', key)) or 0)
        if n > 0 then
            redis.call('decrby', key, n)
        end
    end
end

local previous_count = tonumber(redis.call('get', KEYS[1])) or 0
local previous_ttl = tonumber(redis.call('pttl', KEYS[1])) or 0
local current_count = tonumber(redis.call('get', KEYS[2])) or 0
if previous_ttl < 0 then
    previous_ttl = 0
end
local granted = 0
if share > 0 then
    local left = limit - (math.floor(previous_count * previous_ttl / expiry) + current_count)
    if left > 0 then
        granted = math.min(left, math.max(1, math.floor(left * share)))
        if redis.call('exists', KEYS[2]) == 1 then
            redis.call('incrby', KEYS[2], granted)
        else
            redis.call('set', KEYS[2], granted, 'PX', expiry * 2)
        end
        current_count = current_count + granted
    end
end
current_ttl = tonumber(redis.call('pttl', KEYS[2]))
if current_ttl < 0 then
    current_ttl = 0
end
return {granted, previous_count, previous_ttl, current_count, current_ttl}
"""


def share_of(left: int, share: float = SHARE) -> int:
    """The units one lease takes of what a window has left (the script's rule, for tests)."""
    return min(left, max(1, math.floor(left * share))) if left > 0 else 0


class Lease:
    """Units of one window this worker took from Redis and has not admitted yet.

    It keeps the window's state as Redis returned it with the grant and ages it on this
    worker's clock, so each hit still reports the window's counts and times left.
    """

    __slots__ = ("current", "current_ttl", "ends_at", "expiry", "previous", "previous_ttl",
                 "taken_at", "unused")  # fmt: skip

    def __init__(
        self, unused: int, expiry: int, window: Window, taken_at: float, sync_interval: float
    ) -> None:
        """window: the hit that took the lease (its counts include every granted unit)."""
        _, self.previous, self.previous_ttl, self.current, self.current_ttl = window
        self.unused = unused
        self.expiry = expiry
        self.taken_at = taken_at
        # The current counter lives two windows: its window ends a window before its TTL.
        self.ends_at = taken_at + min(sync_interval, self.current_ttl - expiry)

    def hit(self, now: float) -> Window | None:
        """Admit one request from the lease; None once it is spent or has ended."""
        if self.unused <= 0 or now >= self.ends_at:
            return None
        self.unused -= 1
        return self.window(now)

    def window(self, now: float) -> Window:
        """The window as this worker sees it: counted in Redis, less the units it holds."""
        aged = now - self.taken_at
        return (
            True,
            self.previous,
            max(0.0, self.previous_ttl - aged),
            self.current - self.unused,
            max(0.0, self.current_ttl - aged),
        )

    def window_left(self, now: float) -> float:
        """Seconds until the window the units were taken from ends (negative once it has)."""
        return self.taken_at + self.current_ttl - self.expiry - now


class _Slot:
    """One counter's lease, the lock that lets one greenlet renew it, and who is waiting."""

    __slots__ = ("lease", "renewing", "users")

    def __init__(self) -> None:
        self.lease: Lease | None = None
        self.renewing = threading.Lock()
        self.users = 0  # hits between finding the slot and finishing a renewal


class LeasedLimitStorage:
    """hit_sliding_window from a lease of the window's budget, renewed from Redis."""

    def __init__(
        self,
        store: SharedStore,
        fallback: SweptMemoryStorage,
        sync_interval: float,
        clock: Callable[[], float] = time.monotonic,
        share: float = SHARE,
    ) -> None:
        """sync_interval: the longest a lease is used (seconds); share: see SHARE."""
        self.store = store
        self.fallback = fallback
        self.sync_interval = sync_interval
        self.clock = clock
        self.share = share
        self._script = store.redis.register_script(_LEASE)
        self._prefix = store.key("limits")
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._sweeping = False

    def _keys(self, key: str) -> list[str]:
        # limits' RedisStorage layout: "{key}" is the current window, "{key}/-1" the previous.
        return [f"{self._prefix}:{{{key}}}/-1", f"{self._prefix}:{{{key}}}"]

    def hit_sliding_window(self, key: str, limit: int, expiry: int) -> Window:
        """Take one entry from this worker's lease, else from a new one (one Redis call)."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            elif slot.lease is not None:
                window = slot.lease.hit(self.clock())
                if window is not None:
                    return window
            slot.users += 1
        try:
            with slot.renewing:
                return self._renew(key, slot, limit, expiry)
        finally:
            with self._lock:
                slot.users -= 1
                if slot.lease is None and slot.users == 0 and self._slots.get(key) is slot:
                    del self._slots[key]  # nothing held: a bucket per address costs nothing

    def _renew(self, key: str, slot: _Slot, limit: int, expiry: int) -> Window:
        """Give back what the old lease has left and take a new one; the caller holds
        slot.renewing."""
        with self._lock:
            now = self.clock()
            old, slot.lease = slot.lease, None
            if old is not None:
                window = old.hit(now)  # another greenlet renewed it while this one waited
                if window is not None:
                    slot.lease = old
                    return window
        back, back_left = (old.unused, old.window_left(now)) if old is not None else (0, 0.0)
        args = [limit, expiry, self.share, back, math.floor(back_left * 1000)]
        try:
            reply = self.store.script(self._script, self._keys(key), args)
        except StoreUnavailable:
            # Units not given back stay counted in their window and expire with it.
            return self.fallback.hit_sliding_window(key, limit, expiry)
        granted, window = _parsed(reply)
        if granted == 0:
            return window
        if granted > 1:
            lease = Lease(granted - 1, expiry, window, now, self.sync_interval)
            with self._lock:
                slot.lease = lease
                start = not self._sweeping
                self._sweeping = True
            if start:
                threading.Thread(target=self._sweep, name="limit-leases", daemon=True).start()
            return lease.window(now)
        return window

    def _sweep(self) -> None:
        """Give back the units of ended leases until none is held (a daemon thread, a greenlet
        under gevent): without it an idle worker would hold them until the window ends."""
        while True:
            with self._lock:
                now = self.clock()
                ended, next_end = [], math.inf
                for key, slot in self._slots.items():
                    lease = slot.lease
                    if lease is None:
                        continue
                    if now >= lease.ends_at or lease.unused <= 0:
                        slot.lease = None
                        if lease.unused > 0:
                            ended.append((key, lease))
                    else:
                        next_end = min(next_end, lease.ends_at)
                for key in [k for k, s in self._slots.items() if s.lease is None and not s.users]:
                    del self._slots[key]
                if not ended and next_end == math.inf:
                    self._sweeping = False
                    return
            if ended:
                self._give_back(ended, now)
            time.sleep(min(max(next_end - self.clock(), 0.01), self.sync_interval))

    def _give_back(self, ended: list[tuple[str, Lease]], now: float) -> None:
        """One pipelined call returning the unused units of ended leases."""

        def send(r: Any) -> None:
            pipe = r.pipeline(transaction=False)
            for key, lease in ended:
                left = math.floor(lease.window_left(now) * 1000)
                args = [0, lease.expiry, 0, lease.unused, left]
                self._script(keys=self._keys(key), args=args, client=pipe)
            pipe.execute()

        with suppress(StoreUnavailable):  # unanswered: the units expire with their window
            self.store.call(send)


def _parsed(reply: list[Any]) -> tuple[int, Window]:
    """The script's reply: units granted, and the window after the grant (times in seconds)."""
    granted, previous, previous_ttl, current, current_ttl = (int(x or 0) for x in reply)
    window = (granted > 0, previous, previous_ttl / 1000, current, current_ttl / 1000)
    return granted, window
