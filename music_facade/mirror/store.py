"""Store: every read and write of the mirror, on SQLite or PostgreSQL alike.

Each write is one transaction that also appends to the change log; reads make no upstream
call. A track's public shape is kept as it was written (`body`, compact JSON); the columns
beside it (status, sort keys, search words) are derived from it on the way in. The job_id is
stored for the syncer and never leaves through a Track, a change or a page.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from .. import jsoncodec
from ..core.change_events import (
    COMPLETED,
    CREATED,
    DELETED,
    FAILED,
    PROGRESS,
    UPDATED,
)
from ..core.query import TYPES
from ..errors import Problem
from . import cursor as cursors
from .database import Database, open_database
from .filters import STATUSES, TracksQuery
from .migrations import changes, leases, migrate, mirror_meta, sync_state, track_counts, tracks
from .outbox import Outbox, Route, enqueue
from .search import match_clause, track_words

DEFAULT_RETENTION = 604800.0  # seconds: a week of superseded changes
LIBRARY_BATCH = 500
_CHUNK = 500  # ids per IN (...) list
_HORIZON = "horizon"
_ANALYZED = "analyzed"  # how many tracks the planner's statistics were last gathered at
ANALYZE_FROM = 1000  # tracks; then again each time the mirror has doubled


class ChangesExpired(Problem, code="changes_expired"):
    """`since` is older than the retained change log: read /tracks again, then follow on."""


@dataclass(frozen=True)
class Entry:
    """One track as the syncer writes it."""

    id: str  # the upstream itemId (Track.id)
    job_id: str  # stored, never returned, never logged at INFO
    track: dict[str, Any]  # the public Track (music_facade.core.tracks.dump_track)
    updated_ms: int | None  # the record's updateTime (epoch ms), for sort=updated_at


def event_of(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """The name of an upsert from the stored Track before it (None: there was none) to after."""
    if old is None:
        return CREATED
    was, now = old.get("status"), new.get("status")
    if now == "completed" and was != "completed":
        return COMPLETED
    if now == "failed" and was != "failed":
        return FAILED
    if was == now == "generating" and old.get("progress") != new.get("progress"):
        return PROGRESS
    return UPDATED


@dataclass(frozen=True)
class Change:
    """One entry of the change log."""

    seq: int
    op: str  # "upsert" | "delete"
    user: str  # the alias
    type: str
    id: str
    track: dict[str, Any] | None  # None for a delete
    at: float  # epoch seconds
    # What happened (EVENTS); a change logged before the log named them reads as
    # track.updated or track.deleted.
    event: str = UPDATED

    def data(self) -> dict[str, Any]:
        """What /events and webhooks send of it: the Track, or the id of a deleted one."""
        if self.op == "delete":
            return {"user": self.user, "type": self.type, "id": self.id}
        return {"user": self.user, "type": self.type, "track": self.track}


@dataclass(frozen=True)
class SyncState:
    """Where the sync of one (alias, type) stands."""

    backfill_cursor: str | None = None  # where an unfinished backfill resumes (None: the top)
    backfilled: bool = False  # the first full walk finished
    last_complete: float | None = None  # epoch seconds of the last complete sync
    last_reconcile: float | None = None
    last_error: str | None = None  # short and secret-free
    last_attempt: float | None = None


_STATE_FIELDS = tuple(field.name for field in fields(SyncState))


@dataclass(frozen=True)
class TracksPage:
    """One page of /tracks: Track + "user" + "type" each, and where the next page starts."""

    items: list[dict[str, Any]]
    next_cursor: str | None
    has_more: bool
    total: int


@dataclass(frozen=True)
class ChangesPage:
    """Changes in the order they happened; `next` is the `since` of the following read."""

    changes: list[Change]
    next: int
    has_more: bool


class Store:
    """The mirror's database: tracks, their change log, sync state and leases."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float],
        changes_retention: float,
        webhooks: Sequence[Route] = (),
    ) -> None:
        self._db = db
        self._clock = clock
        self._retention = changes_retention
        self._routes = tuple(webhooks)  # each change's deliveries are made with it
        self.outbox = Outbox(db, clock)
        self.dialect = db.dialect
        self._insert = sqlite.insert if db.dialect == "sqlite" else postgresql.insert

    @classmethod
    def open(
        cls,
        url: str,
        password: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        changes_retention: float = DEFAULT_RETENTION,
        webhooks: Sequence[Route] = (),
    ) -> Store:
        """Connect and bring the schema up to date (safe when several processes start at once)."""
        db = open_database(url, password)
        try:
            migrate(db)
        except BaseException:
            db.close()
            raise
        return cls(db, clock=clock, changes_retention=changes_retention, webhooks=webhooks)

    def describe(self) -> str:
        """The database URL as it may be shown (password hidden)."""
        return self._db.describe()

    def close(self) -> None:
        """Close every connection."""
        self._db.close()

    # --- writes ---------------------------------------------------------------------------

    def write(self, alias: str, type_: str, entries: Sequence[Entry]) -> list[Change]:
        """Upsert tracks in one transaction: each new or changed one gets an "upsert" change."""
        latest = {entry.id: entry for entry in entries}  # a repeated id: its last entry wins
        now = self._clock()
        with self._db.write() as conn:
            existing = self._existing(conn, alias, type_, list(latest))
            rows: list[dict[str, Any]] = []
            events: list[str] = []
            quiet: list[dict[str, Any]] = []
            deltas: dict[str, int] = {}
            for entry in latest.values():
                row = _row(alias, type_, entry)
                old = existing.get(entry.id)
                before = None if old is None else jsoncodec.loads(old.body)
                if old is not None and before == entry.track:
                    if (old.job_id, old.updated_at) != (row["job_id"], row["updated_at"]):
                        quiet.append(row)  # not part of the public Track: no change
                    continue
                rows.append(row)
                events.append(event_of(before, entry.track))
                if old is not None:
                    deltas[old.status] = deltas.get(old.status, 0) - 1
                deltas[row["status"]] = deltas.get(row["status"], 0) + 1
            for batch in (rows, quiet):
                if batch:
                    conn.execute(self._upsert_tracks(), batch)
            made = self._log(
                conn,
                now,
                [
                    (alias, type_, row["id"], "upsert", row["body"], event)
                    for row, event in zip(rows, events, strict=True)
                ],
            )
            enqueue(conn, made, self._routes, now)
            self._count(conn, alias, type_, deltas)
        if sum(deltas.values()) > 0:
            self._refresh_statistics()
        return made

    def _refresh_statistics(self) -> None:
        """Gather the planner's statistics again once the mirror has doubled since last time."""
        with self._db.read() as conn:
            total = int(conn.execute(select(func.sum(track_counts.c.n))).scalar() or 0)
            aliases = conn.execute(select(func.count(track_counts.c.alias.distinct()))).scalar()
            analyzed = _meta(conn, _ANALYZED)
        if total < ANALYZE_FROM or total < 2 * analyzed:
            return
        self._db.analyze(total, int(aliases or 1))
        with self._db.write(lock=False) as conn:
            self._set_meta(conn, _ANALYZED, total)

    def _set_meta(self, conn: Connection, name: str, value: int) -> None:
        statement = self._insert(mirror_meta).values(name=name, value=value)
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[mirror_meta.c.name], set_={"value": value}
            )
        )

    def delete(self, alias: str, type_: str, ids: Iterable[str]) -> list[Change]:
        """Remove tracks in one transaction, one "delete" change each (absent ids: nothing)."""
        wanted = list(dict.fromkeys(ids))
        now = self._clock()
        with self._db.write() as conn:
            existing = self._existing(conn, alias, type_, wanted)
            gone = [id_ for id_ in wanted if id_ in existing]
            deltas: dict[str, int] = {}
            for id_ in gone:
                status = existing[id_].status
                deltas[status] = deltas.get(status, 0) - 1
            for chunk in _chunks(gone):
                conn.execute(
                    delete(tracks).where(
                        tracks.c.alias == alias, tracks.c.type == type_, tracks.c.id.in_(chunk)
                    )
                )
            made = self._log(
                conn, now, [(alias, type_, id_, "delete", None, DELETED) for id_ in gone]
            )
            enqueue(conn, made, self._routes, now)
            self._count(conn, alias, type_, deltas)
        return made

    def _existing(self, conn: Connection, alias: str, type_: str, ids: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        columns = (tracks.c.id, tracks.c.body, tracks.c.status, tracks.c.job_id)
        for chunk in _chunks(ids):
            result = conn.execute(
                select(*columns, tracks.c.updated_at).where(
                    tracks.c.alias == alias, tracks.c.type == type_, tracks.c.id.in_(chunk)
                )
            )
            found.update((row.id, row) for row in result)
        return found

    def _upsert_tracks(self) -> Any:
        statement = self._insert(tracks)
        updated = {
            column.name: statement.excluded[column.name]
            for column in tracks.columns
            if column.name not in ("alias", "type", "id")
        }
        return statement.on_conflict_do_update(
            index_elements=[tracks.c.alias, tracks.c.type, tracks.c.id], set_=updated
        )

    def _log(
        self,
        conn: Connection,
        now: float,
        made: list[tuple[str, str, str, str, str | None, str]],
    ) -> list[Change]:
        if not made:
            return []
        rows = [
            {"at": now, "alias": a, "type": t, "id": i, "op": op, "body": body, "event": event}
            for a, t, i, op, body, event in made
        ]
        statement = changes.insert().returning(changes.c.seq, sort_by_parameter_order=True)
        seqs = [row.seq for row in conn.execute(statement, rows)]
        return [
            Change(seq, op, a, t, i, None if body is None else jsoncodec.loads(body), now, event)
            for seq, (a, t, i, op, body, event) in zip(seqs, made, strict=True)
        ]

    def _count(self, conn: Connection, alias: str, type_: str, deltas: dict[str, int]) -> None:
        rows = [
            {"alias": alias, "type": type_, "status": status, "n": n}
            for status, n in deltas.items()
            if n
        ]
        if rows:
            statement = self._insert(track_counts)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[
                        track_counts.c.alias,
                        track_counts.c.type,
                        track_counts.c.status,
                    ],
                    set_={"n": track_counts.c.n + statement.excluded.n},
                ),
                rows,
            )

    def save_state(self, alias: str, type_: str, **values: Any) -> None:
        """Set some fields of the (alias, type)'s SyncState; the others keep their values."""
        unknown = set(values) - set(_STATE_FIELDS)
        if unknown:
            raise TypeError(f"not fields of SyncState: {', '.join(sorted(unknown))}")
        statement = self._insert(sync_state).values(
            alias=alias, type=type_, **{"backfilled": False, **values}
        )
        if values:
            statement = statement.on_conflict_do_update(
                index_elements=[sync_state.c.alias, sync_state.c.type], set_=values
            )
        else:
            statement = statement.on_conflict_do_nothing()
        with self._db.write(lock=False) as conn:
            conn.execute(statement)

    def lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew a named lease if it is free, expired or already ours."""
        now = self._clock()
        with self._db.write(lock=False) as conn:
            # Conditional: under concurrent takers the row's lock makes exactly one match.
            renewed = conn.execute(
                update(leases)
                .where(
                    leases.c.name == name, or_(leases.c.holder == holder, leases.c.expires <= now)
                )
                .values(holder=holder, expires=now + ttl)
            )
            if renewed.rowcount == 1:
                return True
            # RETURNING, not rowcount: a row comes back only when this insert made it.
            taken = conn.execute(
                self._insert(leases)
                .values(name=name, holder=holder, expires=now + ttl)
                .on_conflict_do_nothing()
                .returning(leases.c.name)
            )
            return taken.first() is not None

    def release(self, name: str, holder: str) -> None:
        """Give the lease up, if it is ours."""
        with self._db.write(lock=False) as conn:
            conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))

    def prune(self) -> int:
        """Apply the change log's retention (and the outbox's: delivered and failed deliveries
        made before it); returns how many changes were removed.

        A change older than the retention goes only when a later change of the same track
        exists, or when it is a delete with nothing left before it: replaying the log from its
        start still gives the current mirror. The horizon is the largest seq removed.
        """
        cutoff = self._clock() - self._retention
        other = changes.alias("other")
        same_track = and_(
            other.c.alias == changes.c.alias,
            other.c.type == changes.c.type,
            other.c.id == changes.c.id,
        )
        superseded = and_(
            changes.c.at < cutoff, exists().where(same_track, other.c.seq > changes.c.seq)
        )
        # After the first pass, an old delete has nothing before it left: everything before
        # it was older still and superseded by it.
        lone_delete = and_(
            changes.c.at < cutoff,
            changes.c.op == "delete",
            ~exists().where(same_track, other.c.seq != changes.c.seq),
        )
        removed = 0
        with self._db.write() as conn:
            horizon = _horizon(conn)
            for condition in (superseded, lone_delete):
                top = conn.execute(select(func.max(changes.c.seq)).where(condition)).scalar()
                if top is None:
                    continue
                horizon = max(horizon, int(top))
                removed += conn.execute(delete(changes).where(condition)).rowcount
            if removed:
                self._set_meta(conn, _HORIZON, horizon)
        # Finished deliveries are kept as long as the changes they told of.
        self.outbox.prune(cutoff)
        return removed

    # --- reads ----------------------------------------------------------------------------

    def ids(self, alias: str, type_: str) -> set[str]:
        """Every stored id of the (alias, type)."""
        with self._db.read() as conn:
            result = conn.execute(
                select(tracks.c.id).where(tracks.c.alias == alias, tracks.c.type == type_)
            )
            return {row.id for row in result}

    def stored(self, alias: str, type_: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """id → stored Track, for those of the given ids that are stored."""
        with self._db.read() as conn:
            found = self._existing(conn, alias, type_, list(dict.fromkeys(ids)))
        return {id_: jsoncodec.loads(row.body) for id_, row in found.items()}

    def generating(self, alias: str, type_: str) -> list[tuple[str, str]]:
        """(id, job_id) of the (alias, type)'s tracks still generating."""
        with self._db.read() as conn:
            result = conn.execute(
                select(tracks.c.id, tracks.c.job_id)
                .where(
                    tracks.c.status == "generating",
                    tracks.c.alias == alias,
                    tracks.c.type == type_,
                )
                .order_by(tracks.c.id)
            )
            return [(row.id, row.job_id) for row in result]

    def job_id(self, alias: str, id_: str) -> str | None:
        """The job_id of the alias's track with that id (either type), or None."""
        with self._db.read() as conn:
            found = conn.execute(
                select(tracks.c.job_id)
                .where(tracks.c.alias == alias, tracks.c.type.in_(TYPES), tracks.c.id == id_)
                .limit(1)
            ).scalar()
        return None if found is None else str(found)

    def state(self, alias: str, type_: str) -> SyncState:
        """The (alias, type)'s sync state (the defaults before its first sync)."""
        with self._db.read() as conn:
            row = conn.execute(
                select(*(sync_state.c[name] for name in _STATE_FIELDS)).where(
                    sync_state.c.alias == alias, sync_state.c.type == type_
                )
            ).first()
        if row is None:
            return SyncState()
        return SyncState(**{name: getattr(row, name) for name in _STATE_FIELDS})

    def oldest_complete(self, aliases: Sequence[str], types: Sequence[str]) -> float | None:
        """The oldest last complete sync among these (alias, type) pairs, in one read; None
        when one of them was never completely synced."""
        with self._db.read() as conn:
            found = list(
                conn.execute(
                    select(sync_state.c.last_complete).where(
                        sync_state.c.alias.in_(list(aliases)),
                        sync_state.c.type.in_(list(types)),
                        sync_state.c.last_complete.is_not(None),
                    )
                ).scalars()
            )
        if not aliases or len(found) < len(set(aliases)) * len(set(types)):
            return None
        return float(min(found))

    def counts(self, alias: str, type_: str) -> dict[str, int]:
        """The (alias, type)'s tracks by status, and "total"."""
        found = dict.fromkeys(STATUSES, 0)
        with self._db.read() as conn:
            result = conn.execute(
                select(track_counts.c.status, track_counts.c.n).where(
                    track_counts.c.alias == alias, track_counts.c.type == type_
                )
            )
            for row in result:
                found[row.status] = found.get(row.status, 0) + int(row.n)
        found["total"] = sum(found.values())
        return found

    def version(self) -> int:
        """The newest change seq (0 if none); never goes back, even after pruning."""
        with self._db.read() as conn:
            return _version(conn)

    def tracks(
        self, query: TracksQuery, aliases: Sequence[str], total: int | None = None
    ) -> TracksPage:
        """One page of the aliases' tracks matching the query, and the total of matches.

        `total`: the matches already counted at this version of the mirror (a later page of
        the same filter), so that only the first page of a walk counts them.
        """
        if not aliases:
            return TracksPage([], None, False, 0)
        conditions = _conditions(self.dialect, query, aliases)
        with self._db.read() as conn:
            if query.words and self.dialect == "postgresql":
                rows, counted = _search_page(conn, conditions, query, query.cursor, query.limit + 1)
                total = counted if counted is not None else total
            else:
                rows = _page(conn, conditions, query, query.cursor, query.limit + 1)
            if total is None:
                total = self._total(conn, query, aliases, conditions)
        has_more = len(rows) > query.limit
        rows = rows[: query.limit]
        items = [_item(row) for row in rows]
        next_cursor = None
        if has_more:
            last = rows[-1]
            position = cursors.Position(last.value, last.id, last.alias, last.type)
            next_cursor = cursors.encode(query.digest, position)
        return TracksPage(items, next_cursor, has_more, total)

    def _total(
        self,
        conn: Connection,
        query: TracksQuery,
        aliases: Sequence[str],
        conditions: list[Any],
    ) -> int:
        # Filters the per-(alias, type, status) counts answer: no count over the tracks.
        if _only_counted(query):
            counted: list[ColumnElement[bool]] = [track_counts.c.alias.in_(aliases)]
            if query.type is not None:
                counted.append(track_counts.c.type == query.type)
            if query.statuses is not None:
                counted.append(track_counts.c.status.in_(query.statuses))
            found = conn.execute(select(func.sum(track_counts.c.n)).where(*counted)).scalar()
        else:
            found = conn.execute(
                select(func.count()).select_from(tracks).where(*conditions)
            ).scalar()
        return int(found or 0)

    def library(self, alias: str, type_: str) -> Iterator[dict[str, Any]]:
        """Every Track of the (alias, type), newest first, in batches (a transaction each)."""
        query = TracksQuery(type=type_, sort="-created_at", limit=LIBRARY_BATCH)
        conditions = _conditions(self.dialect, query, [alias])
        position: cursors.Position | None = None
        while True:
            with self._db.read() as conn:
                rows = _page(conn, conditions, query, position, LIBRARY_BATCH)
            for row in rows:
                yield jsoncodec.loads(row.body)
            if len(rows) < LIBRARY_BATCH:
                return
            last = rows[-1]
            position = cursors.Position(last.value, last.id, last.alias, last.type)

    def changes(self, since: int | None, aliases: Sequence[str], limit: int) -> ChangesPage:
        """The aliases' changes after `since` (None: from the start of the retained log)."""
        start = since or 0
        with self._db.read() as conn:
            if since is not None and since < _horizon(conn):
                raise ChangesExpired(
                    "The change log no longer reaches back to that token: read /tracks again, "
                    "then follow /changes from its newest token."
                )
            version = _version(conn)
            result = conn.execute(
                select(changes)
                .where(changes.c.seq > start, changes.c.alias.in_(list(aliases)))
                .order_by(changes.c.seq)
                .limit(limit + 1)
            )
            rows = list(result)
        has_more = len(rows) > limit
        found = [
            Change(
                int(row.seq),
                row.op,
                row.alias,
                row.type,
                row.id,
                None if row.body is None else jsoncodec.loads(row.body),
                float(row.at),
                row.event or (DELETED if row.op == "delete" else UPDATED),
            )
            for row in rows[:limit]
        ]
        if has_more:
            following = found[-1].seq
        else:
            # Every change up to the log's newest was read (those of other aliases skipped).
            following = max(start, version, found[-1].seq if found else 0)
        return ChangesPage(found, following, has_more)


