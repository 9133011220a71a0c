"""Pages in Redis, behind a per-process tier: every replica serves the page any replica stored.

A page is one Redis string: its store time, its ETag and its body, expiring by itself after the
longest time it may still be served (freshness plus the stale window). Each process also keeps
the pages it has seen in its memory backend: a copy that is still fresh there is served without
asking Redis. That copy is the very page Redis holds (a page is only replaced once it is no longer
fresh), so the tier adds no staleness; it only saves the round trip. While Redis is unavailable
the memory tier alone serves, as without Redis.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

from ..cache import CachedPage, MemoryBackend, retention
from ..config import CacheSettings
from . import SharedStore, StoreUnavailable, digest


def pack(page: CachedPage) -> bytes:
    """stored_at (and the entry's own expiry, if any), ETag and body in one value."""
    times = repr(page.stored_at)
    if page.expires_at is not None:
        times += f" {page.expires_at!r}"
    return f"{times}\n{page.etag}\n".encode("ascii") + page.body


def unpack(value: bytes) -> CachedPage | None:
    """The page a value holds, or None when it is not one (another version's, or damaged)."""
    try:
        times, etag, body = value.split(b"\n", 2)
        stored_at, _, expires_at = times.partition(b" ")
        expires = float(expires_at) if expires_at else None
        return CachedPage(body, etag.decode("ascii"), float(stored_at), expires)
    except ValueError:
        return None


class SharedBackend:
    """The page cache's backend when Redis is configured: memory first, then Redis."""

    def __init__(
        self,
        store: SharedStore,
        local: MemoryBackend,
        settings: CacheSettings,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.local = local
        self.ttl = settings.ttl
        self.clock = clock
        self.retention_ms = max(1, math.ceil(retention(settings) * 1000))

    def is_fresh(self, page: CachedPage) -> bool:
        """Whether a page is within its freshness (PageCache.is_fresh's rule)."""
        return page.fresh_for(self.ttl, self.clock()) > 0

    def get(self, key: str) -> CachedPage | None:
        """The local copy while fresh, else the newer of Redis's and the local one."""
        local = self.local.get(key)
        if local is not None and self.is_fresh(local):
            return local
        try:
            value = self.store.call(lambda r: r.get(self.store.key("page", digest(key))))
        except StoreUnavailable:
            return local
        remote = unpack(value) if isinstance(value, bytes) else None
        if remote is None or (local is not None and local.stored_at >= remote.stored_at):
            return local
        self.local.set(key, remote)
        return remote

    def set(self, key: str, page: CachedPage) -> None:
        """Store in both tiers; Redis expires it after the retention time."""
        self.local.set(key, page)
        with contextlib.suppress(StoreUnavailable):  # the local tier still has it
            self.store.call(
                lambda r: r.set(
                    self.store.key("page", digest(key)), pack(page), px=self.retention_ms
                )
            )

    def __len__(self) -> int:
        return len(self.local)

    def size(self) -> tuple[int, int]:
        """This process's memory tier: pages and bytes."""
        return self.local.size()
