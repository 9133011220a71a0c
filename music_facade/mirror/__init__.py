"""The mirror: each alias's library held in a database, kept in sync, queried with no upstream
call. Store is the one home of its reads and writes; TracksQuery is a parsed /tracks query."""

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
