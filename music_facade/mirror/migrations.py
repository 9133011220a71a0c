"""The mirror's schema: versioned steps per dialect, applied at open, and its tables for queries.

`migrate` runs in one transaction under a lock (PostgreSQL: an advisory transaction lock;
SQLite: BEGIN IMMEDIATE), so several processes opening the same database at once all succeed
and each step runs exactly once. A step is only ever appended, never edited: a database at
version N has run steps 1..N.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)

from .database import Database

# Tracks: one row per (alias, type, id); the sort and filter columns are derived from the
# Track (`body`, compact JSON) when it is written. Every sort index ends in (id, alias, type),
# the keyset's tie-breakers, so a page is one index range in either direction.
_SQLITE_V1 = (
    """CREATE TABLE tracks (
        n INTEGER PRIMARY KEY,
        alias TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
        job_id TEXT NOT NULL, status TEXT NOT NULL,
        title_key TEXT, style_key TEXT, mood_key TEXT, key_key TEXT,
        bpm REAL, duration REAL, created_at INTEGER, updated_at INTEGER,
        words TEXT NOT NULL, body TEXT NOT NULL,
        UNIQUE (alias, type, id))""",
    # External content: the index holds only the words; n is a stable rowid (a table without
    # an INTEGER PRIMARY KEY may renumber its rowids on VACUUM). prefix: 2- and 3-character
    # prefixes are indexed, so short search words stay cheap.
    """CREATE VIRTUAL TABLE tracks_fts USING fts5(
        words, content='tracks', content_rowid='n',
        tokenize='unicode61 remove_diacritics 0', prefix='2 3')""",
    """CREATE TRIGGER tracks_fts_insert AFTER INSERT ON tracks BEGIN
        INSERT INTO tracks_fts(rowid, words) VALUES (new.n, new.words); END""",
    """CREATE TRIGGER tracks_fts_delete AFTER DELETE ON tracks BEGIN
        INSERT INTO tracks_fts(tracks_fts, rowid, words) VALUES ('delete', old.n, old.words);
        END""",
    """CREATE TRIGGER tracks_fts_update AFTER UPDATE OF words ON tracks BEGIN
        INSERT INTO tracks_fts(tracks_fts, rowid, words) VALUES ('delete', old.n, old.words);
        INSERT INTO tracks_fts(rowid, words) VALUES (new.n, new.words); END""",
    """CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
        alias TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
        op TEXT NOT NULL, body TEXT)""",
    """CREATE TABLE track_counts (
        alias TEXT NOT NULL, type TEXT NOT NULL, status TEXT NOT NULL,
        n INTEGER NOT NULL, PRIMARY KEY (alias, type, status))""",
    """CREATE TABLE sync_state (
        alias TEXT NOT NULL, type TEXT NOT NULL,
        backfill_cursor TEXT, backfilled BOOLEAN NOT NULL DEFAULT 0,
        last_complete REAL, last_reconcile REAL, last_error TEXT, last_attempt REAL,
        PRIMARY KEY (alias, type))""",
    """CREATE TABLE leases (
        name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL)""",
    """CREATE TABLE mirror_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)""",
)

# PostgreSQL: the keyset's text columns compare bytewise (COLLATE "C"), as SQLite's do, so
# both engines order titles and ids alike whatever the cluster's locale.
_POSTGRESQL_V1 = (
    """CREATE TABLE tracks (
        alias TEXT COLLATE "C" NOT NULL, type TEXT COLLATE "C" NOT NULL,
        id TEXT COLLATE "C" NOT NULL,
        job_id TEXT NOT NULL, status TEXT NOT NULL,
        title_key TEXT COLLATE "C", style_key TEXT, mood_key TEXT, key_key TEXT,
        bpm DOUBLE PRECISION, duration DOUBLE PRECISION, created_at BIGINT, updated_at BIGINT,
        words TEXT NOT NULL, body TEXT NOT NULL,
        tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', words)) STORED,
        PRIMARY KEY (alias, type, id))""",
    "CREATE INDEX tracks_tsv ON tracks USING gin (tsv)",
    """CREATE TABLE changes (
        seq BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL,
        alias TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
        op TEXT NOT NULL, body TEXT)""",
    """CREATE TABLE track_counts (
        alias TEXT NOT NULL, type TEXT NOT NULL, status TEXT NOT NULL,
        n BIGINT NOT NULL, PRIMARY KEY (alias, type, status))""",
    """CREATE TABLE sync_state (
        alias TEXT NOT NULL, type TEXT NOT NULL,
        backfill_cursor TEXT, backfilled BOOLEAN NOT NULL DEFAULT false,
        last_complete DOUBLE PRECISION, last_reconcile DOUBLE PRECISION, last_error TEXT,
        last_attempt DOUBLE PRECISION, PRIMARY KEY (alias, type))""",
    """CREATE TABLE leases (
        name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE mirror_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)""",
)

# Indexes both dialects share: each sort's keyset, the library's order, the filters.
_COMMON_INDEXES = (
    "CREATE INDEX tracks_by_created ON tracks (created_at, id, alias, type)",
    "CREATE INDEX tracks_by_updated ON tracks (updated_at, id, alias, type)",
    "CREATE INDEX tracks_by_title ON tracks (title_key, id, alias, type)",
    "CREATE INDEX tracks_by_bpm ON tracks (bpm, id, alias, type)",
    "CREATE INDEX tracks_by_duration ON tracks (duration, id, alias, type)",
    "CREATE INDEX tracks_library ON tracks (alias, type, created_at, id)",
    "CREATE INDEX tracks_by_status ON tracks (status, alias, type)",
    # Covering for the count of an exact filter (a page's total): no lookup of the wide rows.
    "CREATE INDEX tracks_by_style ON tracks (style_key, alias, type, status)",
    "CREATE INDEX tracks_by_mood ON tracks (mood_key, alias, type, status)",
    "CREATE INDEX tracks_by_key ON tracks (key_key, alias, type, status)",
    "CREATE INDEX changes_by_track ON changes (alias, type, id, seq)",
    "CREATE INDEX changes_by_at ON changes (at)",
)

# Step 2: each change names its event (track.created, track.progress, ...) for /events. Rows
# logged before it have none and read as track.updated or track.deleted.
_V2_EVENT = ("ALTER TABLE changes ADD COLUMN event TEXT",)

# Step 3: the webhooks' outbox, one row per (webhook, change), written in the change's own
# transaction. `track` with alias and type keeps one track's deliveries in order; the body is
# the payload as first made, so every attempt sends the same bytes.
_DELIVERIES = """CREATE TABLE deliveries (
        id TEXT PRIMARY KEY, webhook TEXT NOT NULL, seq {int} NOT NULL,
        alias TEXT NOT NULL, type TEXT NOT NULL, track TEXT NOT NULL,
        event TEXT NOT NULL, body TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at {real} NOT NULL,
        claimed_until {real} NOT NULL DEFAULT 0, status TEXT NOT NULL,
        last_status INTEGER, created_at {real} NOT NULL)"""
_DELIVERY_INDEXES = (
    "CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at)",
    "CREATE INDEX deliveries_by_track ON deliveries (webhook, alias, type, track, seq)",
)
_SQLITE_V3 = (_DELIVERIES.format(int="INTEGER", real="REAL"), *_DELIVERY_INDEXES)
_POSTGRESQL_V3 = (_DELIVERIES.format(int="BIGINT", real="DOUBLE PRECISION"), *_DELIVERY_INDEXES)

STEPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "sqlite": (_SQLITE_V1 + _COMMON_INDEXES, _V2_EVENT, _SQLITE_V3),
    "postgresql": (_POSTGRESQL_V1 + _COMMON_INDEXES, _V2_EVENT, _POSTGRESQL_V3),
}

_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS mirror_schema (version INTEGER NOT NULL)"


def migrate(db: Database) -> int:
    """Bring the schema to the newest version; returns the version reached."""
    steps = STEPS[db.dialect]
    with db.write() as conn:
        conn.execute(text(_VERSION_TABLE))
        version = _current(conn)
        for number in range(version + 1, len(steps) + 1):
            for statement in steps[number - 1]:
                conn.execute(text(statement))
        if version < len(steps):
            conn.execute(text("UPDATE mirror_schema SET version = :v"), {"v": len(steps)})
    return len(steps)


def _current(conn: Connection) -> int:
    found = conn.execute(text("SELECT version FROM mirror_schema")).scalar()
    if found is None:
        conn.execute(text("INSERT INTO mirror_schema (version) VALUES (0)"))
        return 0
    return int(found)


# The tables as SQLAlchemy Core sees them (the columns every dialect has), for the queries.
metadata = MetaData()

tracks = Table(
    "tracks",
    metadata,
    Column("alias", Text, primary_key=True),
    Column("type", Text, primary_key=True),
    Column("id", Text, primary_key=True),
    Column("job_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("title_key", Text),
    Column("style_key", Text),
    Column("mood_key", Text),
    Column("key_key", Text),
    Column("bpm", Float),
    Column("duration", Float),
    Column("created_at", BigInteger),
    Column("updated_at", BigInteger),
    Column("words", Text, nullable=False),
    Column("body", Text, nullable=False),
)

changes = Table(
    "changes",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("at", Float, nullable=False),
    Column("alias", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("op", Text, nullable=False),
    Column("body", Text),
    Column("event", Text),  # step 2; None on rows logged before it
)

track_counts = Table(
    "track_counts",
    metadata,
    Column("alias", Text, primary_key=True),
    Column("type", Text, primary_key=True),
    Column("status", Text, primary_key=True),
    Column("n", Integer, nullable=False),
)

sync_state = Table(
    "sync_state",
    metadata,
    Column("alias", Text, primary_key=True),
    Column("type", Text, primary_key=True),
    Column("backfill_cursor", Text),
    Column("backfilled", Boolean, nullable=False),
    Column("last_complete", Float),
    Column("last_reconcile", Float),
    Column("last_error", Text),
    Column("last_attempt", Float),
)

leases = Table(
    "leases",
    metadata,
    Column("name", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("expires", Float, nullable=False),
)

mirror_meta = Table(
    "mirror_meta",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", BigInteger, nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Text, primary_key=True),  # the webhook-id, msg_...
    Column("webhook", Text, nullable=False),  # the [[webhooks]] name
    Column("seq", BigInteger, nullable=False),  # the change's
    Column("alias", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("track", Text, nullable=False),
    Column("event", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("claimed_until", Float, nullable=False),
    Column("status", Text, nullable=False),  # pending | delivered | failed
    Column("last_status", Integer),  # the last answer's HTTP status; None: no answer
    Column("created_at", Float, nullable=False),
)
