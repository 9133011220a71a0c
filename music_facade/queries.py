"""GET /tracks and GET /changes: the mirror's answers, with zero upstream calls.

Both are routes of the /music handler (music_facade.music), so they get the same credentials,
scopes, rate limits, CORS, request ids, metrics and problems. Answers are rendered once per
query and mirror version (every write of the sync appends a change, so the newest change's
seq names the mirror's state): a repeated query between two writes costs one indexed read.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from werkzeug.http import parse_etags

from . import jsoncodec
from .config import Settings
from .core.query import TYPES, decode_query
from .errors import InvalidQuery
from .mirror import parse_tracks_query
from .scope import Answer, Scope

if TYPE_CHECKING:
    from .mirror.store import Store

CHANGES_LIMIT = 500
MAX_CHANGES_LIMIT = 1000
VERSION_SECONDS = 0.5
SYNCED_SECONDS = 5.0
_RENDERED = 256  # answers kept per process (each well under 100 KB)
_TOTALS = 1024  # match counts kept per process, one per filter and mirror version


K = TypeVar("K")
V = TypeVar("V")


class _Recent(Generic[K, V]):
    """The most recently used `size` entries of a mapping, safe across threads."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> V:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


class MirrorAnswers:
    """Answers /tracks and /changes from the store."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._rendered: _Recent[tuple[Any, ...], _Rendered] = _Recent(_RENDERED)
        # A walk's pages share one filter: its total is counted on the first page only.
        self._totals: _Recent[tuple[Any, ...], int] = _Recent(_TOTALS)
        self._version_at = 0
        self._version_until = 0.0

    def tracks(self, raw: bytes, scope: Scope, item: str) -> Answer:
        """GET /tracks: a page of the tracks matching the query."""
        args, errors = decode_query(raw)
        if errors:
            raise InvalidQuery(f"Invalid query parameter(s): {', '.join(errors)}.", errors=errors)
        query = parse_tracks_query(
            (name, value) for name, values in args.items() for value in values
        )
        aliases = scope.accounts(query.users)
        # synced_at moves without a write (a sync that found nothing new): a kept answer is
        # also renewed every SYNCED_SECONDS.
        renewal = int(time.monotonic() // SYNCED_SECONDS)
        version = self._version()
        key = (query, aliases, version, renewal)
        rendered = self._rendered.get(key)
        if rendered is None:
            counted = (query.digest, aliases, version)
            page = self.store.tracks(query, aliases, total=self._totals.get(counted))
            self._totals.put(counted, page.total)
            answer = {
                "items": page.items,
                "next_cursor": page.next_cursor,
                "has_more": page.has_more,
                "total": page.total,
                "synced_at": self.synced_at(aliases, query.type),
            }
            rendered = self._rendered.put(key, _Rendered.of(jsoncodec.dumps(answer)))
        return _conditional(rendered, scope)

    def changes(self, raw: bytes, scope: Scope, item: str) -> Answer:
        """GET /changes: what happened since a token, in order."""
        args, errors = decode_query(raw)
        values: dict[str, str] = {}
        for name, given in args.items():
            if name not in ("since", "user", "limit"):
                errors[name] = ["is not a parameter of /changes (use since, user, limit)"]
            elif len(given) > 1:
                errors[name] = ["must be given once"]
            else:
                values[name] = given[0]
        since = _whole(values, "since", 0, 2**63 - 1, errors)
        limit = _whole(values, "limit", 1, MAX_CHANGES_LIMIT, errors)
        users = values.get("user")
        if errors:
            raise InvalidQuery(f"Invalid query parameter(s): {', '.join(errors)}.", errors=errors)
        aliases = scope.accounts(tuple(users.split(",")) if users is not None else None)
        page = self.store.changes(since, aliases, limit or CHANGES_LIMIT)
        answer = {
            "changes": [
                {
                    "seq": str(c.seq),
                    "op": c.op,
                    "event": c.event,
                    "user": c.user,
                    "type": c.type,
                    "id": c.id,
                    "track": c.track,
                }
                for c in page.changes
            ],
            "next": str(page.next),
            "has_more": page.has_more,
        }
        return _conditional(_Rendered.of(jsoncodec.dumps(answer)), scope)

    def synced_at(self, aliases: Sequence[str], type_: str | None) -> str | None:
        """The oldest last complete sync among the accounts asked about (None: one never was)."""
        oldest = self.store.oldest_complete(aliases, (type_,) if type_ else TYPES)
        if oldest is None:
            return None
        return datetime.fromtimestamp(int(oldest), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _version(self) -> int:
        """The mirror's version, read at most once per VERSION_SECONDS by this process: a
        write shows in /tracks within that time, and a burst of queries costs one read."""
        now = time.monotonic()
        if now >= self._version_until:
            self._version_at = self.store.version()
            self._version_until = now + VERSION_SECONDS
        return self._version_at


def _whole(
    values: dict[str, str], name: str, low: int, high: int, errors: dict[str, list[str]]
) -> int | None:
    text = values.get(name)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or not low <= int(text) <= high:
        errors[name] = [f"must be a whole number from {low} to {high}"]
        return None
    return int(text)


@dataclass(frozen=True, slots=True)
class _Rendered:
    """An answer's body with its entity tag, hashed once however often it is sent."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> _Rendered:
        return cls(body, hashlib.blake2b(body, digest_size=16).hexdigest())


def _conditional(rendered: _Rendered, scope: Scope) -> Answer:
    """200 with the body, or 304 when If-None-Match names it; never stored by a shared cache,
    always revalidated (the mirror changes under it)."""
    headers = [("ETag", f'"{rendered.etag}"'), ("Cache-Control", "private, no-cache")]
    given = scope.environ.get("HTTP_IF_NONE_MATCH")
    if given and parse_etags(given).contains_weak(rendered.etag):
        return 304, [], headers, None
    length = str(len(rendered.body))
    headers += [("Content-Type", "application/json"), ("Content-Length", length)]
    return 200, [rendered.body], headers, None
