"""Wake-ups: one poller per process tells its waiters (the change tail of the /events streams,
music_facade.change_tail) that the mirror moved.

The change log in the database is the only source of truth: a change the syncer of another
replica wrote reaches this process through it, so the poller reads the mirror's version (the
newest change seq, one indexed read) every `interval` seconds while at least one waiter waits,
and sets each waiter's Event when it moved. It runs as a daemon thread (a greenlet under
gunicorn's gevent worker, whose monkey patching also makes the Events and the lock
cooperative), started by the first waiter and ending once none is left, so a process with no
open stream reads nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25


class Wakeups:
    """The waiting streams of one process and the poller that wakes them."""

    def __init__(
        self,
        version: Callable[[], int],
        interval: float = POLL_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._version = version
        self._interval = interval
        self._sleep = sleep
        self._lock = threading.Lock()
        self._waiters: set[threading.Event] = set()
        self._running = False

    def register(self) -> threading.Event:
        """A new waiter, set whenever the mirror's version moves; starts the poller if idle.

        It begins set: its stream reads the log once more after registering, so a write the
        poller saw just before cannot be missed.
        """
        waiter = threading.Event()
        waiter.set()
        with self._lock:
            self._waiters.add(waiter)
            start = not self._running
            self._running = True
        if start:
            threading.Thread(target=self._poll, name="events-wakeups", daemon=True).start()
        return waiter

    def unregister(self, waiter: threading.Event) -> None:
        """Forget a waiter (its stream ended); the poller stops after the last one."""
        with self._lock:
            self._waiters.discard(waiter)

    def waiting(self) -> int:
        """How many waiters there are."""
        with self._lock:
            return len(self._waiters)

    def _poll(self) -> None:
        seen: int | None = None
        failing = False
        while True:
            with self._lock:
                if not self._waiters:
                    self._running = False
                    return
            try:
                version = self._version()
            except Exception as exc:  # the database is down: streams keep their heartbeats
                if not failing:
                    log.warning("events: reading the mirror's version failed: %s", exc)
                failing = True
            else:
                failing = False
                # The first read wakes everyone too: a write may have landed between a
                # stream's own read and this poller's start.
                if version != seen:
                    seen = version
                    with self._lock:
                        waiters = list(self._waiters)
                    for waiter in waiters:
                        waiter.set()
            self._sleep(self._interval)
