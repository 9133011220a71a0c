"""The mirror's database connection: one SQLAlchemy engine for SQLite or PostgreSQL.

`sqlite:///path` is the embedded default (the file is created with mode 0600, WAL, a busy
timeout); `postgresql://user@host:port/db` is opened with psycopg 3, whose waits cooperate with
gevent. The password is set on the URL object, never on its text, and never shown.
"""

from __future__ import annotations

import os
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
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get("mirror_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


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

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def open_database(url: str, password: str | None = None) -> Database:
    """Connect to the mirror's database (no schema work: see migrations.migrate)."""
    parsed = parse_url(url, password)
    if parsed.get_backend_name() == "sqlite":
        return Database(_sqlite_engine(parsed), "sqlite")
    return Database(_postgresql_engine(parsed), "postgresql")
