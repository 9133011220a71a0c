"""Track: the small public shape of an upstream record, and the page that carries tracks."""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Any

from marshmallow import Schema, fields

from ..errors import UpstreamError
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


# Each field's rule, as a plain function from one upstream value to the public one (None: not
# usable, try the field's next path). The fields below name them; dump_track calls them.


def _text(value: Any) -> str | None:
    """A non-empty string (lone surrogates, which UTF-8 cannot carry, become U+FFFD)."""
    if not isinstance(value, str) or value == "":
        return None
    if value.isascii():  # most are, and then hold no surrogate: no scan needed
        return value
    return LONE_SURROGATE_RE.sub("\ufffd", value)


def _number(value: Any) -> int | float | None:
    """A non-negative JSON number that JavaScript holds exactly (not a boolean)."""
    number = _finite_number(value)
    return number if number is not None and 0 <= number <= _MAX_SAFE_INTEGER else None


def _progress(value: Any) -> int | None:
    """An integer percentage 0-100."""
    number = _finite_number(value)
    if number is None or not 0 <= number <= 100:
        return None
    return round(number)


def _timestamp(value: Any) -> str | None:
    """Epoch milliseconds as RFC 3339 UTC with second precision."""
    number = _finite_number(value)
    if number is None or not 0 <= number <= _MAX_EPOCH_MS:
        return None
    # time.gmtime, not datetime: a third of the cost, the same text for every year 1970-9999.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(number // 1000))


def _status(value: Any) -> str:
    """The upstream's numeric status band: 0-9 generating, 10-29 failed, 30+ completed."""
    number = _finite_number(value)
    if number is None or number < 0:
        return "unknown"
    if number < 10:
        return "generating"
    if number < 30:
        return "failed"
    return "completed"


class _Upstream(fields.Field[Any]):
    """A field read from one or more upstream paths; the first usable value wins, else null."""

    rule: Any = None  # one of the functions above: upstream value → public value or None

    def __init__(self, *paths: str, **kwargs: Any) -> None:
        super().__init__(dump_default=None, **kwargs)
        self.paths = paths
        self._parts = tuple(tuple(path.split(".")) for path in paths)

    def get_value(self, obj: Any, attr: str, accessor: Any = None, default: Any = None) -> Any:
        rule = type(self).rule
        for parts in self._parts:
            value = rule(_lookup(obj, parts))
            if value is not None:
                return value
        return None

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


class Text(_Upstream):
    rule = _text


class Number(_Upstream):
    rule = _number


class Progress(_Upstream):
    rule = _progress


class Timestamp(_Upstream):
    rule = _timestamp


class Status(_Upstream):
    rule = _status  # never None: an unusable status is "unknown"


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
_NOTHING: dict[str, Any] = {}


def dump_track(record: Any) -> dict[str, Any]:
    """One upstream record as a Track (anything but an object: every field unusable).

    TrackSchema's dump, written out: each nested object looked up once, one rule call per
    field, none of marshmallow's per-field machinery (a page's tracks are most of a miss's own
    work). test_tracks checks that they agree, field for field and in order.
    """
    if not isinstance(record, dict):
        record = _NOTHING
    get = record.get
    material = get("musicMaterial")
    if not isinstance(material, dict):
        material = _NOTHING
    extend = get("ltmMaterialExtendDto")
    if not isinstance(extend, dict):
        extend = _NOTHING
    return {
        "id": _text(get("itemId")),
        "title": _text(get("titleEn")),
        "status": _status(get("status")),
        "progress": _progress(get("progress")),
        "cover_url": _text(get("cover")),
        "style": _text(material.get("style")),
        "mood": _text(material.get("mood")),
        "key": _text(material.get("key")),
        "bpm": _number(material.get("bpm")),
        "duration_seconds": _number(material.get("dur")),
        "prompt": _text(extend.get("prompt")) or _text(extend.get("description")),
        "lyrics": _text(extend.get("lyricsPrompt")),
        "model": _text(extend.get("modelShowName")),
        "created_at": _timestamp(get("createTime")),
        "updated_at": _timestamp(get("updateTime")),
    }


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
