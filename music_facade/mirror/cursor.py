"""Keyset cursors for /tracks: the last row's sort value and keys, bound to filters and sort.

A cursor is base64url (no padding) of a JSON array [digest, value, id, alias, type]: the
digest of the query it was made for (another filter or sort cannot reuse it), then the sort
value of the page's last track (null: the track sorts among those without a value, which
come last) and its (id, alias, type). It is not secret: a caller could build one by hand
and only ever reads tracks it may read anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from dataclasses import dataclass
from typing import Any

from .. import jsoncodec

MAX_LENGTH = 2048


class CursorError(ValueError):
    """The cursor is not one this query made; str() is the message for the caller."""


@dataclass(frozen=True)
class Position:
    """Where a page ended: the last track's sort value and its keys."""

    value: int | float | str | None
    id: str
    alias: str
    type: str


def digest(parts: Any) -> str:
    """A short digest of a query's filters and sort (any JSON-serialisable value)."""
    return hashlib.sha256(jsoncodec.dumps(parts)).hexdigest()[:16]


def encode(query_digest: str, position: Position) -> str:
    """The cursor text for a position in the query with this digest."""
    doc = [query_digest, position.value, position.id, position.alias, position.type]
    return base64.urlsafe_b64encode(jsoncodec.dumps(doc)).rstrip(b"=").decode("ascii")


def decode(cursor: str, query_digest: str, kind: type) -> Position:
    """The position in a cursor made for this query; kind: str or float (the sort value's)."""
    if len(cursor) > MAX_LENGTH:
        raise CursorError("is not a cursor of /tracks")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = jsoncodec.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise CursorError("is not a cursor of /tracks") from None
    if not (
        isinstance(doc, list)
        and len(doc) == 5
        and all(isinstance(part, str) for part in (doc[0], *doc[2:]))
    ):
        raise CursorError("is not a cursor of /tracks")
    if doc[0] != query_digest:
        raise CursorError("was made for other filters or another sort; start again without it")
    value = doc[1]
    if value is not None and not _of_kind(value, kind):
        raise CursorError("is not a cursor of /tracks")
    return Position(value, doc[2], doc[3], doc[4])


def _of_kind(value: Any, kind: type) -> bool:
    if kind is str:
        return isinstance(value, str)
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
