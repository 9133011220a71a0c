"""Word search: one tokenizer for both engines, and the per-dialect "every word as a prefix".

A track's searchable text (title, style, mood, prompt, lyrics) is stored as its casefolded
words joined by spaces, tokenised here by one regular expression, so SQLite's FTS5 and
PostgreSQL's `to_tsvector('simple', …)` index the same words and agree on what matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import TextClause

# Runs of letters and digits: "Lo-fi" is "lo" and "fi", "v3.5" is "v3" and "5".
WORD_RE = re.compile(r"[^\W_]+")
SEARCHED_FIELDS = ("title", "style", "mood", "prompt", "lyrics")


def words(value: str) -> list[str]:
    """The casefolded words of a text, in order."""
    return WORD_RE.findall(value.casefold())


def track_words(track: Mapping[str, Any]) -> str:
    """The `words` column of a Track: the words of its searched fields, joined by spaces."""
    found: list[str] = []
    for field in SEARCHED_FIELDS:
        value = track.get(field)
        if isinstance(value, str):
            found.extend(words(value))
    return " ".join(found)


def match_clause(dialect: str, query_words: Iterable[str]) -> TextClause | None:
    """A WHERE clause on `tracks`: every word is a prefix of one of the track's words.

    None when there is no word to match (every track matches).
    """
    # Imported here: parsing a /tracks query (this module's words) must not load SQLAlchemy.
    from sqlalchemy import text

    unique = list(dict.fromkeys(query_words))
    if not unique:
        return None
    if dialect == "sqlite":
        # Each word quoted (so "and", "or", "near" stay words), * for prefix; space is AND.
        expression = " ".join(f'"{word}"*' for word in unique)
        return text(
            "tracks.n IN (SELECT rowid FROM tracks_fts WHERE tracks_fts MATCH :fts_words)"
        ).bindparams(fts_words=expression)
    # A quoted lexeme with :* is a prefix match; 'simple' lowercases and keeps every word.
    expression = " & ".join(f"'{word}':*" for word in unique)
    return text("tracks.tsv @@ to_tsquery('simple', :fts_words)").bindparams(fts_words=expression)
