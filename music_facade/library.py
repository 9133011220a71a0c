"""GET /library: every track of an account and type in one streamed answer.

The pages are read one at a time through `Music.page` (the same cache, single flight, bulkhead,
cooldowns and breaker as GET /music) by a bounded `Walk` (pages, repeated cursors, time, a
caller that hung up), and each is rendered and written out before the next is read, so a
worker holds one page's bytes, never the library. A worker runs at most `max_streams` of them
(`StreamSlots`), each write bounded by `send_timeout`. Errors before the first byte are ordinary
problem answers; after it the status cannot change, so the stream always ends with a summary:
one `{"summary": {...}}` line in NDJSON, a `#summary` row in CSV.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from werkzeug.http import parse_accept_header

from . import jsoncodec
from .cache import Lookup
from .config import LibrarySettings
from .core.music import Music
from .core.problems import INTERNAL_DETAIL
from .core.query import LIBRARY_RULES, MusicQuery, parse_params, unknown_message
from .core.tracks import TrackSchema
from .core.walk import CallerGone, Walk
from .errors import InvalidQuery, Problem
from .limits import Limits, RateLimited
from .metrics import STORED, Metrics, client_label
from .mirror import parse_tracks_query
from .scope import Answer, Scope
from .streaming import Connection, Stream, StreamSlots

if TYPE_CHECKING:
    from .mirror.store import Store

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
CSV = "text/csv"
COLUMNS = tuple(field.data_key or name for name, field in TrackSchema().dump_fields.items())
SUMMARY_MARK = "#summary"
# Rendered lines are written in chunks of about this much: one write per chunk instead of
# per track, and no more than the worker's socket send buffer takes at once.
CHUNK_BYTES = 16 * 1024
# A spreadsheet reads a cell starting with one of these as a formula (OWASP's CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class LimitReached(Problem, code="limit_reached"):
    """Only ever inside a summary: the stream stopped at the request's `limit`."""


class MirrorSyncing(Problem, code="mirror_syncing"):
    """Only ever inside a summary: the mirror has not read the account's whole library yet."""


_SYNCING = (
    "The mirror is still reading this account's library for the first time; "
    "what it holds so far was streamed."
)
MIRROR_PAGE = 100  # tracks per read of the mirror


def fetched(lookup: Lookup) -> bool:
    """Whether this request's own load called the upstream (not a hit, not collapsed)."""
    status = lookup.cache_status
    return ("stored" in status or "bypass" in status) and "collapsed" not in status


class Library:
    """Answers GET /library for the handler."""

    def __init__(
        self,
        music: Music,
        limits: Limits,
        settings: LibrarySettings,
        metrics: Metrics,
        mirror: Store | None = None,
    ) -> None:
        self.music = music
        self.mirror = mirror
        self.limits = limits
        self.settings = settings
        self.max_items = settings.max_items
        self.metrics = metrics
        self.slots = StreamSlots(settings.max_streams)

    def answer(self, raw: bytes, scope: Scope, item: str) -> Answer:
        """Validate, take a stream slot, read the first page (its failure is a normal
        problem), then stream."""
        values = parse_params(raw, LIBRARY_RULES, unknown_message("/library", LIBRARY_RULES))
        limit = int(values.get("limit", self.max_items))
        if limit > self.max_items:
            raise InvalidQuery(
                "Invalid query parameter(s): limit.",
                errors={"limit": [f"must be at most {self.max_items}"]},
            )
        alias = scope.account(values.get("user"))
        type_ = values["type"]
        connection = Connection.of(scope.environ)
        settings = self.settings
        slot = self.slots.take()
        mirror = self.mirror
        incomplete: Callable[[], Problem | None] = lambda: None  # noqa: E731
        if mirror is not None:
            # Read before the walk: a backfill that finishes meanwhile was not whole when it began.
            backfilled = mirror.state(alias, type_).backfilled

            def incomplete() -> Problem | None:
                return None if backfilled else MirrorSyncing(_SYNCING)

        try:
            walk = Walk(
                lambda cursor: (
                    self._page(scope, alias, type_, cursor)
                    if mirror is None
                    else _mirror_page(mirror, alias, type_, cursor)
                ),
                settings.max_pages,
                settings.max_seconds,
                connection,
            )
            first = walk.first()
        except BaseException:
            slot.release()
            raise
        render: Render = CsvRender() if _wants_csv(scope.environ.get("HTTP_ACCEPT")) else Ndjson()
        chunks = _stream(walk, first, limit, render, scope, connection, incomplete)
        headers = [
            ("Content-Type", render.media_type),
            ("Cache-Control", "no-store"),
            ("Vary", "Accept"),
        ]
        return 200, Stream(chunks, slot, connection, settings.send_timeout), headers, None

    def _page(self, scope: Scope, alias: str, type_: str, cursor: str | None) -> dict[str, Any]:
        """One page through the cache, counted against the caller when it was fetched."""
        lookup = self.music.page(alias, MusicQuery(None, type_, cursor), scope.request_id)
        # Every page's cache outcome counts as /music's do (the request itself has none).
        if self.metrics.page(lookup.cache_status) in STORED:
            self.metrics.cache_size(*self.music.cache.backend.size())
        if fetched(lookup):
            try:
                # In open mode too: every upstream call made for a caller counts somewhere.
                addr = scope.environ.get("REMOTE_ADDR")
                self.limits.charge(scope.who, addr, self.settings.pages_per_address)
            except RateLimited:
                who = scope.who.client
                self.metrics.limited(client_label(who.name if who else None))
                raise
        page: dict[str, Any] = jsoncodec.loads(lookup.page.body)
        return page


