"""Single flight across the fleet: one upstream call for a cold page, waiters woken by pub/sub.

The process-local single flight (PageCache) already collapses a process's own concurrent misses
into one leader. That leader then takes a Redis lock for the page; the one that gets it loads and
stores the page, the others wait. When the page is stored (or the load failed) the leader
releases the lock and publishes the key on one channel in one script, and every process's
listener wakes its waiters at once. While Redis is unavailable every process loads on its own.

A wake-up can be lost: the leader's process may be in its Redis backoff when it finishes (a blip
hit one of its calls), or a subscription may be down. So a leader whose release was skipped
keeps it in a short, bounded list that the listener retries once the backoff is over, and a
waiter never trusts the wake-up for longer than FOLLOW_POLL: it then looks for the page and the
lock itself, takes over once the lock is gone, and after the longest a lock can be held (its
TTL, bounded by the exchange deadline) loads on its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections import deque
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
# Delete the lock only if it is still ours (it may have expired and been taken over), then wake
# the waiters: one round trip, and no waiter can wake to find the lock still there. Neither
# command is refused when Redis is full (maxmemory, noeviction), so a leader can always finish.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
return redis.call('publish', ARGV[2], ARGV[3])
"""
FOLLOW_POLL = 0.5
"""Seconds a waiter waits for the wake-up before it looks at the page and the lock itself."""
_TICK = 0.25  # one get_message wait: how often skipped releases are retried, close() noticed
_MAX_PENDING = 256  # skipped releases kept for a retry; past that their locks just expire


@dataclass
class _Waiter:
    event: threading.Event = field(default_factory=threading.Event)
    problem: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Release:
    """A leader's release and wake-up that Redis's backoff skipped, to retry until `until`."""

    lock: str
    token: str
    message: str
    until: float  # the store's clock: the lock has expired by itself by then


class FleetFlights:
    """Run a load once across every process sharing the store, per key."""

    def __init__(self, store: SharedStore, lock_seconds: float) -> None:
        self.store = store
        # The longest a leader may hold a page's lock: the caller bounds it by the exchange
        # deadline, so a leader that died (or whose release never got through) frees it then.
        self.lock_ms = max(1000, int(lock_seconds * 1000))
        self.channel = store.key("flights")
        self._waiters: dict[str, list[_Waiter]] = {}
        self._lock = threading.Lock()
        self._pending: deque[_Release] = deque(maxlen=_MAX_PENDING)
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
        # A lock lives lock_ms at most, so only a chain of leaders could keep a waiter here
        # longer: past this it loads on its own.
        give_up = self.store.clock() + self.lock_ms / 1000 + FOLLOW_POLL
        while self.store.clock() < give_up:
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
                # Another process leads: wait for its word, at most until its lock runs out
                # and never longer than FOLLOW_POLL (the word may never come).
                waiter.event.wait(min(max(int(left), 50) / 1000, FOLLOW_POLL))
                if waiter.problem is not None:
                    raise failure_from_body(waiter.problem)
                found = recheck()
                if found is not None:
                    return found
                # No page and no failure: the leader is still at it, or its lock is gone (it
                # died, or finished without storing the page). Look again, or take over.
            finally:
                self._unwatch(key, waiter)
        log.warning("a single flight's lock outlived its longest lease; loading on our own")
        return lead()

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
            message = json.dumps({"key": key, "problem": problem}, separators=(",", ":"))
            release = _Release(lock, token, message, self.store.clock() + self.lock_ms / 1000)
            try:
                self._finish(release)
            except StoreUnavailable:
                # Redis is backed off (or failed just now): the listener retries it.
                self._pending.append(release)

    def _finish(self, release: _Release) -> None:
        """Release the lock if it is still ours and wake every waiter, in one script."""
        self.store.call(
            lambda r: self._release(
                keys=[release.lock],
                args=[release.token, self.channel, release.message],
                client=r,
            )
        )

    def _retry_pending(self) -> None:
        """Send the releases the backoff skipped, oldest first, while Redis answers; those
        whose lock has expired by itself are dropped (their waiters have looked by then)."""
        for _ in range(len(self._pending)):  # those pending now: a bounded pass
            if not self.store.available:
                break
            try:
                release = self._pending.popleft()
            except IndexError:
                break
            if self.store.clock() >= release.until:
                continue
            try:
                self._finish(release)
            except StoreUnavailable:
                self._pending.appendleft(release)
                break

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
        """Keep one subscription to the flights channel; re-subscribe after Redis outages; retry
        the releases a backoff skipped."""
        while not self._closed.is_set():
            pubsub = None
            try:
                if not self.store.available:
                    self._closed.wait(_TICK)
                    continue
                pubsub = self.store.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(self.channel)
                self._subscribed.set()
                self.store.succeeded()
                while not self._closed.is_set():
                    if self._pending:
                        self._retry_pending()
                    message = pubsub.get_message(timeout=_TICK)
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
        self._listener.join(timeout=_TICK + 1)
