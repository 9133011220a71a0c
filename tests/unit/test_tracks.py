"""Reshaping: upstream record → Track, upstream page → public page."""

from __future__ import annotations

from typing import Any

import pytest

from music_facade.core.tracks import TrackSchema, reshape_page
from music_facade.errors import UpstreamError

FULL = {
    "itemId": "abc123",
    "job_id": "user:12345-tempolor:user_id-job:abc123",
    "userId": "user_id",
    "titleEn": "Epic Orchestral",
    "cover": "https://example.com/cover.png",
    "mp3OssId": "ai_material/mp3/abc123.mp3",
    "status": 30,
    "status_name": "COMPLETED",
    "progress": 100,
    "musicMaterial": {"style": "Orchestral", "mood": "Dark", "key": "F:minor", "bpm": 130,
                      "dur": 180.5, "seed": 1234567890},
    "createTime": 1716565425000,
    "updateTime": 1716565700999,
    "ltmMaterialExtendDto": {"lyricsPrompt": "La la", "description": "desc", "prompt": "A piece",
                             "modelShowName": "v3.5", "model": "internal-model-name"},
}  # fmt: skip
KEYS = set(TrackSchema().fields)


def track(record: Any) -> dict[str, Any]:
    page = reshape_page({"records": [record], "hasNext": False})
    assert len(page["items"]) == 1
    item: dict[str, Any] = page["items"][0]
    assert set(item) == KEYS
    return item


def test_full_record() -> None:
    assert track(FULL) == {
        "id": "abc123",
        "title": "Epic Orchestral",
        "status": "completed",
        "progress": 100,
        "cover_url": "https://example.com/cover.png",
        "style": "Orchestral",
        "mood": "Dark",
        "key": "F:minor",
        "bpm": 130,
        "duration_seconds": 180.5,
        "prompt": "A piece",
        "lyrics": "La la",
        "model": "v3.5",
        "created_at": "2024-05-24T15:43:45Z",
        "updated_at": "2024-05-24T15:48:20Z",
    }


def test_nothing_private_leaks() -> None:
    text = repr(track(FULL))
    for private in ("user:12345", "user_id", "ai_material", "1234567890", "internal-model"):
        assert private not in text


@pytest.mark.parametrize(
    ("status", "expected"),
    [(0, "generating"), (9, "generating"), (9.5, "generating"), (10, "failed"), (29, "failed"),
     (30, "completed"), (1000, "completed"), (-1, "unknown"), (None, "unknown"), ("30", "unknown"),
     (True, "unknown"), ({}, "unknown")],
)  # fmt: skip
def test_status_bands(status: Any, expected: str) -> None:
    assert track({"status": status})["status"] == expected
    assert track({})["status"] == "unknown"


@pytest.mark.parametrize(
    ("progress", "expected"),
    [(0, 0), (55, 55), (54.6, 55), (100, 100), (101, None), (-1, None), ("50", None), (True, None)],
)
def test_progress(progress: Any, expected: int | None) -> None:
    assert track({"progress": progress})["progress"] == expected


def test_missing_null_and_empty_become_null() -> None:
    for record in ({}, dict.fromkeys(FULL), dict.fromkeys(FULL, "")):
        item = track(record)
        assert item["status"] == "unknown"
        assert all(item[k] is None for k in KEYS - {"status"}), item
    assert track({"musicMaterial": None, "ltmMaterialExtendDto": "x"})["style"] is None


def test_prompt_falls_back_to_description() -> None:
    assert track({"ltmMaterialExtendDto": {"description": "d"}})["prompt"] == "d"
    assert track({"ltmMaterialExtendDto": {"prompt": "", "description": "d"}})["prompt"] == "d"
    assert track({"ltmMaterialExtendDto": {"prompt": None}})["prompt"] is None


@pytest.mark.parametrize(
    "value", [True, "1716565425000", -5, 10**20, float("inf"), float("nan"), [1], {"a": 1}]
)
def test_bad_timestamps_and_numbers_become_null(value: Any) -> None:
    item = track({"createTime": value, "musicMaterial": {"bpm": value, "dur": value}})
    assert item["created_at"] is None
    assert item["bpm"] is None
    assert item["duration_seconds"] is None


def test_wrong_types_become_null() -> None:
    item = track({"itemId": 5, "titleEn": ["x"], "cover": {"u": 1}, "musicMaterial": [1, 2]})
    assert item["id"] is None
    assert item["title"] is None
    assert item["cover_url"] is None
    assert item["style"] is None


def test_non_object_records_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    page = reshape_page({"records": ["oops", 42, None, [], {"itemId": "ok"}], "hasNext": False})
    assert [i["id"] for i in page["items"]] == ["ok"]
    assert caplog.text.count("dropped upstream record") == 4


def test_page_fields() -> None:
    assert reshape_page({"records": [], "hasNext": True, "cursor": "c2"}) == {
        "items": [],
        "next_cursor": "c2",
        "has_more": True,
    }
    last: dict[str, object] = {"items": [], "next_cursor": None, "has_more": False}
    assert reshape_page({"records": [], "hasNext": False, "cursor": "ignored"}) == last
    assert reshape_page({}) == last  # no records: an empty page
    assert reshape_page({"records": None, "hasNext": None}) == last


@pytest.mark.parametrize(
    "page",
    [
        {"records": "nope"},
        {"records": {"a": 1}},
        {"records": [], "hasNext": "true"},
        {"records": [], "hasNext": True},
        {"records": [], "hasNext": True, "cursor": ""},
        {"records": [], "hasNext": True, "cursor": 7},
        {"records": [], "hasNext": True, "cursor": "has space"},
        {"records": [], "hasNext": True, "cursor": "x" * 513},
    ],
)
def test_misshapen_pages_are_upstream_errors(page: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError):
        reshape_page(page)


def test_dump_track_is_the_schema_dump() -> None:
    # reshape_page skips marshmallow's serialize machinery for speed; the output must not change.
    from music_facade.core.tracks import _TRACK, dump_track
    from music_facade.sandbox.data import ACCOUNTS

    records = [r for account in ACCOUNTS.values() for t in ("song", "instrumental")
               for r in account.records(t)]  # fmt: skip
    assert records
    for record in [*records, {}, {"musicMaterial": 5, "status": "x", "createTime": 1e30}]:
        assert dump_track(record) == _TRACK.dump(record)
        assert list(dump_track(record)) == list(_TRACK.dump(record))
