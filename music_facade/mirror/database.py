"""The mirror's database connection: one SQLAlchemy engine for SQLite or PostgreSQL.

`sqlite:///path` is the embedded default (the file is created with mode 0600, WAL, a busy
timeout); `postgresql://user@host:port/db` is opened with psycopg 3, whose waits cooperate with
gevent. The password is set on the URL object, never on its text, and never shown.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# Every transaction that writes the change log takes this PostgreSQL advisory lock first, so
# change seqs commit in the order they were drawn (a reader never passes a seq that later
# commits with a smaller number). SQLite's BEGIN IMMEDIATE serializes writers by itself.
WRITE_LOCK = 0x6D6972726F72  # "mirror"
BUSY_TIMEOUT_MS = 5000
# Reads through the operating system's page cache, shared by every connection and process,
# instead of each connection's own small cache: a /tracks page touches wide rows (the Track).
MMAP_BYTES = 256 * 1024 * 1024
CONNECT_TIMEOUT_S = 5


class DatabaseURLError(ValueError):
    """The mirror's database URL cannot be used; the message never holds the password."""


def parse_url(url: str, password: str | None = None) -> URL:
    """The engine URL for a configured one: postgresql:// → psycopg 3, the password set on it."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseURLError(
            "the mirror database must be a URL: sqlite:///path or postgresql://user@host/db"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise DatabaseURLError("a SQLite mirror needs a file: sqlite:///path/to/mirror.db")
        return parsed.set(drivername="sqlite+pysqlite")
    if backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
        if password is not None:
            parsed = parsed.set(password=password)
        return parsed
    raise DatabaseURLError(f"unsupported mirror database {backend!r}: use sqlite or postgresql")


def _create_private_file(path: str) -> None:
    """Create the SQLite file readable by its owner only, before SQLite creates it otherwise.

    SQLite gives its -wal and -shm files the database file's mode, so they are private too.
    """
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


def _sqlite_engine(url: URL) -> Engine:
    assert url.database is not None
    _create_private_file(url.database)
    engine = create_engine(url, pool_size=5, max_overflow=5)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit in the driver: the "begin" listener below says how each transaction
        # starts, so writers can take the write lock up front (BEGIN IMMEDIATE) instead of
        # failing to upgrade a read lock while another process writes.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get("mirror_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the file to WAL, retrying while another process does the same.

    Changing the journal mode of a new file needs its exclusive lock, and SQLite answers
    "database is locked" at once instead of waiting out the busy timeout: replicas that open one
    fresh file together would otherwise fail to start. Bounded by the busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)  # cooperative under gevent (time is patched)


def _postgresql_engine(url: URL) -> Engine:
    return create_engine(
        url,
        pool_size=5,
        max_overflow=5,
        pool_pre_ping=True,  # a restarted server's dead connections are replaced, not used
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "music-facade"},
    )


@dataclass
class Database:
    """An open mirror database: its engine, dialect, and how transactions start."""

    engine: Engine
    dialect: str  # "sqlite" | "postgresql"

    def describe(self) -> str:
        """The URL as it may be shown: the password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def write(self, *, lock: bool = True) -> Iterator[Connection]:
        """One write transaction; lock: serialized with every other writer of the change log."""
        with self.engine.connect() as plain:
            conn = plain.execution_options(mirror_write=True)
            with conn.begin():
                if lock and self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK})
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read transaction: every statement in it sees the same snapshot."""
        with self.engine.connect() as plain:
            conn = plain
            if self.dialect == "postgresql":
                conn = plain.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def analyze(self, total: int, aliases: int) -> None:
        """Refresh the planner's statistics of the tracks table.

        PostgreSQL samples the table, and VACUUM marks the pages all-visible (so a count is
        read from an index alone) and moves the search index's pending entries into the
        index proper (a freshly written GIN index is otherwise scanned linearly). SQLite keeps
        no statistics until asked, and without them sorts a whole table rather than walk the
        sort's index; its ANALYZE reads every row (blocking the gevent loop for as long), and
        a sampled one misjudges the leading alias column. The mirror's shape is known, so
        SQLite is told it instead: `total` rows, `aliases` aliases, two types, four statuses,
        a few values per exact filter.
        """
        if self.dialect == "postgresql":
            with self.engine.connect() as plain:  # VACUUM runs outside a transaction
                plain.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "VACUUM (ANALYZE) tracks"
                )
            return
        with self.write(lock=False) as conn:
            conn.exec_driver_sql("PRAGMA analysis_limit = 1")
            conn.exec_driver_sql("ANALYZE mirror_meta")  # makes sqlite_stat1 if it is missing
            conn.exec_driver_sql("DELETE FROM sqlite_stat1 WHERE tbl = 'tracks'")
            for index, stat in _sqlite_stats(max(total, 1), max(aliases, 1)).items():
                conn.exec_driver_sql(
                    "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('tracks', ?, ?)",
                    (index, stat),
                )
            conn.exec_driver_sql("ANALYZE sqlite_schema")  # loads them

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _sqlite_stats(n: int, aliases: int) -> dict[str, str]:
    """sqlite_stat1 rows: the row count, then rows per distinct prefix of each index."""

    def per(*parts: int) -> str:
        return " ".join(str(max(1, n // part)) for part in parts)

    keyset = f"{n} {per(n // 10)} 1 1 1"  # sort columns: near-unique values, then the keys
    exact = f"{n} {per(10, 10 * aliases, 20 * aliases, 80 * aliases)}"
    return {
        "sqlite_autoindex_tracks_1": f"{n} {per(aliases, 2 * aliases)} 1",
        "tracks_library": f"{n} {per(aliases, 2 * aliases, n // 2)} 1",
        "tracks_by_created": keyset,
        "tracks_by_updated": keyset,
        "tracks_by_title": keyset,
        "tracks_by_bpm": keyset,
        "tracks_by_duration": keyset,
        "tracks_by_status": f"{n} {per(4, 4 * aliases, 8 * aliases)}",
        "tracks_by_style": exact,
        "tracks_by_mood": exact,
        "tracks_by_key": exact,
    }


def open_database(url: str, password: str | None = None) -> Database:
    """Connect to the mirror's database (no schema work: see migrations.migrate)."""
    parsed = parse_url(url, password)
    if parsed.get_backend_name() == "sqlite":
        return Database(_sqlite_engine(parsed), "sqlite")
    return Database(_postgresql_engine(parsed), "postgresql")
