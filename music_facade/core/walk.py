"""A bounded walk over an account's upstream pages, one page at a time (GET /library).

The upstream decides how many pages there are and where each cursor leads, so nothing about
the walk may be left to it: it reads at most `max_pages` pages within `max_seconds`, ends at the
first cursor it has already followed (a cycle would otherwise return the same pages forever,
from the cache, without any I/O), lets the worker's other requests run between pages, and stops
as soon as the caller has hung up. Each bound that stops a walk is a problem of its own, which
the stream's summary reports.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import Problem


class CursorCycle(Problem, code="upstream_cursor_cycle"):
    """The upstream's next cursor is one this walk already followed."""


class PageLimitReached(Problem, code="page_limit_reached"):
    """The walk read `max_pages` pages and the upstream still had more."""


class TimeLimitReached(Problem, code="time_limit_reached"):
    """The stream took `max_seconds` and was not done."""


class CallerGone(Exception):
    """The caller hung up: nothing more is read or written for it."""


class Line(Protocol):
    """The caller's end of the connection (music_facade.streaming.Connection), as a walk sees it."""

    def gone(self) -> bool:
        """Whether the caller hung up."""


Fetch = Callable[[str | None], dict[str, Any]]
"""Reads one page (None: the first) as the cache renders it: items, next_cursor, has_more."""


class Walk:
    """Where a walk stands: the next cursor, the cursors followed, pages read, its deadline."""

    def __init__(
        self,
        fetch: Fetch,
        max_pages: int,
        max_seconds: float,
        connection: Line | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._max_pages = max_pages
        self._max_seconds = max_seconds
        self._connection = connection
        self._clock = clock
        self._deadline = clock() + max_seconds
        # Digests, not the cursors: 16 bytes a page however long the upstream's cursors are.
        self._seen: set[bytes] = set()
        self._next: str | None = None
        self._more = True
        self.pages = 0

    def first(self) -> list[dict[str, Any]]:
        """The first page's tracks (its failure is the request's own problem)."""
        return self._read(None)

    def next(self) -> list[dict[str, Any]] | None:
        """The next page's tracks; None after the last. Raises the Problem of a bound that
        stops the walk, or CallerGone."""
        if not self._more:
            return None
        cursor = self._next
        assert cursor is not None  # has_more pages always come with one (tracks.reshape_page)
        if _digest(cursor) in self._seen:
            raise CursorCycle(
                f"After {self.pages} pages the upstream's next cursor leads back to a page "
                "already read; the library cannot be read to its end."
            )
        if self.pages >= self._max_pages:
            raise PageLimitReached(f"Stopped after {self._max_pages} pages.")
        self.check_time()
        # Cached pages involve no I/O: without this, a walk over them would hold the worker
        # (gevent switches only on I/O) until it ended. time.sleep is gevent's once patched.
        time.sleep(0)
        if self._connection is not None and self._connection.gone():
            raise CallerGone
        return self._read(cursor)

    def check_time(self) -> None:
        """Raise TimeLimitReached once the walk is past its deadline."""
        if self._clock() >= self._deadline:
            raise TimeLimitReached(f"Stopped after {self._max_seconds:g} seconds.")

    def _read(self, cursor: str | None) -> list[dict[str, Any]]:
        page = self._fetch(cursor)
        self.pages += 1
        if cursor is not None:
            self._seen.add(_digest(cursor))
        self._more = bool(page["has_more"])
        self._next = page["next_cursor"]
        items: list[dict[str, Any]] = page["items"]
        return items


def _digest(cursor: str) -> bytes:
    return hashlib.blake2b(cursor.encode(), digest_size=16).digest()
