"""The change tail: one read of the change log per wake-up for all the /events streams of a
process, instead of one read per stream.

While at least one stream is subscribed, one daemon thread (a greenlet under gunicorn's gevent
worker) waits on `Wakeups`; when the mirror moved it reads the log once from its own position,
for the union of its subscribers' aliases, renders each change once, and hands the page to every
subscription as a `Batch`: what the log held after `start` up to `end` for those aliases.

A stream keeps its own position and takes a batch only when it continues that position without
a gap (`start <= position`) and covers its aliases; otherwise, and whenever its queue overflowed
(it was blocked writing to a slow caller), it reads the log itself from its own position, as a
replay does. So the tail makes the common case cheap, and the log stays the one source of truth:
nothing the stream has not passed is skipped, and nothing it passed is sent again.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import Problem
from .wakeups import Wakeups

if TYPE_CHECKING:
    from .mirror.store import Change, Store

log = logging.getLogger(__name__)

PAGE = 500  # changes per read of the log
QUEUE_LIMIT = 2000  # changes a stream may have waiting before it falls back to its own reads
WAIT_SLICE = 0.5  # seconds: how often an idle tail looks whether it still has subscribers


@dataclass(frozen=True)
class Batch:
    """Every change of `aliases` with start < seq, up to `end`, each with its rendered event."""

    start: int
    end: int
    aliases: frozenset[str]
    changes: tuple[tuple[Change, bytes], ...]


class Subscription:
    """One stream's queue of batches from the tail, bounded by `limit` changes."""

    def __init__(self, aliases: Iterable[str], limit: int) -> None:
        self.aliases = frozenset(aliases)
        self.ready = threading.Event()  # set when a batch arrived or the stream fell behind
        self._limit = limit
        self._lock = threading.Lock()
        self._batches: deque[Batch] = deque()
        self._queued = 0
        self._behind = False

    def offer(self, batch: Batch) -> None:
        """Queue a batch, or past the bound drop the queue: the stream reads the log itself."""
        with self._lock:
            if not self._behind:
                if self._queued + len(batch.changes) > self._limit:
                    self.fall_behind_locked()
                else:
                    self._batches.append(batch)
                    self._queued += len(batch.changes)
        self.ready.set()

    def fall_behind(self) -> None:
        """Have the stream read the log itself before it takes another batch."""
        with self._lock:
            self.fall_behind_locked()
        self.ready.set()

    def fall_behind_locked(self) -> None:
        self._behind = True
        self._batches.clear()
        self._queued = 0

    def take(self) -> tuple[list[Batch], bool]:
        """The queued batches, and whether the stream must read the log itself first (then
        the batches are none: those queued before it caught up may have gaps)."""
        with self._lock:
            self.ready.clear()
            batches, behind = list(self._batches), self._behind
            self._batches.clear()
            self._queued = 0
            self._behind = False
        return batches, behind


class ChangeTail:
    """The process's reader of new changes and its subscribed streams."""

    def __init__(
        self,
        store: Store,
        wakeups: Wakeups,
        render: Callable[[Change], bytes],
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self.store = store
        self.wakeups = wakeups
        self.queue_limit = queue_limit
        self._render = render
        self._lock = threading.Lock()
        self._subscriptions: set[Subscription] = set()
        self._position: int | None = None  # None until the running tail read the version
        self._running = False
        self._failing = False
        self.reads = 0  # reads of the log this tail made, for tests and the bench

    def subscribe(self, aliases: Iterable[str], position: int) -> Subscription:
        """A new subscription for a stream at `position`; starts the tail if idle.

        Batches read from here on are offered to it. If the tail's position is already past the
        stream's, or not known yet, the stream is told to read the log itself once: a change the
        tail read just before would otherwise wait for the next one.
        """
        subscription = Subscription(aliases, self.queue_limit)
        with self._lock:
            self._subscriptions.add(subscription)
            if self._position is None or self._position > position:
                subscription.fall_behind()
            start = not self._running
            self._running = True
        if start:
            threading.Thread(target=self._run, name="events-tail", daemon=True).start()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget a subscription (its stream ended); the tail stops after the last one."""
        with self._lock:
            self._subscriptions.discard(subscription)

    def subscribed(self) -> int:
        """How many streams are subscribed."""
        with self._lock:
            return len(self._subscriptions)

    def _run(self) -> None:
        waiter = self.wakeups.register()  # begins set: the first turn reads the version
        retry = False
        try:
            while True:
                with self._lock:
                    if not self._subscriptions:
                        self._running = False
                        self._position = None
                        return
                # A failed read is tried again at the next slice: the version may not move.
                if waiter.wait(WAIT_SLICE) or retry:
                    waiter.clear()  # a write after this read sets it again
                    retry = not self._read()
        finally:
            self.wakeups.unregister(waiter)

    def _read(self) -> bool:
        """Read the log up to its newest change and offer it to every subscription; whether
        that worked."""
        with self._lock:
            position = self._position
            aliases = frozenset().union(*(s.aliases for s in self._subscriptions))
        try:
            if position is None:
                # From now on. A stream subscribed before this read may be behind it: each
                # reads the log itself once, after this, so no change falls in between.
                version = self.store.version()
                with self._lock:
                    self._position = version
                    subscriptions = list(self._subscriptions)
                for subscription in subscriptions:
                    subscription.fall_behind()
                return True
            more = True
            while more:
                page = self.store.changes(position, sorted(aliases), PAGE)
                self.reads += 1
                rendered = tuple((change, self._render(change)) for change in page.changes)
                batch = Batch(position, page.next, aliases, rendered)
                with self._lock:
                    self._position = page.next
                    subscriptions = list(self._subscriptions)
                for subscription in subscriptions:
                    subscription.offer(batch)
                position, more = page.next, page.has_more
        except Problem as exc:
            # The log was pruned past the tail: start again from now; every stream reads from
            # its own position and learns the same (410 when it reconnects).
            log.warning("events tail starts again: %s", exc.code)
            with self._lock:
                self._position = None
            return False
        except Exception as exc:  # the database is down: streams keep their heartbeats
            if not self._failing:
                log.warning("events: reading the change log failed: %s", exc)
            self._failing = True
            return False
        self._failing = False
        return True
