"""The /tracks query: parsing, every bad parameter at once, cursors bound to filters and sort."""

from __future__ import annotations

import pytest

from music_facade.errors import InvalidQuery
from music_facade.mirror import Position, TracksQuery, parse_tracks_query
from music_facade.mirror import cursor as cursors
from music_facade.mirror.database import DatabaseURLError, parse_url
from music_facade.mirror.search import match_clause, track_words, words


def errors_of(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    with pytest.raises(InvalidQuery) as caught:
        parse_tracks_query(pairs)
    assert caught.value.errors is not None
    return dict(caught.value.errors)


def test_defaults() -> None:
    query = parse_tracks_query([])
    assert query == TracksQuery()
    assert (query.sort, query.limit, query.sort_column, query.descending) == (
        "-created_at", 20, "created_at", True,
    )  # fmt: skip


def test_every_parameter_parsed() -> None:
    query = parse_tracks_query(
        [
            ("user", "studio,demo,studio"),
            ("type", "instrumental"),
            ("status", "completed,failed"),
            ("q", "Epic  ORCH-estral"),
            ("style", "Lo-fi Hip Hop"),
            ("mood", "CALM"),
            ("key", "F:Minor"),
            ("bpm_min", "90"),
            ("bpm_max", "120.5"),
            ("duration_min", "0"),
            ("duration_max", "300"),
            ("created_after", "2025-05-15T11:06:40+02:00"),
            ("created_before", "2025-05-15t09:06:41.0005z"),
            ("sort", "-bpm"),
            ("limit", "100"),
        ]
    )
    assert query.users == ("studio", "demo")
    assert query.type == "instrumental"
    assert query.statuses == ("completed", "failed")
    assert query.words == ("epic", "orch", "estral")
    assert (query.style, query.mood, query.key) == ("lo-fi hip hop", "calm", "f:minor")
    assert (query.bpm_min, query.bpm_max, query.duration_min, query.duration_max) == (
        90.0, 120.5, 0.0, 300.0,
    )  # fmt: skip
    # Offsets compare in UTC; a fraction rounds up to the next millisecond.
    assert query.created_after == 1_747_300_000_000
    assert query.created_before == 1_747_300_001_001
    assert (query.sort, query.sort_column, query.descending, query.limit) == (
        "-bpm", "bpm", True, 100,
    )  # fmt: skip


def test_every_bad_parameter_is_reported_at_once() -> None:
    found = errors_of(
        [
            ("user", "ok,no way"),
            ("type", "podcast"),
            ("status", "done"),
            ("q", ""),
            ("style", ""),
            ("bpm_max", "fast"),
            ("duration_min", "10"),
            ("duration_max", "5"),
            ("created_before", "2025-02-30T00:00:00Z"),
            ("sort", "random"),
            ("limit", "101"),
        ]
    )
    assert set(found) == {
        "user", "type", "status", "q", "style", "bpm_max", "duration_max", "created_before",
        "sort", "limit",
    }  # fmt: skip
    assert found["duration_max"] == ["must not be less than duration_min"]
    assert found["created_before"] == ["must be an RFC 3339 date-time with a valid date and time"]


def test_at_most_ten_bad_names_are_listed() -> None:
    # The names come from the caller: a bounded number of them is echoed.
    found = errors_of([(f"p{n:02}", "x") for n in range(25)])
    assert list(found) == [f"p{n:02}" for n in range(10)]


def test_unknown_and_repeated() -> None:
    found = errors_of([("colour", "red"), ("limit", "1"), ("limit", "2")])
    assert found["colour"][0].startswith("is not a parameter of /tracks")
    assert found["limit"] == ["given more than once"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("q", "x" * 201),
        ("limit", "0"),
        ("limit", "007"),
        ("bpm_min", "1e3"),
        ("bpm_min", "nan"),
        ("created_after", "2025-05-15T09:06:60Z"),
        ("created_after", "2025-05-15T09:06:40"),
        ("created_after", "2025-05-15 09:06:40Z"),
        ("user", ""),
        ("status", "completed,"),
    ],
)
def test_invalid_values(name: str, value: str) -> None:
    assert name in errors_of([(name, value)])


