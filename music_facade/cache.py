"""PageCache: finished response bodies by key, with TTL, LRU, single flight and stale-if-error."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from cachetools import TTLCache

from .config import CacheSettings
from .errors import UpstreamFailure

log = logging.getLogger(__name__)

NAME = "music-facade"


# What a cached body is: the first part of its key, so no two kinds share an entry.
LIST, TRACK, LINK = "list", "track", "link"


def cache_key(kind: str, *parts: str) -> str:
    """The key of a cached body: its kind (one of the service's own constants), then each part
    length-prefixed, so no part's value (an upstream user id, a cursor, an item id) can make
    one key read as another, whichever characters it holds."""
    return kind + "".join(f"\x1f{len(part)}:{part}" for part in parts)


def list_key(user_id: str, music_type: str, cursor: str | None) -> str:
    """A list page's key: the account, the type and the cursor ('' for the first page)."""
    return cache_key(LIST, user_id, music_type, cursor or "")


def track_key(user_id: str, item: str) -> str:
    """One track's key."""
    return cache_key(TRACK, user_id, item)


def link_key(user_id: str, item: str, file_format: str) -> str:
    """A track's download link's key, per format."""
    return cache_key(LINK, user_id, item, file_format)


@dataclass(frozen=True)
class CachedPage:
    """A finished 200 body, its strong ETag (unquoted), and when it was stored (clock seconds).

    expires_at, when set, is the entry's own end of freshness (clock seconds) in place of the
    cache's ttl, and such an entry is never served stale: a temporary download link is
    worthless past its expiry.
    """

    body: bytes
    etag: str
    stored_at: float
    expires_at: float | None = None

    @classmethod
    def make(cls, body: bytes, now: float, expires_at: float | None = None) -> CachedPage:
        """Wrap a body, deriving its ETag from its bytes."""
        return cls(body, hashlib.sha256(body).hexdigest()[:32], now, expires_at)

    def fresh_for(self, ttl: float, now: float) -> float:
        """Seconds of freshness left (<= 0: none), by its own expiry or else by ttl."""
        if self.expires_at is not None:
            return self.expires_at - now
        return ttl - (now - self.stored_at)


@dataclass(frozen=True)
class Lookup:
    """What a request gets: the page, its RFC 9211 Cache-Status and its freshness left."""

    page: CachedPage
    cache_status: str
    max_age: int


class CacheBackend(Protocol):
    """Where pages live: this process's memory, or Redis for replicas (music_facade/shared)."""

    def get(self, key: str) -> CachedPage | None:
        """The stored page, or None."""

    def set(self, key: str, page: CachedPage) -> None:
        """Store a page, replacing any older one."""

    def size(self) -> tuple[int, int]:
        """This process's pages in memory and their bytes."""


def retention(settings: CacheSettings) -> float:
    """How long a backend keeps a page: a little past its last stale-servable moment (what may
    be served is PageCache's rule, not the backend's)."""
    return settings.ttl + settings.stale_if_error + 1


class MemoryBackend:
    """A thread-safe LRU that forgets a page once it is too old even to be served stale.

    It counts its bodies' bytes as pages come and go (cachetools' getsizeof accounting), so
    size() is O(1): the metrics read it after every stored page.
    """

    def __init__(self, max_entries: int, retention: float, clock: Callable[[], float]) -> None:
        # Bounded by entries here, not by cachetools' maxsize, which then counts bytes.
        self._pages: TTLCache[str, CachedPage] = TTLCache(
            math.inf, retention, timer=clock, getsizeof=_body_size
        )
        self._max_entries = max_entries
        # cachetools caches are not thread-safe: every access, reads included, takes the lock.
        self._lock = threading.Lock()

    @classmethod
    def for_cache(cls, settings: CacheSettings, clock: Callable[[], float]) -> MemoryBackend:
        """The page cache's memory backend: max_entries pages, each kept for retention()."""
        return cls(settings.max_entries, retention(settings), clock)

    def get(self, key: str) -> CachedPage | None:
        """The stored page, or None; a read refreshes its LRU position."""
        with self._lock:
            return self._pages.get(key)

    def set(self, key: str, page: CachedPage) -> None:
        """Store a page, evicting the least recently used one when full."""
        with self._lock:
            pages = self._pages
            if key not in pages:
                while len(pages) >= self._max_entries:
                    pages.popitem()
            pages[key] = page

    def __len__(self) -> int:
        with self._lock:
            return len(self._pages)

    def size(self) -> tuple[int, int]:
        """Pages kept and their bodies' bytes (expired ones dropped first)."""
        with self._lock:
            return len(self._pages), int(self._pages.currsize)


def _body_size(page: CachedPage) -> int:
    return len(page.body)


class FleetRunner(Protocol):
    """The pages and single flight of every process sharing a store
    (music_facade/shared/flights.py)."""

    def near(self, key: str) -> CachedPage | None:
        """This process's own copy of key's page (fresh or not), without asking the store."""

    def load(
        self, key: str, make: Callable[[], CachedPage], seen: Callable[[CachedPage], None]
    ) -> tuple[CachedPage, str]:
        """key's page and how it came: "hit" (the store held it fresh), "stored" (make() ran
        here), "collapsed" (another process made it). seen() is told of a page the store
        held that is no longer fresh; make()'s UpstreamFailure is raised in every waiter."""


class _Flight:
    """One load in progress: how many callers wait on it, and (once one does) its outcome.

    The Future is made by the first follower: most loads have none, and a Future (a condition
    and its lock) is a measurable part of a miss.
    """

    def __init__(self) -> None:
        self.result: Future[Lookup] | None = None
        self.followers = 0


class PageCache:
    """get() answers from a fresh copy, else makes one load per key however many callers wait."""

    def __init__(
        self,
        settings: CacheSettings,
        backend: CacheBackend | None = None,
        clock: Callable[[], float] = time.time,
        fleet: FleetRunner | None = None,
    ) -> None:
        """backend: where pages live (this process's memory by default); fleet: the single
        flight across replicas sharing a store (music_facade/shared), None for one process."""
        self.ttl = settings.ttl
        self.stale_if_error = settings.stale_if_error
        self.clock = clock
        # `is not None`: an empty backend has len() 0 and would read as false.
        self.backend: CacheBackend = (
            backend if backend is not None else MemoryBackend.for_cache(settings, clock)
        )
        self._fleet = fleet
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()

    @property
    def fleet(self) -> FleetRunner | None:
        """The single flight across replicas, None in a process of its own."""
        return self._fleet

    @property
    def enabled(self) -> bool:
        """ttl = 0 turns the cache off."""
        return self.ttl > 0

    def get(
        self,
        key: str,
        load: Callable[[], bytes],
        lifetime: Callable[[bytes], float] | None = None,
    ) -> Lookup:
        """The page for key: fresh from the cache, or loaded once by one of the waiting callers.

        lifetime, when given, says from a loaded body how many seconds it stays fresh (instead
        of the cache's ttl); such an entry is never served past that, not even stale.
        """
        if not self.enabled:
            return Lookup(CachedPage.make(load(), self.clock()), f"{NAME}; fwd=bypass", 0)
        # With a fleet, only this process's copy before the flight: the store is asked once, by
        # the flight's leader, in the same exchange that takes the fleet's lock.
        fleet = self._fleet
        fresh = self._fresh(self.backend.get(key) if fleet is None else fleet.near(key))
        if fresh is not None:
            return fresh
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = _Flight()
                waited = None
            else:
                flight.followers += 1
                if flight.result is None:
                    flight.result = Future()
                waited = flight.result
        if waited is not None:
            outcome = waited.result()  # the leader's page, or its exception raised here
            status = outcome.cache_status
            if not status.endswith("; collapsed"):  # the leader itself may have waited
                status += "; collapsed"
            return Lookup(outcome.page, status, outcome.max_age)
        return self._lead(key, flight, load, lifetime)

    def _lead(
        self,
        key: str,
        flight: _Flight,
        load: Callable[[], bytes],
        lifetime: Callable[[bytes], float] | None,
    ) -> Lookup:
        """Load key's page for every caller that joins the flight meanwhile."""
        try:
            # Another leader may have stored the page between our look and taking the flight.
            fleet = self._fleet
            stored = self.backend.get(key) if fleet is None else fleet.near(key)
            outcome = self._fresh(stored) or self._refresh(key, stored, load, lifetime)
        except BaseException as exc:
            waiting = self._land(key, flight)
            if waiting is not None:
                waiting.set_exception(exc)
            raise
        waiting = self._land(key, flight)
        if waiting is not None:
            waiting.set_result(outcome)
        return outcome

    def _land(self, key: str, flight: _Flight) -> Future[Lookup] | None:
        """End the flight (later callers start their own); the Future its followers wait on."""
        with self._lock:
            del self._flights[key]
            return flight.result

    def followers(self, key: str) -> int:
        """How many callers are waiting on the load in flight for key."""
        with self._lock:
            flight = self._flights.get(key)
            return flight.followers if flight else 0

    def _fresh(self, page: CachedPage | None) -> Lookup | None:
        if page is None:
            return None
        left = page.fresh_for(self.ttl, self.clock())
        if left <= 0:
            return None
        return Lookup(page, f"{NAME}; hit; ttl={math.floor(left)}", math.floor(left))

    def is_fresh(self, page: CachedPage) -> bool:
        """Whether a page is still within its freshness."""
        return page.fresh_for(self.ttl, self.clock()) > 0

    def _refresh(
        self,
        key: str,
        old: CachedPage | None,
        load: Callable[[], bytes],
        lifetime: Callable[[bytes], float] | None,
    ) -> Lookup:
        def make() -> CachedPage:
            body = load()
            now = self.clock()
            return CachedPage.make(body, now, None if lifetime is None else now + lifetime(body))

        def seen(page: CachedPage) -> None:
            nonlocal old
            if old is None or page.stored_at > old.stored_at:
                old = page

        try:
            if self._fleet is None:
                page, came = make(), "stored"
                self.backend.set(key, page)
            else:
                page, came = self._fleet.load(key, make, seen)
        except UpstreamFailure as exc:
            age = self.clock() - old.stored_at if old else math.inf
            if old is not None and old.expires_at is not None:
                raise  # an entry with its own expiry (a link) is worthless past it
            if not exc.stale_ok or age > self.ttl + self.stale_if_error:
                raise
            assert old is not None
            log.warning("serving a stale page after upstream failure: %s", exc.code)
            status = f"{NAME}; fwd=stale; ttl={math.floor(self.ttl - age)}; detail=stale-if-error"
            return Lookup(old, status, 0)
        if came == "hit":
            found = self._fresh(page)
            if found is not None:
                return found
        fwd = "stale" if old else "miss"
        status = f"{NAME}; fwd={fwd}; stored" + ("; collapsed" if came == "collapsed" else "")
        left = page.fresh_for(self.ttl, self.clock())
        return Lookup(page, status, max(0, math.floor(left)))