# --- helpers ----------------------------------------------------------------------------


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _key(value: Any) -> str | None:
    """A text field as a case-insensitive key (NUL removed: PostgreSQL text cannot hold it)."""
    return value.casefold().replace("\x00", "") if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _millis(value: Any) -> int | None:
    """An RFC 3339 Track time as epoch milliseconds."""
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp()) * 1000
    except ValueError:
        return None


def _row(alias: str, type_: str, entry: Entry) -> dict[str, Any]:
    """The tracks row of an entry: its Track, and the columns derived from it."""
    track = entry.track
    status = track.get("status")
    updated = entry.updated_ms if entry.updated_ms is not None else _millis(track.get("updated_at"))
    return {
        "alias": alias,
        "type": type_,
        "id": entry.id,
        "job_id": entry.job_id,
        "status": status if status in STATUSES else "unknown",
        "title_key": _key(track.get("title")),
        "style_key": _key(track.get("style")),
        "mood_key": _key(track.get("mood")),
        "key_key": _key(track.get("key")),
        "bpm": _number(track.get("bpm")),
        "duration": _number(track.get("duration_seconds")),
        "created_at": _millis(track.get("created_at")),
        "updated_at": updated,
        "words": track_words(track),
        "body": jsoncodec.dumps(track).decode(),
    }