def test_q_is_one_to_two_hundred_characters() -> None:
    assert parse_tracks_query([("q", "x" * 200)]).words == ("x" * 200,)
    # Punctuation only: valid, and no word to match (every track).
    assert parse_tracks_query([("q", "!!")]).words == ()


def test_a_cursor_is_bound_to_filters_and_sort_but_not_limit() -> None:
    base = [("status", "completed"), ("sort", "title")]
    query = parse_tracks_query(base)
    token = cursors.encode(query.digest, Position("neon harbor", "abc", "studio", "song"))
    again = parse_tracks_query([*base, ("limit", "5"), ("cursor", token)])
    assert again.cursor == Position("neon harbor", "abc", "studio", "song")
    for other in (
        [("status", "failed"), ("sort", "title")],
        [("status", "completed"), ("sort", "-title")],
        [("status", "completed"), ("sort", "title"), ("q", "neon")],
        [("status", "completed"), ("sort", "title"), ("user", "studio")],
    ):
        found = errors_of([*other, ("cursor", token)])
        assert found == {
            "cursor": ["was made for other filters or another sort; start again without it"]
        }


@pytest.mark.parametrize("token", ["", "!!!", "bm90IGpzb24", "WzEsMiwzXQ", "x" * 3000])
def test_a_malformed_cursor(token: str) -> None:
    assert errors_of([("cursor", token)]) == {"cursor": ["is not a cursor of /tracks"]}


def test_a_cursor_value_of_the_wrong_kind() -> None:
    query = parse_tracks_query([("sort", "bpm")])
    token = cursors.encode(query.digest, Position("fast", "abc", "studio", "song"))
    assert errors_of([("sort", "bpm"), ("cursor", token)]) == {
        "cursor": ["is not a cursor of /tracks"]
    }
    nulls = cursors.encode(query.digest, Position(None, "abc", "studio", "song"))
    assert parse_tracks_query([("sort", "bpm"), ("cursor", nulls)]).cursor == Position(
        None, "abc", "studio", "song"
    )


def test_words_are_one_tokenizer_for_both_engines() -> None:
    assert words("Lo-fi Hip_Hop v3.5 ÉTÉ Straße") == ["lo", "fi", "hip", "hop", "v3", "5", "été",
                                                      "strasse"]  # fmt: skip
    track = {"title": "Neon Harbor", "style": "Synthwave", "mood": None, "prompt": "A calm, piece",
             "lyrics": "[Verse]", "key": "C:major"}  # fmt: skip
    assert track_words(track) == "neon harbor synthwave a calm piece verse"
    assert match_clause("sqlite", []) is None
    clause = match_clause("sqlite", ["and", "or", "and"])
    assert clause is not None
    assert clause.compile().params == {"fts_words": '"and"* "or"*'}
    clause = match_clause("postgresql", ["neon", "ha"])
    assert clause is not None
    assert clause.compile().params == {"fts_words": "'neon':* & 'ha':*"}


def test_database_urls() -> None:
    url = parse_url("postgresql://music@db.internal:5432/mirror", "s3cret-pass")
    assert url.drivername == "postgresql+psycopg"
    assert url.password == "s3cret-pass"
    shown = url.render_as_string(hide_password=True)
    assert "s3cret-pass" not in shown
    assert "s3cret-pass" not in repr(url)
    assert parse_url("sqlite:////var/lib/music/mirror.db").drivername == "sqlite+pysqlite"
    for bad in ("sqlite://", "sqlite:///:memory:", "mysql://x@y/z", "not a url"):
        with pytest.raises(DatabaseURLError):
            parse_url(bad, "s3cret-pass")
