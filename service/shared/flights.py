"""Single flight across the fleet: one upstream call for a cold page, waiters woken by pub/sub.

The process-local single flight (PageCache) already collapses a process's own concurrent misses
into one leader. That leader then takes a Redis lock for the page; the one that gets it loads and
stores the page, the others wait. When the page is stored (or the load failed) the leader
publishes the key on one channel, and every process's listener wakes its waiters at once: no
polling on a timer. If a leader dies its lock expires (its TTL is bounded by the upstream
timeouts) and one waiter takes over. While Redis is unavailable every process loads on its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import UpstreamFailure, failure_from_body
from . import SharedStore, StoreUnavailable, digest

log = logging.getLogger(__name__)

T = TypeVar("T")

# SET the lock if free (answer -1), else answer how many ms it has left.
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
return redis.call('pttl', KEYS[1])
"""
# Delete the lock only if it is still ours (it may have expired and been taken over).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_LISTEN_SECONDS = 1.0  # how long one get_message waits; bounds how fast close() is noticed


@dataclass
class _Waiter:
    event: threading.Event = field(default_factory=threading.Event)
    problem: dict[str, Any] | None = None


class FleetFlights:
    """Run a load once across every process sharing the store, per key."""

    def __init__(self, store: SharedStore, lock_seconds: float) -> None:
        self.store = store
        self.lock_ms = max(1000, int(lock_seconds * 1000))
        self.channel = store.key("flights")
        self._waiters: dict[str, list[_Waiter]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._subscribed = threading.Event()
        self._acquire = store.redis.register_script(_ACQUIRE)
        self._release = store.redis.register_script(_RELEASE)
        self._listener = threading.Thread(target=self._listen, name="fleet-flights", daemon=True)
        self._listener.start()

    def run(self, key: str, lead: Callable[[], T], recheck: Callable[[], T | None]) -> T:
        """lead()'s result if this process gets the key's lock, else what recheck() finds once
        the leader is done; the leader's UpstreamFailure is raised in every waiter too."""
        key = digest(key)  # for the lock, the message and the waiters alike
        lock = self.store.key("lock", key)
        token = uuid.uuid4().hex
        while True:
            waiter = self._watch(key)
            try:
                try:
                    left = self.store.call(
                        lambda r: self._acquire(keys=[lock], args=[token, self.lock_ms], client=r)
                    )
                except StoreUnavailable:
                    return lead()
                if left == -1:
                    return self._lead(key, lock, token, lead, recheck)
                # Another process leads: wait for its word, at most until its lock runs out.
                waiter.event.wait(max(int(left), 50) / 1000)
                if waiter.problem is not None:
                    raise failure_from_body(waiter.problem)
                found = recheck()
                if found is not None:
                    return found
                # No page and no failure: the leader's lock expired (it died). Try to take over.
            finally:
                self._unwatch(key, waiter)

    def _lead(
        self,
        key: str,
        lock: str,
        token: str,
        lead: Callable[[], T],
        recheck: Callable[[], T | None],
    ) -> T:
        problem: dict[str, Any] | None = None
        try:
            # Another leader may have stored the page between our look and our lock.
            found = recheck()
            if found is not None:
                return found
            return lead()
        except UpstreamFailure as exc:
            problem = {**exc.body(), "headers": exc.headers}
            raise
        finally:
            self._publish(key, problem)
            with contextlib.suppress(StoreUnavailable):  # else the lock expires by itself
                self.store.call(lambda r: self._release(keys=[lock], args=[token], client=r))

    def _publish(self, key: str, problem: dict[str, Any] | None) -> None:
        message = json.dumps({"key": key, "problem": problem}, separators=(",", ":"))
        with contextlib.suppress(StoreUnavailable):  # else waiters wake when the lock expires
            self.store.call(lambda r: r.publish(self.channel, message))

    def _watch(self, key: str) -> _Waiter:
        waiter = _Waiter()
        with self._lock:
            self._waiters.setdefault(key, []).append(waiter)
        return waiter

    def _unwatch(self, key: str, waiter: _Waiter) -> None:
        with self._lock:
            waiters = self._waiters.get(key, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(key, None)

    def _wake(self, raw: bytes | str) -> None:
        try:
            message = json.loads(raw)
            key, problem = message["key"], message["problem"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed flight message")
            return
        with self._lock:
            waiters = list(self._waiters.get(key, ()))
        for waiter in waiters:
            waiter.problem = problem if isinstance(problem, dict) else None
            waiter.event.set()

    def wait_subscribed(self, timeout: float) -> bool:
        """Whether the listener is subscribed (for tests and start-up checks)."""
        return self._subscribed.wait(timeout)

    def _listen(self) -> None:
        """Keep one subscription to the flights channel; re-subscribe after Redis outages."""
        while not self._closed.is_set():
            pubsub = None
            try:
                if not self.store.available:
                    self._closed.wait(0.5)
                    continue
                pubsub = self.store.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(self.channel)
                self._subscribed.set()
                self.store.succeeded()
                while not self._closed.is_set():
                    message = pubsub.get_message(timeout=_LISTEN_SECONDS)
                    if message and message.get("type") == "message":
                        self._wake(message["data"])
            except Exception as exc:  # any Redis or socket failure: back off, then retry
                self._subscribed.clear()
                self.store.failed(exc)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # closing a broken connection
                        pubsub.close()

    def close(self) -> None:
        """Stop the listener."""
        self._closed.set()
        self._listener.join(timeout=_LISTEN_SECONDS + 1)
