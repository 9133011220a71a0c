"""The mirror's Store against real databases: SQLite in a temporary directory and a real
PostgreSQL (one server for the module, a fresh database per test)."""

from __future__ import annotations

import itertools
import os
import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from music_facade.core.tracks import dump_track
from music_facade.errors import InvalidQuery
from music_facade.mirror import (
    ChangesExpired,
    Entry,
    Store,
    SyncState,
    TracksQuery,
    parse_tracks_query,
)
from music_facade.mirror.migrations import STEPS
from music_facade.mirror.search import track_words, words
from music_facade.sandbox.data import full_record
from tests.support.clock import Clock

ALIASES = ("studio", "demo")
TYPES = ("song", "instrumental")
_databases = itertools.count()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(mirror_database: str, clock: Clock) -> Iterator[Store]:
    opened = Store.open(mirror_database, clock=clock, changes_retention=100.0)
    yield opened
    opened.close()


def record(alias: str, type_: str, index: int) -> dict[str, Any]:
    """A varied record: every status band, repeated bpm values, titles of either case, and
    some without a bpm, a title, a duration, a creation or an update time (to sort last)."""
    status = [(5, 50), (20, 0), (30, 100), (30, 100)][index % 4]
    title = None if index % 5 else f"{'ember' if index % 10 else 'Ember'} {index % 3}"
    found = full_record(alias, type_, index, title=title, status=status)
    material = found["musicMaterial"]
    material["bpm"] = None if index % 11 == 3 else 70 + (index * 7) % 30
    if index % 13 == 4:
        material["dur"] = None
    if index % 17 == 5:
        found["titleEn"] = ""
    if index % 19 == 6:
        del found["createTime"]
    if index % 23 == 7:
        del found["updateTime"]
    return found


def entry(found: dict[str, Any]) -> Entry:
    return Entry(found["itemId"], found["job_id"], dump_track(found), found.get("updateTime"))


def fill(store: Store, per_type: int = 40) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Write per_type tracks of each alias and type; the mirror's expected content."""
    mirror: dict[tuple[str, str, str], dict[str, Any]] = {}
    for alias in ALIASES:
        for type_ in TYPES:
            made = [entry(record(alias, type_, index)) for index in range(per_type)]
            store.write(alias, type_, made)
            for one in made:
                mirror[(alias, type_, one.id)] = {**one.track, "user": alias, "type": type_}
    return mirror