def _item(row: Any) -> dict[str, Any]:
    item: dict[str, Any] = jsoncodec.loads(row.body)
    item["user"] = row.alias
    item["type"] = row.type
    return item


def _only_counted(query: TracksQuery) -> bool:
    return not (
        query.words
        or query.style
        or query.mood
        or query.key
        or query.bpm_min is not None
        or query.bpm_max is not None
        or query.duration_min is not None
        or query.duration_max is not None
        or query.created_after is not None
        or query.created_before is not None
    )


def _conditions(dialect: str, query: TracksQuery, aliases: Sequence[str]) -> list[Any]:
    """The WHERE clauses of a query's filters."""
    c = tracks.c
    found: list[Any] = [c.alias.in_(list(aliases))]
    if query.type is not None:
        found.append(c.type == query.type)
    if query.statuses is not None:
        found.append(c.status.in_(query.statuses))
    matched = match_clause(dialect, query.words)
    if matched is not None:
        found.append(matched)
    for column, value in (
        (c.style_key, query.style),
        (c.mood_key, query.mood),
        (c.key_key, query.key),
    ):
        if value is not None:
            found.append(column == value)
    for column, low, high in (
        (c.bpm, query.bpm_min, query.bpm_max),
        (c.duration, query.duration_min, query.duration_max),
        (c.created_at, query.created_after, None),
    ):
        if low is not None:
            found.append(column >= low)
        if high is not None:
            found.append(column <= high)
    if query.created_before is not None:
        found.append(c.created_at < query.created_before)
    return found


