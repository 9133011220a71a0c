"""Stream leases in Redis: one caller's cap on /events streams holds across every replica.

Each caller has a sorted set `<prefix>:streams:<caller>`, member = stream id, score = the
lease's expiry in Redis's own clock (TIME), so replicas whose clocks differ still agree on
what has expired. Taking a lease is one script: drop expired members, count, add if under the
cap, and keep the key alive at least as long as the new lease (an abandoned key goes away by
itself). Renewing sets a new score; releasing removes the member.

While Redis is unavailable this process's memory stands in: the cap then holds per process,
and a lease taken there is renewed and released there.
"""

from __future__ import annotations

import math
from contextlib import suppress

from ..stream_leases import Lease, MemoryStreamLeases
from . import SharedStore, StoreUnavailable

# KEYS[1] the caller's set; ARGV: stream id, cap, lease (ms). 1: taken, 0: at the cap.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
local lease = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
if redis.call('PTTL', KEYS[1]) < lease then
  redis.call('PEXPIRE', KEYS[1], lease)
end
return 1
"""

# KEYS[1] the caller's set; ARGV: stream id, lease (ms). A renewal of a lease that expired and
# was dropped adds it again: the stream is running, so it counts.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
if redis.call('PTTL', KEYS[1]) < lease then
  redis.call('PEXPIRE', KEYS[1], lease)
end
return 1
"""


class SharedStreamLeases:
    """Leases in Redis, else in this process's memory."""

    def __init__(self, store: SharedStore, fallback: MemoryStreamLeases) -> None:
        self.store = store
        self.fallback = fallback
        self._take = store.redis.register_script(_TAKE)
        self._renew = store.redis.register_script(_RENEW)

    def key(self, caller: str) -> str:
        """The caller's sorted set of leases."""
        return self.store.key("streams", caller)

    def take(self, caller: str, stream: str, cap: int, lease: float) -> Lease | None:
        """A lease in Redis if the caller is under its cap fleet-wide; while Redis is
        unavailable, one from this process's memory."""
        key = self.key(caller)
        ms = max(1, math.ceil(lease * 1000))
        try:
            taken = self.store.script(self._take, [key], [stream, cap, ms])
        except StoreUnavailable:
            return self.fallback.take(caller, stream, cap, lease)
        return SharedLease(self, key, stream, ms) if taken == 1 else None

    def _renew_lease(self, key: str, stream: str, ms: int) -> None:
        # Unanswered: the lease runs out unless a later renewal gets through.
        with suppress(StoreUnavailable):
            self.store.script(self._renew, [key], [stream, ms])

    def _release_lease(self, key: str, stream: str) -> None:
        with suppress(StoreUnavailable):  # unanswered: the lease runs out by itself
            self.store.call(lambda r: r.zrem(key, stream))


class SharedLease:
    """A lease in Redis."""

    def __init__(self, leases: SharedStreamLeases, key: str, stream: str, ms: int) -> None:
        self._leases = leases
        self._key = key
        self._stream = stream
        self._ms = ms
        self._released = False

    def renew(self) -> None:
        """A new expiry from Redis's clock, unless released already."""
        if not self._released:
            self._leases._renew_lease(self._key, self._stream, self._ms)

    def release(self) -> None:
        """ZREM (once)."""
        if not self._released:
            self._released = True
            self._leases._release_lease(self._key, self._stream)
