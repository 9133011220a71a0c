"""Bulkhead: a cap on one worker's concurrent upstream calls, with a bounded wait for a slot.

Modelled on resilience4j's SemaphoreBulkhead (maxConcurrentCalls + maxWaitDuration). A slow
upstream can then hold at most `max_concurrent_calls` calls (and pooled connections) per
worker; a miss that finds no slot within `max_wait` seconds fails at once with UpstreamBusy
(503, stale_ok: the cache answers with a stale page where one may be served) instead of
queueing without bound. Under the gevent worker the semaphore is gevent's (monkey-patched
`threading`), so waiting for a slot blocks only the waiting greenlet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .config import BulkheadSettings
from .errors import UpstreamBusy


class Bulkhead:
    """At most max_concurrent_calls holders at once; others wait up to max_wait seconds."""

    def __init__(
        self, settings: BulkheadSettings, observe: Callable[[int], None] | None = None
    ) -> None:
        """observe is told +1 / -1 as slots are taken and given back (music_facade.metrics)."""
        self.max_concurrent_calls = settings.max_concurrent_calls
        self.max_wait = settings.max_wait
        self._slots = threading.BoundedSemaphore(settings.max_concurrent_calls)
        self._lock = threading.Lock()
        self._in_use = 0
        self.observe = observe

    @property
    def in_use(self) -> int:
        """Slots taken now."""
        return self._in_use

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot for the block; raise UpstreamBusy when none frees up within max_wait."""
        if not self._slots.acquire(timeout=self.max_wait):
            raise UpstreamBusy(
                f"All {self.max_concurrent_calls} upstream call slots stayed busy for "
                f"{self.max_wait:g} s; retry shortly."
            )
        with self._lock:
            self._in_use += 1
        if self.observe is not None:
            self.observe(1)
        try:
            yield
        finally:
            with self._lock:
                self._in_use -= 1
            if self.observe is not None:
                self.observe(-1)
            self._slots.release()