def _mirror_page(store: Store, alias: str, type_: str, cursor: str | None) -> dict[str, Any]:
    """One page of the mirror, newest first, shaped as a cached upstream page is."""
    pairs = [("user", alias), ("type", type_), ("limit", str(MIRROR_PAGE))]
    query = parse_tracks_query(pairs + ([("cursor", cursor)] if cursor else []))
    page = store.tracks(query, (alias,))
    items = [{k: v for k, v in track.items() if k not in ("user", "type")} for track in page.items]
    return {"items": items, "next_cursor": page.next_cursor, "has_more": page.has_more}


def _stream(
    walk: Walk,
    first: list[dict[str, Any]],
    limit: int,
    render: Render,
    scope: Scope,
    connection: Connection | None,
    incomplete: Callable[[], Problem | None] = lambda: None,
) -> Iterator[bytes]:
    """Tracks in order, then one summary: {"summary": {count, complete[, problem]}}.

    Each page is rendered to bytes and its parsed tracks let go before the first of them is
    written; the bytes go as they are written (a caller that reads slowly pins one page's
    rendering, not its parsed objects).
    """
    count = 0
    problem: Problem | None = None
    head = render.head()
    items: list[dict[str, Any]] | None = first
    del first  # the frame would hold the first page's tracks for as long as the stream lasts
    try:
        while items is not None:
            taken = items[: limit - count]
            over = len(items) > len(taken)
            chunks = _chunks(head, map(render.track, taken))
            head = b""
            del items, taken
            while chunks:
                walk.check_time()  # a caller reading slowly counts against the time too
                chunk, tracks = chunks.popleft()
                yield chunk
                count += tracks
            if over:
                raise LimitReached(f"Stopped at the limit of {limit} tracks.")
            items = walk.next()
        problem = incomplete()
    except GeneratorExit:
        # The server closed the stream: a write failed (the caller left) or timed out.
        log.info("library stream closed after %d tracks, %d pages", count, walk.pages)
        raise
    except CallerGone:
        log.info("library caller hung up after %d tracks, %d pages", count, walk.pages)
        if connection is not None:
            connection.drop()
        return
    except Problem as exc:
        problem = exc
    except Exception as exc:
        log.error("unexpected error in a library stream", exc_info=exc)
        problem = Problem(INTERNAL_DETAIL)
        scope.internal_error = True  # counted as the 500 it stands for when the stream ends
    summary: dict[str, Any] = {"count": count, "complete": problem is None}
    if problem is not None:
        if not isinstance(problem, LimitReached | MirrorSyncing):
            log.warning("library stream cut short: %s", problem.code)
        summary["problem"] = {**problem.body(), "request_id": scope.request_id}
    yield render.summary(summary)


def _chunks(head: bytes, lines: Iterable[bytes]) -> deque[tuple[bytes, int]]:
    """Head and lines joined into chunks of about CHUNK_BYTES, each with its track count."""
    chunks: deque[tuple[bytes, int]] = deque()
    batch, size, tracks = [head], len(head), 0
    for line in lines:
        batch.append(line)
        size += len(line)
        tracks += 1
        if size >= CHUNK_BYTES:
            chunks.append((b"".join(batch), tracks))
            batch, size, tracks = [], 0, 0
    if size:  # never an empty chunk: in chunked encoding that would end the body
        chunks.append((b"".join(batch), tracks))
    return chunks


def _wants_csv(accept: str | None) -> bool:
    """Whether Accept prefers text/csv to NDJSON."""
    if not accept:
        return False
    best = parse_accept_header(accept).best_match([NDJSON, CSV])
    return best == CSV


class Render:
    """How a stream's tracks and summary are written."""

    media_type = NDJSON

    def head(self) -> bytes:
        """What comes before the first track."""
        return b""

    def track(self, track: dict[str, Any]) -> bytes:
        """One track's line."""
        raise NotImplementedError

    def summary(self, summary: dict[str, Any]) -> bytes:
        """The last line."""
        raise NotImplementedError


class Ndjson(Render):
    """One JSON document per line."""

    def track(self, track: dict[str, Any]) -> bytes:
        """The track as one line of JSON."""
        return jsoncodec.dumps(track) + b"\n"

    def summary(self, summary: dict[str, Any]) -> bytes:
        """{"summary": {...}} as the last line."""
        return jsoncodec.dumps({"summary": summary}) + b"\n"


class CsvRender(Render):
    """A header row, one row per track, then the summary row: #summary,count,complete,code."""

    media_type = f"{CSV}; charset=utf-8"

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def head(self) -> bytes:
        """The header row: the Track's keys."""
        return self._row(COLUMNS)

    def track(self, track: dict[str, Any]) -> bytes:
        """The track's values in COLUMNS order; null is empty, formulas are defused."""
        return self._row([_cell(track[c]) for c in COLUMNS])

    def summary(self, summary: dict[str, Any]) -> bytes:
        """#summary,<count>,<true|false>,<problem code or empty>."""
        problem = summary.get("problem") or {}
        complete = "true" if summary["complete"] else "false"
        return self._row([SUMMARY_MARK, summary["count"], complete, problem.get("code", "")])

    def _row(self, values: Iterable[Any]) -> bytes:
        self._writer.writerow(values)
        row = self._buffer.getvalue().encode()
        self._buffer.seek(0)
        self._buffer.truncate()
        return row


def _cell(value: Any) -> Any:
    """A CSV cell: empty for null, and text a spreadsheet would run as a formula quoted with a
    leading ' (OWASP), which shows the text as it is. Numbers are the service's own rendering
    of JSON numbers and never start a formula."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
