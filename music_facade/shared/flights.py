"""Single flight across the fleet: one upstream call for a cold page, waiters woken by pub/sub.

The process-local single flight (PageCache) already collapses a process's own concurrent misses
into one leader, and hands the page to them without Redis. That leader then looks for the page
in Redis and, unless it is fresh there, takes a Redis lock for it, in one script (load()); the one
that gets the lock loads the page, the others wait. When the page is made (or the load failed)
the leader stores it, releases the lock and publishes the key on one channel in one more script,
and every process's listener wakes its waiters at once. So a miss costs two round trips, and the
same look reads the guard generation, so the load's guard checks cost none
(music_facade/guards/shared.py). While Redis is unavailable every process loads on its own.
run() is the same single flight for any load, with the lock alone.

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

from ..cache import CachedPage
from ..errors import UpstreamFailure, failure_from_body
from . import (
    GUARD_GENERATION,
    GuardView,
    SharedStore,
    StoreUnavailable,
    digest,
    seen_generation,
)
from .pages import SharedBackend, pack, unpack

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
# A page's miss in one exchange: the page if it is still fresh (PageCache's rule: its own expiry,
# else stored_at + ttl, against the caller's clock), else the lock taken if free, else how long
# it has left, noting that a process waits (KEYS[4], for as long as the lock lives; if Redis
# is too full to note it, the waiter still looks again every FOLLOW_POLL); with the guard
# generation, so the load's guard checks need no round trip. A generation that is missing
# (never set, or evicted) is set to the caller's token, unique like every generation, so no
# kept guard state can match it by chance; if Redis refuses the write (full) there is none,
# and the guards read as they would without it.
_LOOK = """
local page = redis.call('get', KEYS[1])
local gen = redis.call('get', KEYS[3])
if not gen then
  local set = redis.pcall('set', KEYS[3], ARGV[3])
  if type(set) == 'table' and set.err then gen = false else gen = ARGV[3] end
end
if page then
  local stored, expires = string.match(page, '^([^ \\n]+) ?([^\\n]*)\\n')
  local now, left = tonumber(ARGV[1]), nil
  if expires and expires ~= '' then
    left = tonumber(expires)
    if left then left = left - now end
  elseif stored then
    left = tonumber(stored)
    if left then left = tonumber(ARGV[2]) - (now - left) end
  end
  if left and left > 0 then return {'fresh', gen, page} end