def _page(
    conn: Connection,
    conditions: list[Any],
    query: TracksQuery,
    position: cursors.Position | None,
    count: int,
) -> list[Any]:
    """Up to `count` rows after the position in the query's order, nulls last.

    Two index ranges: the rows with a sort value, then (once those run out) the rows without
    one, each ordered by (value, id, alias, type) in the sort's direction.
    """
    column = tracks.c[query.sort_column]
    keys = (tracks.c.id, tracks.c.alias, tracks.c.type)
    descending = query.descending
    shown = (tracks.c.body, tracks.c.alias, tracks.c.type, tracks.c.id, column.label("value"))

    def ordered(columns: tuple[Any, ...]) -> list[Any]:
        return [col.desc() if descending else col.asc() for col in columns]

    rows: list[Any] = []
    tail = () if position is None else (position.id, position.alias, position.type)
    if position is None or position.value is not None:
        where = [*conditions, column.is_not(None)]
        if position is not None:
            where.append(_after((column, *keys), (position.value, *tail), descending))
        statement = select(*shown).where(*where).order_by(*ordered((column, *keys))).limit(count)
        rows = list(conn.execute(statement))
    if len(rows) < count:
        where = [*conditions, column.is_(None)]
        if position is not None and position.value is None:
            where.append(_after(keys, tail, descending))
        statement = select(*shown).where(*where).order_by(*ordered(keys)).limit(count - len(rows))
        rows.extend(conn.execute(statement))
    return rows