def walk(store: Store, pairs: list[tuple[str, str]], aliases: tuple[str, ...] = ALIASES,
         between: Callable[[], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Every page of a query, in order; checks has_more and next_cursor agree."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = store.tracks(
            parse_tracks_query([*pairs, *([("cursor", cursor)] if cursor else [])]), aliases
        )
        found.extend(page.items)
        assert page.has_more == (page.next_cursor is not None)
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor
        if between is not None:
            between()


def key(item: dict[str, Any]) -> tuple[str, str, str]:
    return (item["user"], item["type"], item["id"])


def prefixes_match(item: dict[str, Any], q: str) -> bool:
    have = track_words(item).split()
    return all(any(word.startswith(w) for word in have) for w in words(q))


def fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else None


FILTERS: list[tuple[list[tuple[str, str]], Callable[[dict[str, Any]], bool]]] = [
    ([("type", "song")], lambda t: t["type"] == "song"),
    ([("status", "generating,failed")], lambda t: t["status"] in ("generating", "failed")),
    ([("q", "Ember")], lambda t: prefixes_match(t, "Ember")),
    ([("q", "calm orch")], lambda t: prefixes_match(t, "calm orch")),
    ([("q", "hold THE nig")], lambda t: prefixes_match(t, "hold the nig")),
    ([("q", "zzz")], lambda t: False),
    ([("style", "LO-FI hip hop")], lambda t: fold(t["style"]) == "lo-fi hip hop"),
    ([("mood", "calm")], lambda t: fold(t["mood"]) == "calm"),
    ([("key", "c:MAJOR")], lambda t: fold(t["key"]) == "c:major"),
    ([("bpm_min", "80"), ("bpm_max", "90")],
     lambda t: t["bpm"] is not None and 80 <= t["bpm"] <= 90),
    ([("duration_min", "200")], lambda t: (t["duration_seconds"] or -1) >= 200),
    ([("duration_max", "150.5")], lambda t: t["duration_seconds"] is not None
                                            and t["duration_seconds"] <= 150.5),
    # 2025-05-10T00:00:00Z, written with an offset.
    ([("created_after", "2025-05-10T02:00:00+02:00")],
     lambda t: t["created_at"] is not None and t["created_at"] >= "2025-05-10T00:00:00Z"),
    ([("created_before", "2025-05-12T00:00:00Z")],
     lambda t: t["created_at"] is not None and t["created_at"] < "2025-05-12T00:00:00Z"),
    ([("type", "instrumental"), ("status", "completed"), ("q", "a"), ("sort", "-bpm")],
     lambda t: t["type"] == "instrumental" and t["status"] == "completed"
               and prefixes_match(t, "a")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("pairs", "keep"), FILTERS, ids=lambda v: str(v) if isinstance(v, list) else ""
)
def test_every_filter(
    store: Store, pairs: list[tuple[str, str]], keep: Callable[[dict[str, Any]], bool]
) -> None:
    mirror = fill(store)
    expected = {k for k, t in mirror.items() if keep(t)}
    found = walk(store, [*pairs, ("limit", "7")])
    assert [key(item) for item in found if key(item) not in expected] == []
    assert len(found) == len(expected) == len({key(item) for item in found})
    first = store.tracks(parse_tracks_query([*pairs, ("limit", "7")]), ALIASES)
    assert first.total == len(expected)
    # Only the aliases asked for.
    only = walk(store, [*pairs, ("limit", "50")], aliases=("demo",))
    assert {key(item) for item in only} == {k for k in expected if k[0] == "demo"}


SORT_FIELDS = {
    "created_at": "created_at",
    "updated_at": "updated_at",
    "title": "title",
    "bpm": "bpm",
    "duration_seconds": "duration_seconds",
}


@pytest.mark.parametrize("q", ["", "calm"])  # a search takes another path on PostgreSQL
@pytest.mark.parametrize("sort", [f"{d}{s}" for s in SORT_FIELDS for d in ("", "-")])
def test_every_sort_both_ways_nulls_last(store: Store, sort: str, q: str) -> None:
    mirror = {k: t for k, t in fill(store).items() if prefixes_match(t, q)}
    field = SORT_FIELDS[sort.lstrip("-")]
    descending = sort.startswith("-")

    def value(item: dict[str, Any]) -> Any:
        found = item[field]
        return found.casefold() if isinstance(found, str) and field == "title" else found

    def tie(item: dict[str, Any]) -> tuple[str, str, str]:
        return (item["id"], item["user"], item["type"])

    valued = sorted(
        (t for t in mirror.values() if value(t) is not None),
        key=lambda t: (value(t), tie(t)),
        reverse=descending,
    )
    nulls = sorted((t for t in mirror.values() if value(t) is None), key=tie, reverse=descending)
    assert valued
    assert nulls or q
    found = walk(store, [("sort", sort), ("limit", "9"), *([("q", q)] if q else [])])
    assert [key(t) for t in found] == [key(t) for t in valued + nulls]


def test_items_are_the_stored_track_with_user_and_type_never_the_job_id(store: Store) -> None:
    mirror = fill(store, per_type=10)
    found = walk(store, [("limit", "100")])
    assert {key(item): item for item in found} == mirror
    for item in found:
        assert list(item)[-2:] == ["user", "type"]
    everything = (
        repr(found)
        + repr(store.changes(None, ALIASES, 1000))
        + repr(list(store.library("studio", "song")))
        + repr(store.stored("studio", "song", store.ids("studio", "song")))
    )
    assert "job" not in everything
    some = next(iter(mirror))
    assert store.job_id(some[0], some[2]) == f"user:12345-tempolor:{some[0]}-job:{some[2]}"
    assert store.job_id("studio", "absent") is None


def test_paging_while_the_mirror_changes_returns_every_lasting_track_once(store: Store) -> None:
    mirror = fill(store, per_type=60)
    rng = random.Random(20)
    pairs = [("status", "completed,generating"), ("sort", "-bpm"), ("limit", "6")]
    wanted = {k for k, t in mirror.items() if t["status"] in ("completed", "generating")}
    touched: set[tuple[str, str, str]] = set()
    added = itertools.count(1000)

    def churn() -> None:
        # New tracks (anywhere in the order), deletions, and changes that leave the sort key
        # and the filter alone; a track touched here is not "present throughout".
        alias, type_ = rng.choice(ALIASES), rng.choice(TYPES)
        new = [entry(record(alias, type_, next(added))) for _ in range(3)]
        store.write(alias, type_, new)
        touched.update((alias, type_, one.id) for one in new)
        victims = rng.sample(sorted(wanted - touched), 2)
        for a, t, i in victims:
            store.delete(a, t, [i])
        touched.update(victims)
        a, t, i = rng.choice(sorted(wanted - touched))
        changed = {**store.stored(a, t, [i])[i], "title": "Renamed"}
        store.write(a, t, [Entry(i, "job", changed, None)])

    found = walk(store, pairs, between=churn)
    keys = [key(item) for item in found]
    assert len(keys) == len(set(keys)), "a track came twice"
    assert wanted - touched <= set(keys)


def test_a_cursor_is_bound_to_its_filters(store: Store) -> None:
    fill(store, per_type=10)
    page = store.tracks(parse_tracks_query([("status", "completed"), ("limit", "2")]), ALIASES)
    assert page.next_cursor is not None
    with pytest.raises(InvalidQuery) as caught:
        parse_tracks_query([("status", "failed"), ("cursor", page.next_cursor)])
    assert caught.value.errors is not None
    assert list(caught.value.errors) == ["cursor"]
    # Another limit is the same walk.
    nxt = parse_tracks_query(
        [("status", "completed"), ("limit", "5"), ("cursor", page.next_cursor)]
    )
    assert len(store.tracks(nxt, ALIASES).items) == 5


def test_writes_record_changes_in_order_and_identical_writes_nothing(store: Store) -> None:
    first = [entry(record("studio", "song", i)) for i in range(5)]
    made = store.write("studio", "song", first)
    assert [c.op for c in made] == ["upsert"] * 5
    assert [c.seq for c in made] == sorted(c.seq for c in made)
    assert store.write("studio", "song", first) == []
    assert store.version() == made[-1].seq
    changed = Entry(first[0].id, first[0].job_id, {**first[0].track, "progress": 99}, None)
    again = store.write("studio", "song", [changed, first[1]])
    assert [(c.op, c.id, c.track) for c in again] == [("upsert", changed.id, changed.track)]
    gone = store.delete("studio", "song", [first[2].id, "absent"])
    assert [(c.op, c.id, c.track, c.user, c.type) for c in gone] == [
        ("delete", first[2].id, None, "studio", "song")
    ]
    log = store.changes(None, ["studio"], 1000)
    assert [c.seq for c in log.changes] == [*(c.seq for c in made), again[0].seq, gone[0].seq]
    assert not log.has_more
    assert log.next == store.version()
    assert store.counts("studio", "song")["total"] == 4
    assert store.ids("studio", "song") == {e.id for e in first} - {first[2].id}


def test_changes_page_by_page_and_by_alias(store: Store) -> None:
    fill(store, per_type=5)
    seen: list[int] = []
    since = None
    while True:
        page = store.changes(since, ["demo"], 3)
        seen.extend(c.seq for c in page.changes)
        assert all(c.user == "demo" for c in page.changes)
        since = page.next
        if not page.has_more:
            break
    assert len(seen) == 10
    assert seen == sorted(seen)
    assert since == store.version()
    assert store.changes(since, ["demo"], 3).changes == []


def replay(store: Store) -> dict[tuple[str, str, str], dict[str, Any]]:
    state: dict[tuple[str, str, str], dict[str, Any]] = {}
    for change in store.changes(None, ALIASES, 1000).changes:
        where = (change.user, change.type, change.id)
        if change.op == "delete":
            state.pop(where, None)
        else:
            assert change.track is not None
            state[where] = {**change.track, "user": change.user, "type": change.type}
    return state


def test_retention_horizon_and_replay(store: Store, clock: Clock) -> None:
    tracks = [entry(record("studio", "song", i)) for i in range(6)]
    store.write("studio", "song", tracks)  # seqs 1-6
    store.delete("studio", "song", [tracks[0].id])  # 7: the only change of track 0 left
    clock.now += 50
    store.write(
        "studio", "song", [Entry(tracks[1].id, "j", {**tracks[1].track, "progress": 1}, None)]
    )
    store.delete("studio", "song", [tracks[2].id])  # 9
    clock.now += 60  # 1-7 are past the retention (100 s), 8-9 are not
    version = store.version()
    removed = store.prune()
    # 1 (superseded by 7), 2 and 3 (superseded by 8 and 9), and 7: a lone old delete.
    assert removed == 4
    assert store.version() == version
    current = {key(t): t for t in walk(store, [("limit", "100")], aliases=ALIASES)}
    assert replay(store) == current
    with pytest.raises(ChangesExpired) as caught:
        store.changes(6, ALIASES, 10)
    assert (caught.value.status, caught.value.code) == (410, "changes_expired")
    assert [c.seq for c in store.changes(7, ALIASES, 10).changes] == [8, 9]
    assert store.changes(None, ALIASES, 10).changes[0].seq == 4
    clock.now += 1000
    store.prune()  # 9 goes (a lone delete); 8 stays (track 1's latest)
    assert replay(store) == current
    assert store.version() == version
    empty = store.changes(None, ["nobody"], 10)
    assert (empty.changes, empty.next) == ([], version)


def test_counts_and_the_unfiltered_total(store: Store) -> None:
    mirror = fill(store, per_type=20)
    counts = store.counts("studio", "song")
    songs = [t for k, t in mirror.items() if k[:2] == ("studio", "song")]
    assert counts == {
        "generating": sum(t["status"] == "generating" for t in songs),
        "failed": sum(t["status"] == "failed" for t in songs),
        "completed": sum(t["status"] == "completed" for t in songs),
        "unknown": 0,
        "total": 20,
    }
    assert store.tracks(TracksQuery(), ALIASES).total == 80
    assert (
        store.tracks(TracksQuery(statuses=("failed",), type="song"), ["studio"]).total
        == (counts["failed"])
    )
    assert store.tracks(TracksQuery(), []).total == 0
    first = store.tracks(TracksQuery(), ALIASES).items[0]
    store.write(first["user"], first["type"],
                [Entry(first["id"], "j", {**first, "status": "failed"}, None)])  # fmt: skip
    assert store.counts(first["user"], first["type"])["total"] == 20


def test_library_sync_state_and_generating(store: Store) -> None:
    mirror = fill(store, per_type=30)
    songs = [t for k, t in mirror.items() if k[:2] == ("studio", "song")]
    library = list(store.library("studio", "song"))
    expected = walk(store, [("type", "song"), ("limit", "100")], aliases=("studio",))
    assert library == [{k: v for k, v in t.items() if k not in ("user", "type")} for t in expected]
    assert len(library) == len(songs)
    generating = store.generating("studio", "song")
    assert sorted(i for i, _ in generating) == sorted(
        t["id"] for t in songs if t["status"] == "generating"
    )
    assert all(job.endswith(f"-job:{i}") for i, job in generating)
    assert store.state("studio", "song") == SyncState()
    store.save_state("studio", "song", backfill_cursor="abc", last_attempt=5.0)
    store.save_state("studio", "song", backfilled=True, backfill_cursor=None, last_complete=6.0)
    assert store.state("studio", "song") == SyncState(
        backfill_cursor=None, backfilled=True, last_complete=6.0, last_attempt=5.0
    )
    assert store.state("studio", "instrumental") == SyncState()
    with pytest.raises(TypeError):
        store.save_state("studio", "song", password="x")


def test_the_oldest_complete_sync_of_several_accounts(store: Store) -> None:
    both = ("song", "instrumental")
    assert store.oldest_complete(["a", "b"], both) is None
    store.save_state("a", "song", last_complete=200.0)
    store.save_state("a", "instrumental", last_complete=100.0)
    store.save_state("b", "song", last_attempt=50.0)  # tried, never complete
    assert store.oldest_complete(["a"], both) == 100.0
    assert store.oldest_complete(["a"], ["song"]) == 200.0
    assert store.oldest_complete(["a", "b"], both) is None
    store.save_state("b", "song", last_complete=300.0)
    store.save_state("b", "instrumental", last_complete=150.0)
    assert store.oldest_complete(["a", "b"], both) == 100.0
    assert store.oldest_complete(["b", "b"], ["song"]) == 300.0
    assert store.oldest_complete([], both) is None


def test_lease_exclusive_and_expiring(store: Store, clock: Clock) -> None:
    assert store.lease("sync:studio", "a", 30)
    assert not store.lease("sync:studio", "b", 30)
    assert store.lease("sync:demo", "b", 30)  # another name, another lease
    clock.now += 20
    assert store.lease("sync:studio", "a", 30)  # renewed until now + 30
    clock.now += 20
    assert not store.lease("sync:studio", "b", 30)
    clock.now += 11
    assert store.lease("sync:studio", "b", 30)  # expired: taken over
    assert not store.lease("sync:studio", "a", 30)
    store.release("sync:studio", "a")  # not a's: nothing happens
    assert not store.lease("sync:studio", "a", 30)
    store.release("sync:studio", "b")
    assert store.lease("sync:studio", "a", 30)


def test_lease_has_one_holder_under_contention(mirror_database: str, clock: Clock) -> None:
    stores = [Store.open(mirror_database, clock=clock) for _ in range(6)]
    try:
        for round_ in range(5):
            clock.now += 100  # every earlier lease has expired
            start = threading.Barrier(len(stores))
            won: list[int] = []

            def take(n: int, one: Store, start: threading.Barrier, won: list[int]) -> None:
                start.wait()
                if one.lease("sync:fleet", f"holder-{n}", 30):
                    won.append(n)

            threads = [
                threading.Thread(target=take, args=(n, s, start, won)) for n, s in enumerate(stores)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(won) == 1, (round_, won)
    finally:
        for one in stores:
            one.close()


def test_migrations_concurrent_and_idempotent(mirror_database: str) -> None:
    opened: list[Store] = []
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(Store.open(mirror_database))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    opened.append(Store.open(mirror_database))  # once more, after the fact
    try:
        store = opened[0]
        with store._db.read() as conn:
            rows = conn.execute(text("SELECT version FROM mirror_schema")).all()
        assert [tuple(r) for r in rows] == [(len(STEPS[store.dialect]),)]
        store.write("studio", "song", [entry(record("studio", "song", 0))])
        assert opened[-1].counts("studio", "song")["total"] == 1
    finally:
        for one in opened:
            one.close()


def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "mirror.db"
    old = os.umask(0)  # even with a permissive umask
    try:
        store = Store.open(f"sqlite:///{path}")
    finally:
        os.umask(old)
    try:
        store.write("studio", "song", [entry(record("studio", "song", 0))])
        assert (path.stat().st_mode & 0o777) == 0o600
        wal = Path(f"{path}-wal")
        assert wal.exists()
        assert (wal.stat().st_mode & 0o777) == 0o600
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        store.close()


def test_planner_statistics_once_the_mirror_grows(store: Store, mirror_database: str) -> None:
    made = [entry(record("studio", "song", index)) for index in range(1100)]
    store.write("studio", "song", made[:600])
    store.write("studio", "song", made[600:])  # past 1000 tracks: statistics gathered
    newest = sorted(made, key=lambda e: (e.track["created_at"] or "", e.id), reverse=True)[:5]
    page = store.tracks(parse_tracks_query([("limit", "5")]), ["studio"])
    assert [item["id"] for item in page.items] == [e.id for e in newest]
    assert page.total == 1100
    if store.dialect == "sqlite":
        with sqlite3.connect(mirror_database.removeprefix("sqlite:///")) as conn:
            stats = dict(conn.execute("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'tracks'"))
            plan = conn.execute(
                "EXPLAIN QUERY PLAN SELECT body FROM tracks WHERE alias IN ('studio', 'demo') "
                "AND created_at IS NOT NULL ORDER BY created_at DESC, id DESC LIMIT 21"
            ).fetchall()
        assert stats["tracks_by_created"].startswith("1100 ")
        # The sort's index, no sort of the whole table.
        assert "tracks_by_created" in repr(plan)
        assert "TEMP B-TREE" not in repr(plan)
