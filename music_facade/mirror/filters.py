"""The /tracks query: every parameter parsed and checked, every bad one reported at once."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..core.alias import ALIAS_RE, ALIAS_RULE
from ..core.query import MAX_REPORTED, REPEATED, TYPES
from ..errors import InvalidQuery
from . import cursor as cursors
from .search import words

STATUSES = ("generating", "failed", "completed", "unknown")
# Sort name → (column, the Python type of its values).
SORTS: dict[str, tuple[str, type]] = {
    "created_at": ("created_at", float),
    "updated_at": ("updated_at", float),
    "title": ("title_key", str),
    "bpm": ("bpm", float),
    "duration_seconds": ("duration", float),
}
SORT_NAMES = tuple(name for base in SORTS for name in (f"-{base}", base))
DEFAULT_SORT = "-created_at"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_Q = 200
MAX_TEXT = 200
PARAMETERS = (
    "user", "type", "status", "q", "style", "mood", "key", "bpm_min", "bpm_max",
    "duration_min", "duration_max", "created_after", "created_before", "sort", "limit", "cursor",
)  # fmt: skip
UNKNOWN = f"is not a parameter of /tracks (use {', '.join(PARAMETERS)})"
_NUMBER_RE = re.compile(r"\A[0-9]{1,15}(\.[0-9]{1,15})?\Z")
_LIMIT_RE = re.compile(r"\A[1-9][0-9]{0,2}\Z")
_RFC3339_RE = re.compile(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})\Z"
)


@dataclass(frozen=True)
class TracksQuery:
    """A valid /tracks query. Text filters are casefolded; times are epoch milliseconds."""

    users: tuple[str, ...] | None = None  # None: every alias the caller may read
    type: str | None = None  # None: both
    statuses: tuple[str, ...] | None = None
    q: str | None = None
    words: tuple[str, ...] = ()
    style: str | None = None
    mood: str | None = None
    key: str | None = None
    bpm_min: float | None = None
    bpm_max: float | None = None
    duration_min: float | None = None
    duration_max: float | None = None
    created_after: int | None = None  # created_at >= this (epoch ms)
    created_before: int | None = None  # created_at < this (epoch ms)
    sort: str = DEFAULT_SORT
    limit: int = DEFAULT_LIMIT
    cursor: cursors.Position | None = None

    @property
    def sort_column(self) -> str:
        """The tracks column the sort orders by."""
        return SORTS[self.sort.lstrip("-")][0]

    @property
    def descending(self) -> bool:
        """Whether the sort runs from the largest value down."""
        return self.sort.startswith("-")

    @property
    def digest(self) -> str:
        """A digest of the filters and sort (not limit, not cursor): what a cursor is bound to."""
        return cursors.digest(
            [
                self.users, self.type, self.statuses, list(self.words), self.style, self.mood,
                self.key, self.bpm_min, self.bpm_max, self.duration_min, self.duration_max,
                self.created_after, self.created_before, self.sort,
            ]
        )  # fmt: skip


def parse_tracks_query(pairs: Iterable[tuple[str, str]]) -> TracksQuery:
    """A TracksQuery from the request's (name, value) pairs, or InvalidQuery naming every bad
    parameter (unknown, repeated or invalid) with its messages."""
    given: dict[str, list[str]] = {}
    for name, value in pairs:
        given.setdefault(name, []).append(value)
    errors: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    for name, found in given.items():
        if name not in PARAMETERS:
            errors[name] = [UNKNOWN]
        elif len(found) > 1:
            errors[name] = [REPEATED]
        else:
            values[name] = found[0]
    fields: dict[str, Any] = {}
    for name, value in values.items():
        if name == "cursor":
            continue  # checked last: it is bound to every other parameter
        try:
            fields.update(_PARSERS[name](name, value))
        except ValueError as exc:
            errors[name] = [str(exc)]
    for low, high in (("bpm_min", "bpm_max"), ("duration_min", "duration_max")):
        both = fields.get(low) is not None and fields.get(high) is not None
        if both and fields[high] < fields[low]:
            errors.setdefault(high, []).append(f"must not be less than {low}")
    query = TracksQuery(**fields)
    if "cursor" in values and not errors:
        try:
            kind = SORTS[query.sort.lstrip("-")][1]
            position = cursors.decode(values["cursor"], query.digest, kind)
        except cursors.CursorError as exc:
            errors["cursor"] = [str(exc)]
        else:
            query = TracksQuery(**fields, cursor=position)
    if errors:
        # Names come from the caller: shorten them and list a bounded number.
        errors = {name[:64]: errors[name] for name in sorted(errors)[:MAX_REPORTED]}
        raise InvalidQuery(f"Invalid query parameter(s): {', '.join(errors)}.", errors=errors)
    return query


def _users(name: str, value: str) -> dict[str, Any]:
    aliases = value.split(",")
    if not all(ALIAS_RE.match(alias) for alias in aliases):
        raise ValueError(f"must be one alias or a comma-separated list; each {ALIAS_RULE}")
    return {"users": tuple(dict.fromkeys(aliases))}


def _type(name: str, value: str) -> dict[str, Any]:
    if value not in TYPES:
        raise ValueError("must be 'song' or 'instrumental'")
    return {"type": value}


def _statuses(name: str, value: str) -> dict[str, Any]:
    found = value.split(",")
    if not all(status in STATUSES for status in found):
        raise ValueError(f"must be a comma-separated list of {', '.join(STATUSES)}")
    return {"statuses": tuple(dict.fromkeys(found))}


def _q(name: str, value: str) -> dict[str, Any]:
    if not 1 <= len(value) <= MAX_Q:
        raise ValueError(f"must be 1-{MAX_Q} characters")
    return {"q": value, "words": tuple(dict.fromkeys(words(value)))}


def _exact(name: str, value: str) -> dict[str, Any]:
    if not 1 <= len(value) <= MAX_TEXT:
        raise ValueError(f"must be 1-{MAX_TEXT} characters")
    return {name: value.casefold()}


def _number(name: str, value: str) -> dict[str, Any]:
    if not _NUMBER_RE.match(value) or not math.isfinite(float(value)):
        raise ValueError("must be a number of at least 0 (digits, optionally a decimal part)")
    return {name: float(value)}


def _time(name: str, value: str) -> dict[str, Any]:
    found = _RFC3339_RE.match(value)
    if not found:
        raise ValueError("must be an RFC 3339 date-time, e.g. 2025-05-15T09:06:40Z")
    fraction = found.group(1) or ""
    whole = value.upper().replace(fraction, "", 1).replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(whole)
    except ValueError:
        raise ValueError("must be an RFC 3339 date-time with a valid date and time") from None
    # Exact integers, then the fraction rounded up: tracks carry whole seconds, so
    # created_at >= x and created_at < x hold exactly as >= ceil(x) and < ceil(x) in ms.
    seconds = (moment - _EPOCH) // timedelta(seconds=1)
    digits = fraction[1:]
    part = -(-int(digits or "0") * 1000 // 10 ** len(digits)) if digits else 0
    return {name: seconds * 1000 + part}


def _sort(name: str, value: str) -> dict[str, Any]:
    if value not in SORT_NAMES:
        raise ValueError(f"must be one of {', '.join(SORT_NAMES)}")
    return {"sort": value}


def _limit(name: str, value: str) -> dict[str, Any]:
    if not _LIMIT_RE.match(value) or not 1 <= int(value) <= MAX_LIMIT:
        raise ValueError(f"must be a whole number from 1 to {MAX_LIMIT}")
    return {"limit": int(value)}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PARSERS = {
    "user": _users,
    "type": _type,
    "status": _statuses,
    "q": _q,
    "style": _exact,
    "mood": _exact,
    "key": _exact,
    "bpm_min": _number,
    "bpm_max": _number,
    "duration_min": _number,
    "duration_max": _number,
    "created_after": _time,
    "created_before": _time,
    "sort": _sort,
    "limit": _limit,
}