def _meta(conn: Connection, name: str) -> int:
    found = conn.execute(select(mirror_meta.c.value).where(mirror_meta.c.name == name)).scalar()
    return int(found or 0)


def _search_page(
    conn: Connection,
    conditions: list[Any],
    query: TracksQuery,
    position: cursors.Position | None,
    count: int,
) -> tuple[list[Any], int | None]:
    """A page and the total of a search, in one pass over its matches (PostgreSQL).

    A search narrows the library to a few matches, found through the word index; walking
    the sort's index instead and testing each row's words, then counting the matches again,
    costs twice as much. The matches are gathered once (MATERIALIZED keeps the planner from
    folding them into the sort's index scan), then counted and ordered, nulls last.
    """
    column = tracks.c[query.sort_column]
    matches = (
        select(tracks.c.body, tracks.c.alias, tracks.c.type, tracks.c.id, column.label("value"))
        .where(*conditions)
        .cte("matches")
        .prefix_with("MATERIALIZED")
    )
    m = matches.c
    keys = (m.id, m.alias, m.type)
    descending = query.descending
    where: list[Any] = []
    if position is not None:
        tail = (position.id, position.alias, position.type)
        if position.value is None:
            where = [m.value.is_(None), _after(keys, tail, descending)]
        else:
            valued = (m.value, *keys)
            where = [or_(m.value.is_(None), _after(valued, (position.value, *tail), descending))]
    total = select(func.count()).select_from(matches).scalar_subquery()
    order = [m.value.is_(None).asc()]
    order += [col.desc() if descending else col.asc() for col in (m.value, *keys)]
    statement = (
        select(m.body, m.alias, m.type, m.id, m.value, total.label("total"))
        .where(*where)
        .order_by(*order)
        .limit(count)
    )
    rows = list(conn.execute(statement))
    return rows, (int(rows[0].total) if rows else None)


def _after(columns: tuple[Any, ...], values: tuple[Any, ...], descending: bool) -> Any:
    """The keyset condition: rows strictly after these values in the sort's direction."""
    left = tuple_(*columns)
    right = tuple_(*(literal(v, col.type) for v, col in zip(values, columns, strict=True)))
    return left < right if descending else left > right


def _horizon(conn: Connection) -> int:
    return _meta(conn, _HORIZON)


def _version(conn: Connection) -> int:
    newest = conn.execute(select(func.max(changes.c.seq))).scalar()
    return max(int(newest or 0), _horizon(conn))
