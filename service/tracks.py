"""Track: the small public shape of an upstream record, and the page that carries tracks."""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, fields

from .errors import UpstreamError
from .query import CURSOR_RE

log = logging.getLogger(__name__)

# Epoch milliseconds up to 9999-12-31T23:59:59.999Z; beyond that RFC 3339 has no year.
_MAX_EPOCH_MS = 253_402_300_799_999
_MAX_SAFE_INTEGER = 2**53 - 1
# json.loads accepts "\ud800" on its own; such a string cannot be encoded as UTF-8.
LONE_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _lookup(record: Any, path: tuple[str, ...]) -> Any:
    """record['a']['b'] for ('a', 'b'), or None where any step is missing or not an object."""
    value = record
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _finite_number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _Upstream(fields.Field[Any]):
    """A field read from one or more upstream paths; the first usable value wins, else null."""

    def __init__(self, *paths: str, **kwargs: Any) -> None:
        super().__init__(dump_default=None, **kwargs)
        self.paths = paths
        self._parts = tuple(tuple(path.split(".")) for path in paths)

    def get_value(self, obj: Any, attr: str, accessor: Any = None, default: Any = None) -> Any:
        for parts in self._parts:
            value = self.convert(_lookup(obj, parts))
            if value is not None:
                return value
        return None

    def convert(self, value: Any) -> Any:
        """The public value for one upstream value, or None when it is unusable."""
        raise NotImplementedError

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


class Text(_Upstream):
    """A non-empty string (lone surrogates, which UTF-8 cannot carry, become U+FFFD)."""

    def convert(self, value: Any) -> str | None:
        if not isinstance(value, str) or value == "":
            return None
        return LONE_SURROGATE_RE.sub("\ufffd", value)


class Number(_Upstream):
    """A non-negative JSON number that JavaScript holds exactly (not a boolean)."""

    def convert(self, value: Any) -> int | float | None:
        number = _finite_number(value)
        return number if number is not None and 0 <= number <= _MAX_SAFE_INTEGER else None


class Progress(_Upstream):
    """An integer percentage 0-100."""

    def convert(self, value: Any) -> int | None:
        number = _finite_number(value)
        if number is None or not 0 <= number <= 100:
            return None
        return round(number)


class Timestamp(_Upstream):
    """Epoch milliseconds as RFC 3339 UTC with second precision."""

    def convert(self, value: Any) -> str | None:
        number = _finite_number(value)
        if number is None or not 0 <= number <= _MAX_EPOCH_MS:
            return None
        return datetime.fromtimestamp(number // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Status(_Upstream):
    """The upstream's numeric status band: 0-9 generating, 10-29 failed, 30+ completed."""

    def get_value(self, obj: Any, attr: str, accessor: Any = None, default: Any = None) -> str:
        number = _finite_number(_lookup(obj, self._parts[0]))
        if number is None or number < 0:
            return "unknown"
        if number < 10:
            return "generating"
        if number < 30:
            return "failed"
        return "completed"


class TrackSchema(Schema):
    """The documented Track; each field names the upstream path(s) it comes from."""

    id = Text("itemId")
    title = Text("titleEn")
    status = Status("status")
    progress = Progress("progress")
    cover_url = Text("cover")
    style = Text("musicMaterial.style")
    mood = Text("musicMaterial.mood")
    key = Text("musicMaterial.key")
    bpm = Number("musicMaterial.bpm")
    duration_seconds = Number("musicMaterial.dur")
    prompt = Text("ltmMaterialExtendDto.prompt", "ltmMaterialExtendDto.description")
    lyrics = Text("ltmMaterialExtendDto.lyricsPrompt")
    model = Text("ltmMaterialExtendDto.modelShowName")
    created_at = Timestamp("createTime")
    updated_at = Timestamp("updateTime")


_TRACK = TrackSchema()
# Every field reads its own value and _serialize passes it through, so a track is each field's
# get_value in declaration order: what _TRACK.dump gives, without marshmallow's per-field
# serialize machinery (half a miss's CPU, measured). test_tracks checks they agree.
_FIELDS = tuple((field.data_key or name, field) for name, field in _TRACK.dump_fields.items())


def dump_track(record: dict[str, Any]) -> dict[str, Any]:
    """One upstream record as a Track."""
    return {name: field.get_value(record, name) for name, field in _FIELDS}


def reshape_page(page: dict[str, Any]) -> dict[str, Any]:
    """An upstream page → {"items", "next_cursor", "has_more"}; UpstreamError if misshapen."""
    records = page.get("records")
    if records is None:
        records = []
    if not isinstance(records, list):
        raise UpstreamError("The upstream's answer had no list of records.")
    has_next = page.get("hasNext", False)
    if has_next is None:
        has_next = False
    if not isinstance(has_next, bool):
        raise UpstreamError("The upstream's answer had a malformed hasNext.")
    cursor = page.get("cursor")
    next_cursor = None
    if has_next:
        if not isinstance(cursor, str) or not CURSOR_RE.match(cursor):
            raise UpstreamError("The upstream's answer had no usable next-page cursor.")
        next_cursor = cursor
    items = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            log.warning("dropped upstream record %d: a %s, not an object", index, _kind(record))
            continue
        items.append(dump_track(record))
    return {"items": items, "next_cursor": next_cursor, "has_more": has_next}


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
