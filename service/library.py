"""GET /library: every track of an account and type in one streamed answer.

The pages are read one at a time through `Music.page` (the same cache, single flight, bulkhead,
cooldowns and breaker as GET /music), and each is written out before the next is read, so a
worker holds one page, never the library. Errors before the first byte are ordinary problem
answers; after it the status cannot change, so the stream always ends with a summary: one
`{"summary": {...}}` line in NDJSON, a `#summary` row in CSV.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from werkzeug.http import parse_accept_header

from . import jsoncodec
from .auth import Caller
from .cache import Lookup
from .errors import INTERNAL_DETAIL, InvalidQuery, Problem
from .limits import Limits, RateLimited
from .metrics import STORED, Metrics, client_label
from .query import LIBRARY_RULES, MusicQuery, parse_params, unknown_message
from .tracks import TrackSchema

if TYPE_CHECKING:
    from .music import Answer, Music

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
CSV = "text/csv"
COLUMNS = tuple(field.data_key or name for name, field in TrackSchema().dump_fields.items())
SUMMARY_MARK = "#summary"


class LimitReached(Problem):
    """Only ever inside a summary: the stream stopped at the request's `limit`."""

    status, code, title = 413, "limit_reached", "The library has more tracks than the limit"


class Scope:
    """One request's caller and the account it may read (authorized before the cache)."""

    def __init__(self, music: Music, who: Caller, request_id: str, environ: dict[str, Any]):
        self.music = music
        self.who = who
        self.request_id = request_id
        self.environ = environ
        self.user: str | None = None
        self.internal_error = False  # a stream an unexpected error cut short (counted as 500)

    def account(self, given: str | None) -> str:
        """The alias the request names (or the implicit one), once the caller may read it."""
        # The scope before the alias's existence and before the cache: a cached page is no
        # excuse, and an alias outside the scope is refused alike whether or not it exists.
        alias = self.music.alias(given, self.who.client)
        self.user = alias
        return alias


def fetched(lookup: Lookup) -> bool:
    """Whether this request's own load called the upstream (not a hit, not collapsed)."""
    status = lookup.cache_status
    return ("stored" in status or "bypass" in status) and "collapsed" not in status


class Library:
    """Answers GET /library for the handler."""

    def __init__(self, music: Music, limits: Limits, max_items: int, metrics: Metrics) -> None:
        self.music = music
        self.limits = limits
        self.max_items = max_items
        self.metrics = metrics

    def answer(self, raw: bytes, scope: Scope, item: str) -> Answer:
        """Validate, read the first page (its failure is a normal problem), then stream."""
        values = parse_params(raw, LIBRARY_RULES, unknown_message("/library", LIBRARY_RULES))
        limit = int(values.get("limit", self.max_items))
        if limit > self.max_items:
            raise InvalidQuery(
                "Invalid query parameter(s): limit.",
                errors={"limit": [f"must be at most {self.max_items}"]},
            )
        alias = scope.account(values.get("user"))
        type_ = values["type"]
        first = self._page(scope, alias, type_, None)
        as_csv = _wants_csv(scope.environ.get("HTTP_ACCEPT"))
        lines = self._stream(scope, alias, type_, first, limit)
        body = _csv_rows(lines) if as_csv else _ndjson(lines)
        headers = [
            ("Content-Type", f"{CSV}; charset=utf-8" if as_csv else NDJSON),
            ("Cache-Control", "no-store"),
            ("Vary", "Accept"),
        ]
        return 200, body, headers, None

    def _page(self, scope: Scope, alias: str, type_: str, cursor: str | None) -> dict[str, Any]:
        """One page through the cache, counted against the caller when it was fetched."""
        lookup = self.music.page(alias, MusicQuery(None, type_, cursor), scope.request_id)
        # Every page's cache outcome counts as /music's do (the request itself has none).
        if self.metrics.page(lookup.cache_status) in STORED:
            self.metrics.cache_size(*self.music.cache.backend.size())
        if fetched(lookup):
            try:
                self.limits.charge(scope.who, scope.environ.get("REMOTE_ADDR"))
            except RateLimited:
                who = scope.who.client
                self.metrics.limited(client_label(who.name if who else None))
                raise
        page: dict[str, Any] = jsoncodec.loads(lookup.page.body)
        return page

    def _stream(
        self, scope: Scope, alias: str, type_: str, page: dict[str, Any], limit: int
    ) -> Iterator[dict[str, Any]]:
        """Tracks in order, then one summary: {"summary": {count, complete[, problem]}}."""
        count = 0
        problem: Problem | None = None
        try:
            while True:
                for track in page["items"]:
                    if count >= limit:
                        raise LimitReached(f"Stopped at the limit of {limit} tracks.")
                    yield track
                    count += 1
                if not page["has_more"]:
                    break
                page = self._page(scope, alias, type_, page["next_cursor"])
        except Problem as exc:
            problem = exc
        except Exception as exc:
            log.error("unexpected error in a library stream", exc_info=exc)
            problem = Problem(INTERNAL_DETAIL)
            scope.internal_error = True
        summary: dict[str, Any] = {"count": count, "complete": problem is None}
        if problem is not None:
            if not isinstance(problem, LimitReached):
                log.warning("library stream cut short: %s", problem.code)
            summary["problem"] = {**problem.body(), "request_id": scope.request_id}
        yield {"summary": summary}


def _wants_csv(accept: str | None) -> bool:
    """Whether Accept prefers text/csv to NDJSON."""
    if not accept:
        return False
    best = parse_accept_header(accept).best_match([NDJSON, CSV])
    return best == CSV


def _ndjson(lines: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    for line in lines:
        yield jsoncodec.dumps(line) + b"\n"


def _csv_rows(lines: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """A header row, one row per track, then the summary row: #summary,count,complete,code."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for line in lines:
        summary = line.get("summary") if len(line) == 1 else None
        if isinstance(summary, dict):
            problem = summary.get("problem") or {}
            writer.writerow(
                [
                    SUMMARY_MARK,
                    summary["count"],
                    "true" if summary["complete"] else "false",
                    problem.get("code", ""),
                ]
            )
        else:
            writer.writerow(["" if line[c] is None else line[c] for c in COLUMNS])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