end
if redis.call('set', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then return {'lead', gen, page} end
local left = redis.call('pttl', KEYS[2])
redis.pcall('set', KEYS[4], '1', 'PX', left > 0 and left or ARGV[4])
return {'wait', gen, page, left}
"""
# A leader's end in one exchange: the page stored (when there is one), the lock released if
# still ours, the waiters woken if any process waits (KEYS[4], which every waiter's look sets:
# most misses have none, and a message wakes every process's listener); and the guard
# generation now. pcall: a full Redis (maxmemory,
# noeviction) refuses the SET, and the leader must still release and wake.
_STORE_AND_RELEASE = """
if ARGV[1] ~= '' then redis.pcall('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
if redis.call('get', KEYS[2]) == ARGV[3] then redis.call('del', KEYS[2]) end
if redis.call('del', KEYS[4]) == 1 then redis.call('publish', ARGV[4], ARGV[5]) end
return redis.call('get', KEYS[3])
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

    def __init__(
        self, store: SharedStore, lock_seconds: float, pages: SharedBackend | None = None
    ) -> None:
        """pages: the page cache's backend, for load() (run() needs none)."""
        self.store = store
        self.pages = pages
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
        self._look = store.redis.register_script(_LOOK)
        self._store_and_release = store.redis.register_script(_STORE_AND_RELEASE)
        self._generation = store.key(GUARD_GENERATION)
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
                    left = self.store.script(self._acquire, [lock], [token, self.lock_ms])
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

    def near(self, key: str) -> CachedPage | None:
        """This process's own copy of key's page (fresh or not), without asking Redis."""
        return self._pages().local.get(key)

    def load(
        self,
        key: str,
        make: Callable[[], CachedPage],
        seen: Callable[[CachedPage], None],
    ) -> tuple[CachedPage, str]:
        """key's page, made once across the fleet: ("hit", Redis held it fresh), ("stored",
        make() ran here and the page is stored), or ("collapsed", another process made it).

        One exchange finds the page or takes its lock, and one more stores the page, releases
        the lock and wakes the waiters. seen() is told of a page Redis held that is no longer
        fresh (a stale copy for stale-if-error). The leader's UpstreamFailure is raised in
        every waiter too.
        """
        pages = self._pages()
        name = digest(key)
        page_key, lock = self.store.key("page", name), self.store.key("lock", name)
        # Set by a process that waits on the load, while the lock lives.
        waiting = self.store.key("waiting", name)
        token = uuid.uuid4().hex
        give_up = self.store.clock() + self.lock_ms / 1000 + FOLLOW_POLL
        waited = False
        while self.store.clock() < give_up:
            waiter = self._watch(name)
            try:
                try:
                    answer = self._look_up([page_key, lock, self._generation, waiting], token)
                except StoreUnavailable:
                    return self._alone(key, make), "stored"
                status, generation = answer[0], answer[1]
                remote = unpack(answer[2]) if isinstance(answer[2], bytes) else None
                if remote is not None:
                    if status == b"fresh" and pages.is_fresh(remote):
                        pages.local.set(key, remote)
                        return remote, "collapsed" if waited else "hit"
                    seen(remote)
                if status == b"fresh":
                    # Fresh by the script's reading, not by ours (a value this process cannot
                    # read, or the very moment it goes stale): no lock was taken, so load on
                    # our own, which also replaces the value, rather than ask again.
                    return self._alone(key, make), "stored"
                if status == b"lead":
                    page = self._lead_page(key, [page_key, lock, waiting], token, generation, make)
                    return page, "stored"
                # Another process leads: wait for its word, at most until its lock runs out
                # and never longer than FOLLOW_POLL (the word may never come).
                waiter.event.wait(min(max(int(answer[3]), 50) / 1000, FOLLOW_POLL))
                waited = True
                if waiter.problem is not None:
                    raise failure_from_body(waiter.problem)
            finally:
                self._unwatch(name, waiter)
        log.warning("a single flight's lock outlived its longest lease; loading on our own")
        return self._alone(key, make), "stored"

    def _look_up(self, keys: list[str], token: str) -> list[Any]:
        """The page if fresh, else the lock taken or its time left; and the guard generation."""
        pages = self._pages()
        args: list[str | float | int] = [pages.clock(), pages.ttl, token, self.lock_ms]
        answer: list[Any] = self.store.script(self._look, keys, args)
        return answer

    def _pages(self) -> SharedBackend:
        if self.pages is None:
            raise TypeError("FleetFlights.load needs the page cache's backend")
        return self.pages

    def _alone(self, key: str, make: Callable[[], CachedPage]) -> CachedPage:
        """Make the page without the fleet (Redis is unavailable, or a lock outlived its
        lease) and store it where it can."""
        page = make()
        self._pages().set(key, page)
        return page

    def _lead_page(
        self,
        key: str,
        keys: list[str],
        token: str,
        generation: bytes | None,
        make: Callable[[], CachedPage],
    ) -> CachedPage:
        page: CachedPage | None = None
        problem: dict[str, Any] | None = None
        view = GuardView(generation.decode()) if generation else None
        current = seen_generation.set(view)
        try:
            page = make()
            return page
        except UpstreamFailure as exc:
            problem = {**exc.body(), "headers": exc.headers}
            raise
        finally:
            seen_generation.reset(current)
            self._end(key, keys, token, page, problem, view)

    def _end(
        self,
        key: str,
        keys: list[str],
        token: str,
        page: CachedPage | None,
        problem: dict[str, Any] | None,
        view: GuardView | None,
    ) -> None:
        """Store the page, release the lock, wake the waiters; then the guards' checks again
        if any account's guard state changed while the page was made."""
        pages = self._pages()
        if page is not None:
            pages.local.set(key, page)
        message = json.dumps({"key": digest(key), "problem": problem}, separators=(",", ":"))
        value = pack(page) if page is not None else b""
        args: list[bytes | str | int] = [
            value,
            pages.retention_ms,
            token,
            self.channel,
            message,
        ]
        page_key, lock, waiting = keys
        script_keys = [page_key, lock, self._generation, waiting]
        now: Any = None
        try:
            now = self.store.script(self._store_and_release, script_keys, args)
        except StoreUnavailable:
            # Redis is backed off (or failed just now): the page stays in this process's
            # tier; the listener retries the release and the wake-up.
            until = self.store.clock() + self.lock_ms / 1000
            self._pending.append(_Release(lock, token, message, until))
        if view is not None and view.again and now != view.generation.encode():
            for check in view.again:
                check()

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
        self.store.script(
            self._release, [release.lock], [release.token, self.channel, release.message]
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
