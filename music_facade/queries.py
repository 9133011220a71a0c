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
from datetime import UTC, datetime
from typing import Any

from werkzeug.http import parse_etags

from . import jsoncodec
from .config import Settings
from .core.query import TYPES, decode_query
from .errors import InvalidQuery
from .mirror import Store, parse_tracks_query
from .scope import Answer, Scope

CHANGES_LIMIT = 500
MAX_CHANGES_LIMIT = 1000
VERSION_SECONDS = 0.5
SYNCED_SECONDS = 5.0
_RENDERED = 256  # answers kept per process (each well under 100 KB)


class MirrorAnswers:
    """Answers /tracks and /changes from the store."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._lock = threading.Lock()
        self._rendered: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
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
        key = ("tracks", query, aliases, self._version(), renewal)
        body = self._cached(key)
        if body is None:
            page = self.store.tracks(query, aliases)
            answer = {
                "items": page.items,
                "next_cursor": page.next_cursor,
                "has_more": page.has_more,
                "total": page.total,
                "synced_at": self.synced_at(aliases, query.type),
            }
            body = self._keep(key, jsoncodec.dumps(answer))
        return _conditional(body, scope)

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
        return _conditional(jsoncodec.dumps(answer), scope)

    def synced_at(self, aliases: Sequence[str], type_: str | None) -> str | None:
        """The oldest last complete sync among the accounts asked about (None: one never was)."""
        oldest: float | None = None
        for alias in aliases:
            for kind in (type_,) if type_ else TYPES:
                done = self.store.state(alias, kind).last_complete
                if done is None:
                    return None
                oldest = done if oldest is None else min(oldest, done)
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

    def _cached(self, key: tuple[Any, ...]) -> bytes | None:
        with self._lock:
            body = self._rendered.get(key)
            if body is not None:
                self._rendered.move_to_end(key)
            return body

    def _keep(self, key: tuple[Any, ...], body: bytes) -> bytes:
        with self._lock:
            self._rendered[key] = body
            while len(self._rendered) > _RENDERED:
                self._rendered.popitem(last=False)
        return body


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


def _conditional(body: bytes, scope: Scope) -> Answer:
    """200 with the body, or 304 when If-None-Match names it; never stored by a shared cache,
    always revalidated (the mirror changes under it)."""
    etag = hashlib.blake2b(body, digest_size=16).hexdigest()
    headers = [("ETag", f'"{etag}"'), ("Cache-Control", "private, no-cache")]
    given = scope.environ.get("HTTP_IF_NONE_MATCH")
    if given and parse_etags(given).contains_weak(etag):
        return 304, [], headers, None
    headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    return 200, [body], headers, None
