"""The mirror: each alias's library held in a database, kept in sync, queried with no upstream
call. Store is the one home of its reads and writes; TracksQuery is a parsed /tracks query.

The names load their module on first use: a service without [mirror] never imports SQLAlchemy
(about 18 MB per worker).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cursor import CursorError, Position
    from .database import Database, DatabaseURLError, open_database
    from .filters import TracksQuery, parse_tracks_query
    from .migrations import migrate
    from .search import match_clause, track_words, words
    from .store import (
        Change,
        ChangesExpired,
        ChangesPage,
        Entry,
        Store,
        SyncState,
        TracksPage,
    )

_HOMES = {
    "CursorError": "cursor",
    "Position": "cursor",
    "Database": "database",
    "DatabaseURLError": "database",
    "open_database": "database",
    "TracksQuery": "filters",
    "parse_tracks_query": "filters",
    "migrate": "migrations",
    "match_clause": "search",
    "track_words": "search",
    "words": "search",
    "Change": "store",
    "ChangesExpired": "store",
    "ChangesPage": "store",
    "Entry": "store",
    "Store": "store",
    "SyncState": "store",
    "TracksPage": "store",
}

__all__ = [
    "Change",
    "ChangesExpired",
    "ChangesPage",
    "CursorError",
    "Database",
    "DatabaseURLError",
    "Entry",
    "Position",
    "Store",
    "SyncState",
    "TracksPage",
    "TracksQuery",
    "match_clause",
    "migrate",
    "open_database",
    "parse_tracks_query",
    "track_words",
    "words",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)
