"""Backends: where a process keeps its pages, flights, upstream guards, rate-limit counters,
event-stream tickets and event-stream leases.

Chosen once, before any component is built: this process's memory, or (with [redis]) Redis that
every replica shares, each Redis backend keeping a memory one as its fallback for while Redis is
unavailable. The components take them by constructor and never learn which one runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import logs
from .cache import CacheBackend, FleetRunner, MemoryBackend
from .config import Settings
from .guards.memory import MemoryGuardStore
from .guards.state import GuardStore
from .limits import LimitStorage, SweptMemoryStorage
from .metrics import Metrics
from .stream_leases import MemoryStreamLeases, StreamLeaseStore
from .tickets import MemoryTicketStore, TicketStore

if TYPE_CHECKING:
    from .shared import SharedStore


@dataclass(frozen=True)
class Backends:
    """One process's choice of backends; store is the Redis connection when they share one."""

    pages: CacheBackend
    guard_store: GuardStore
    limit_storage: LimitStorage
    tickets: TicketStore
    stream_leases: StreamLeaseStore
    fleet: FleetRunner | None = None
    store: SharedStore | None = None

    @classmethod
    def choose(cls, settings: Settings, clock: Callable[[], float], measures: Metrics) -> Backends:
        """Redis backends when [redis] is configured, else this process's memory."""
        pages = MemoryBackend.for_cache(settings.cache, clock)
        if settings.redis is None:
            return cls(
                pages,
                MemoryGuardStore(clock),
                SweptMemoryStorage(),
                MemoryTicketStore(clock),
                MemoryStreamLeases(clock),
            )
        # Imported only when used: a process without [redis] never loads the Redis client.
        from .guards.shared import SharedGuardStore
        from .shared import SharedStore
        from .shared.flights import FleetFlights
        from .shared.limit_leases import LeasedLimitStorage
        from .shared.limits import SharedLimitStorage
        from .shared.pages import SharedBackend
        from .shared.stream_leases import SharedStreamLeases
        from .shared.tickets import SharedTicketStore

        logs.redact(settings.redis.secrets())
        measures.track_redis()
        store = SharedStore(
            settings.redis, on_error=measures.redis_error, on_status=measures.redis_status
        )
        sync_interval = settings.limits.sync_interval
        limit_storage: LimitStorage = (
            LeasedLimitStorage(store, SweptMemoryStorage(), sync_interval)
            if sync_interval > 0
            else SharedLimitStorage(store, SweptMemoryStorage())
        )
        shared_pages = SharedBackend(store, pages, settings.cache, clock)
        return cls(
            pages=shared_pages,
            guard_store=SharedGuardStore(store, clock),
            limit_storage=limit_storage,
            tickets=SharedTicketStore(store, MemoryTicketStore(clock)),
            stream_leases=SharedStreamLeases(store, MemoryStreamLeases(clock)),
            fleet=FleetFlights(store, settings.upstream.exchange_deadline + 1, shared_pages),
            store=store,
        )
