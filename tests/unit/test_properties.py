"""Properties of the record → Track reshaping, for any JSON the upstream could send.

The upstream is not ours: whatever JSON value arrives as a record, `reshape_page` must either
drop it (not an object) or turn it into a `Track` that openapi.yaml accepts and that serialises
as strict JSON; and whatever arrives as `records`, `hasNext` or `cursor`, the page is a valid
`MusicPage` or an `UpstreamError`, never another exception.

Values are what Python's `json.loads` can produce from an upstream body, which is more than JSON
proper: integers of any size, floats that overflow to infinity (`1e400`), and strings with lone
surrogates (`"\\ud800"`). `NaN` and `Infinity` literals are refused by the upstream client's
parser, but the reshaping is tested with them anyway.

Runs are deterministic (`derandomize=True`, no example database): CI must not flake.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from music_facade.core.query import CURSOR_RE
from music_facade.core.tracks import TrackSchema, dump_track, reshape_page
from music_facade.errors import UpstreamError
from tests.support.contract import check_schema, pointer_to
from tests.support.upstream_json import PROPERTIES, field_values, json_values

TRACK_SCHEMA = pointer_to("components", "schemas", "Track")
PAGE_SCHEMA = pointer_to("components", "schemas", "MusicPage")


def _object(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any subset of the given keys (values of any type), maybe a stray key."""
    known = st.fixed_dictionaries({}, optional=dict.fromkeys(names, field_values))
    stray = st.dictionaries(st.text(max_size=8), field_values, max_size=1)
    return st.tuples(stray, known).map(lambda parts: parts[0] | parts[1])


music_material = _object(["style", "mood", "key", "bpm", "dur"]) | field_values
extend_dto = _object(["prompt", "description", "lyricsPrompt", "modelShowName"]) | field_values
records: st.SearchStrategy[Any] = st.tuples(
    _object(
        ["itemId", "titleEn", "status", "progress", "cover", "createTime", "updateTime"],
    ),
    st.fixed_dictionaries(
        {}, optional={"musicMaterial": music_material, "ltmMaterialExtendDto": extend_dto}
    ),
).map(lambda parts: parts[0] | parts[1])

any_record = records | json_values
cursors = (
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
    | st.sampled_from(["", " ", "a b", "a\n", "x" * 512, "x" * 513, "é", "\ud800"])
    | json_values
)


# --- helpers -------------------------------------------------------------------------------------


def assert_strict_json(value: Any) -> None:
    """Serialisable as strict JSON (no NaN/Infinity), and read back unchanged."""
    text = json.dumps(value, allow_nan=False)
    assert json.loads(text) == value


def _text(record: Any, *path: str) -> str | None:
    """What the mapping must give for a text field: a non-empty string as is, else None."""
    value = record
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, str) or not value:
        return None
    return re.sub("[\ud800-\udfff]", "\ufffd", value)  # UTF-8 cannot carry lone surrogates


# --- one record ---------------------------------------------------------------------------------


@PROPERTIES
@given(any_record)
def test_any_record_is_dropped_or_a_valid_track(record: Any) -> None:
    page = reshape_page({"records": [record], "hasNext": False})
    if not isinstance(record, dict):
        assert page["items"] == []
        return
    [track] = page["items"]
    check_schema(TRACK_SCHEMA, track, "the track")
    assert_strict_json(track)


@PROPERTIES
@given(any_record)
def test_the_written_out_dump_is_the_schemas(record: Any) -> None:
    # dump_track is TrackSchema's dump written out for speed: the same fields, values, order.
    expected = TrackSchema().dump(record if isinstance(record, dict) else {})
    track = dump_track(record)
    assert track == expected
    assert list(track) == list(expected)


@PROPERTIES
@given(records)
def test_track_schema_dumps_any_object(record: dict[str, Any]) -> None:
    track = TrackSchema().dump(record)
    check_schema(TRACK_SCHEMA, track, "the track")
    assert_strict_json(track)
    # Text fields pass through unchanged when they are non-empty strings, else are null.
    assert track["id"] == _text(record, "itemId")
    assert track["title"] == _text(record, "titleEn")
    assert track["cover_url"] == _text(record, "cover")
    for field in ("style", "mood", "key"):
        assert track[field] == _text(record, "musicMaterial", field)
    assert track["prompt"] == (
        _text(record, "ltmMaterialExtendDto", "prompt")
        or _text(record, "ltmMaterialExtendDto", "description")
    )
    assert track["lyrics"] == _text(record, "ltmMaterialExtendDto", "lyricsPrompt")
    assert track["model"] == _text(record, "ltmMaterialExtendDto", "modelShowName")


@PROPERTIES
@given(st.lists(any_record, max_size=5))
def test_records_keep_their_order_and_only_objects_survive(batch: list[Any]) -> None:
    page = reshape_page({"records": batch})
    objects = [r for r in batch if isinstance(r, dict)]
    assert [t["id"] for t in page["items"]] == [_text(r, "itemId") for r in objects]
    check_schema(PAGE_SCHEMA, page, "the page")
    assert_strict_json(page)


# --- whole pages --------------------------------------------------------------------------------

pages = st.fixed_dictionaries(
    {},
    optional={
        "records": st.lists(any_record, max_size=3) | json_values,
        "hasNext": st.booleans() | json_values,
        "cursor": cursors,
    },
)


@PROPERTIES
@given(pages)
def test_any_page_is_a_valid_music_page_or_an_upstream_error(page: dict[str, Any]) -> None:
    records = page.get("records")
    has_next = page.get("hasNext")
    cursor = page.get("cursor")
    usable = (
        (records is None or isinstance(records, list))
        and (has_next is None or isinstance(has_next, bool))
        and (has_next is not True or (isinstance(cursor, str) and CURSOR_RE.match(cursor)))
    )
    try:
        result = reshape_page(page)
    except UpstreamError:
        assert not usable, f"refused a usable page: {page!r:.300}"
        return
    assert usable, f"accepted an unusable page: {page!r:.300}"
    check_schema(PAGE_SCHEMA, result, "the page")
    assert_strict_json(result)
    assert result["has_more"] is (has_next is True)
    assert result["next_cursor"] == (cursor if has_next is True else None)
    assert len(result["items"]) == sum(isinstance(r, dict) for r in records or [])


# --- lone surrogates ---------------------------------------------------------------------------


def test_a_lone_surrogate_from_the_upstream_renders_as_utf8() -> None:
    record = json.loads(b'{"itemId": "abc", "titleEn": "Glass \\ud800 Horizon"}')
    page = reshape_page({"records": [record]})
    # What music_facade.music renders for the cache and the response body.
    json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode()
    assert page["items"][0]["title"] == "Glass \ufffd Horizon"
