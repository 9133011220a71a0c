"""The mirror's syncer against a live sandbox and a real Store on SQLite and PostgreSQL.

The sandbox, the store and the syncer share one clock the test moves: the sandbox's generating
tracks, the store's leases and the syncer's intervals and budget all follow it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from music_facade.core.tracks import dump_track
from music_facade.mirror.store import Entry, Store
from music_facade.mirror.sync import Syncer, SyncReport
from music_facade.sandbox import SandboxServer, SandboxState
from music_facade.sandbox.cdn import with_local_cover
from music_facade.upstream import UpstreamClient

from ..support.clock import Clock
from ..support.helpers import sandbox_settings
from ..support.waiting import wait_until

NOW = 1_750_000_000.0
TYPES = ("song", "instrumental")
# The sandbox's accounts: complete, odd records on one page, empty, pages without "records".
USERS = {"studio": "1001", "edge": "1002", "empty": "1003", "norecords": "1004"}


@dataclass(frozen=True)
class Mirror:
    """The [mirror] settings the syncer reads (the fields of config.MirrorSettings)."""

    interval: float = 60.0
    active_interval: float = 10.0
    reconcile_every: float = 86400.0
    max_calls_per_minute: int = 1000
    max_pages: int = 10000


@pytest.fixture
def clock() -> Clock:
    moved = Clock()
    moved.now = NOW
    return moved


@pytest.fixture
def live(clock: Clock) -> Iterator[SandboxServer]:
    """A sandbox of its own (page size 10) whose generating tracks follow `clock`."""
    with SandboxServer(SandboxState(clock=clock)) as server:
        yield server


@pytest.fixture
def client(live: SandboxServer) -> Iterator[UpstreamClient]:
    """The service's own upstream client (guards included), aimed at the sandbox."""
    upstream = UpstreamClient(sandbox_settings(live).upstream)
    yield upstream
    upstream.close()


OpenStore = Callable[[], Store]


@pytest.fixture
def open_store(mirror_database: str, clock: Clock) -> Iterator[OpenStore]:
    """Opens Stores on the test's database (one per process the test plays); all closed after."""
    opened: list[Store] = []

    def opener() -> Store:
        store = Store.open(mirror_database, clock=clock)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: OpenStore) -> Store:
    return open_store()


class Syncers:
    """Builds Syncers on the shared clock, keeping every report they make."""

    def __init__(self, store: Store, client: UpstreamClient, clock: Clock) -> None:
        self.store = store
        self.client = client
        self.clock = clock
        self.reports: list[SyncReport] = []

    def __call__(
        self,
        users: dict[str, str] | None = None,
        store: Store | None = None,
        holder: str | None = None,
        **mirror: Any,
    ) -> Syncer:
        return Syncer(
            users or USERS,
            Mirror(**mirror),
            store or self.store,
            self.client,
            clock=self.clock,
            observe=self.reports.append,
            holder=holder,
        )


@pytest.fixture
def syncers(store: Store, client: UpstreamClient, clock: Clock) -> Syncers:
    return Syncers(store, client, clock)


def listed(live: SandboxServer, user_id: str, type_: str) -> dict[str, dict[str, Any]]:
    """The tracks the sandbox lists now that the mirror can hold: a usable itemId and job_id,
    with their covers on the sandbox's own origin, as it serves them."""
    records = live.state.library.page(user_id, type_, 0, None)
    tracks: dict[str, dict[str, Any]] = {}
    for record in records:
        if isinstance(record, dict) and record.get("itemId") and record.get("job_id"):
            tracks.setdefault(record["itemId"], dump_track(with_local_cover(record, live.origin)))
    return tracks


def mirrored(store: Store, alias: str, type_: str) -> dict[str, dict[str, Any]]:
    """Every track the store holds for an alias's type."""
    return store.stored(alias, type_, store.ids(alias, type_))


def drive(syncer: Syncer, clock: Clock, done: Callable[[], bool], steps: int = 500) -> None:
    """Step the syncer, moving the clock as it asks, until done() (at most `steps` steps)."""
    for _ in range(steps):
        if done():
            return
        clock.now += syncer.step()
    assert done(), f"not done after {steps} steps"


def backfilled(store: Store, users: dict[str, str]) -> Callable[[], bool]:
    return lambda: all(store.state(a, t).backfilled for a in users for t in TYPES)


def list_cursors(live: SandboxServer, user_id: str, type_: str) -> list[str | None]:
    """The cursor of each list call for an account's type, in order (None: the first page)."""
    return [
        next(iter(call.args.get("cursor", [])), None)
        for call in live.state.calls()
        if call.user_id == user_id and call.args.get("type") == [type_]
        and call.path.endswith("/music/")
    ]  # fmt: skip


def test_backfill_stores_every_listed_track_of_every_account(
    live: SandboxServer, store: Store, syncers: Syncers, clock: Clock
) -> None:
    syncer = syncers()
    clock.now += syncer.step()
    for alias, user_id in USERS.items():
        for type_ in TYPES:
            assert mirrored(store, alias, type_) == listed(live, user_id, type_), (alias, type_)
            state = store.state(alias, type_)
            assert state.backfilled
            assert state.backfill_cursor is None
            assert state.last_complete == NOW
            assert state.last_error is None
    # 23 songs and 12 instrumentals at 10 a page: 3 + 2 calls; one each for the others. The
    # generating tracks were all on pages just read: no refresh call of their own.
    assert live.state.call_count("1001") == 5
    assert all(live.state.call_count(USERS[a]) == 2 for a in ("edge", "empty", "norecords"))
    songs = [r for r in syncers.reports if (r.alias, r.type) == ("studio", "song")]
    assert [(r.kind, r.outcome, r.calls, r.written) for r in songs] == [("backfill", "ok", 3, 23)]
    # The odd account's records without an object shape, an itemId or a job_id are counted.
    (odd,) = [r for r in syncers.reports if (r.alias, r.type) == ("edge", "song")]
    assert odd.skipped == 13 - len(listed(live, "1002", "song"))


def test_a_restart_mid_backfill_resumes_from_the_stored_cursor(
    live: SandboxServer, store: Store, open_store: OpenStore, syncers: Syncers, clock: Clock
) -> None:
    users = {"studio": "1001"}
    # One call a minute: the first step reads the first song page and stops there.
    first = syncers(users, holder="first", max_calls_per_minute=1)
    first.step()
    assert len(mirrored(store, "studio", "song")) == 10
    stored_cursor = store.state("studio", "song").backfill_cursor
    assert stored_cursor is not None
    # The process dies; another (its own store connection) takes over when the lease expires.
    second = syncers(users, store=open_store(), holder="second")
    clock.now += 1.5 * 60 + 1
    drive(second, clock, backfilled(store, users))
    cursors = list_cursors(live, "1001", "song")
    # The second process reads on from the stored cursor (the first page again only to
    # refresh the generating tracks stored from it), each later page once.
    resumed = [cursor for cursor in cursors[1:] if cursor is not None]
    assert resumed[0] == stored_cursor
    assert len(resumed) == len(set(resumed)) == 2
    for type_ in TYPES:
        assert mirrored(store, "studio", type_) == listed(live, "1001", type_)


def test_a_refused_stored_cursor_restarts_the_backfill_from_the_top(
    live: SandboxServer, store: Store, syncers: Syncers, clock: Clock
) -> None:
    users = {"studio": "1001"}
    store.save_state("studio", "song", backfill_cursor="bm90LWEtY3Vyc29y")
    clock.now += syncers(users).step()
    assert list_cursors(live, "1001", "song")[:2] == ["bm90LWEtY3Vyc29y", None]
    assert mirrored(store, "studio", "song") == listed(live, "1001", "song")
    assert store.state("studio", "song").last_error is None


def test_an_unchanged_incremental_costs_one_call_per_type(
    live: SandboxServer, store: Store, syncers: Syncers, clock: Clock
) -> None:
    syncer = syncers()
    clock.now += syncer.step()
    live.state.reset()  # forget the backfill's calls (the library stays as it was)
    clock.now = NOW + 60
    wait = syncer.step()
    for user_id in USERS.values():
        assert live.state.call_count(user_id) == 2, user_id
    assert store.state("studio", "song").last_complete == NOW + 60
    assert 0 < wait <= 60


def test_incremental_writes_new_and_changed_tracks_and_stops_at_an_unchanged_page(
    live: SandboxServer, store: Store, syncers: Syncers, clock: Clock
) -> None:
    users = {"studio": "1001"}
    syncer = syncers(users)
    clock.now += syncer.step()
    library = live.state.library
    added = library.add("1001", "song", {"title": "Fresh"}, seconds=600)
    oldest = list(listed(live, "1001", "song"))[-1]  # on the last page
    library.edit("1001", oldest, {"title": "Renamed"})
    before = live.state.call_count("1001")
    clock.now = NOW + 60
    syncer.step()
    songs = mirrored(store, "studio", "song")
    assert songs[added["itemId"]]["title"] == "Fresh"
    assert songs[added["itemId"]]["status"] == "generating"
    # Only the newest page changed (the new track pushed one down): read it and the next,
    # which holds nothing new; the edit deep in the list waits for the reconcile.
    assert live.state.call_count("1001") - before == 3  # 2 song pages, 1 instrumental
    assert songs[oldest]["title"] != "Renamed"


def test_generating_tracks_are_refreshed_until_final(
    live: SandboxServer, store: Store, syncers: Syncers, clock: Clock
) -> None:
    users = {"studio": "1001"}
    syncer = syncers(users)
    syncer.step()
    clock.now = NOW + 60
    added = live.state.library.add("1001", "instrumental", {"title": "Rising"}, seconds=25)
    item = added["itemId"]
    syncer.step()  # the incremental picks it up, generating
    assert mirrored(store, "studio", "instrumental")[item]["status"] == "generating"
    progress = []
    for _ in range(3):
        clock.now += 10
        syncer.step()
        track = mirrored(store, "studio", "instrumental")[item]
        progress.append((track["status"], track["progress"]))
    assert progress[0][0] == "generating"
    assert progress[-1][0] == "completed"
    # A refresh of a type with generating tracks is one call while they are on its first page.
    reports = [r for r in syncers.reports if r.kind == "active" and r.type == "instrumental"]
    assert reports
    assert all(r.calls == 1 for r in reports)


def test_the_budget_is_never_exceeded_in_any_window(
    live: SandboxServer, store: Store, syncers: Syncers, clock: Clock
) -> None:
    users = {"studio": "1001", "edge": "1002"}
    syncer = syncers(users, max_calls_per_minute=2, interval=30.0)
    times: dict[str, list[float]] = {"1001": [], "1002": []}
    end = NOW + 15 * 60
    steps = 0
    while clock.now < end:
        counts = {user_id: live.state.call_count(user_id) for user_id in times}
        wait = syncer.step()
        for user_id, count in counts.items():
            # The clock stands still during a step: its calls happen at clock.now.
            times[user_id] += [clock.now] * (live.state.call_count(user_id) - count)
        clock.now += max(wait, 0.001)
        steps += 1
        assert steps < 5000
    for user_id, made in times.items():
        assert max(sum(1 for t in made if s <= t < s + 60) for s in made) == 2, user_id
    assert backfilled(store, users)()
    # The budget slows the sync down, it does not stop it: about 2 calls a minute were made.
    assert len(times["1001"]) >= 25


def test_a_failing_upstream_records_the_error_pauses_and_deletes_nothing(
    live: SandboxServer, store: Store, syncers: Syncers, clock: Clock
) -> None:
    users = {"studio": "1001"}
    syncer = syncers(users, reconcile_every=600.0)
    clock.now += syncer.step()
    before = {type_: mirrored(store, "studio", type_) for type_ in TYPES}
    live.state.set_fault("1001", {"kind": "status", "status": 503})
    clock.now = NOW + 600  # a reconcile is due
    calls = live.state.call_count("1001")
    syncer.step()
    assert live.state.call_count("1001") == calls + 1  # the account paused at once
    errors = [store.state("studio", type_).last_error for type_ in TYPES]
    (error,) = [e for e in errors if e is not None]  # the type that tried first
    assert error.startswith("upstream_error")
    assert {type_: mirrored(store, "studio", type_) for type_ in TYPES} == before
    # Paused until the next interval: steps before it make no call.
    clock.now += 30
    syncer.step()
    assert live.state.call_count("1001") == calls + 1
    failed = [r for r in syncers.reports if r.outcome != "ok"]
    assert [(r.kind, r.outcome) for r in failed] == [("reconcile", "upstream_error")]
    # Fixed upstream, next interval: the reconciles complete and the error is cleared.
    live.state.clear_fault("1001")
    clock.now = NOW + 660
    syncer.step()
    for type_ in TYPES:
        assert store.state("studio", type_).last_error is None
        assert store.state("studio", type_).last_reconcile == NOW + 660


def test_a_refused_token_pauses_the_account_for_an_interval(
    live: SandboxServer, store: Store, syncers: Syncers, clock: Clock
) -> None:
    users = {"studio": "1001"}
    syncer = syncers(users)
    live.state.set_fault("1001", {"kind": "status", "status": 401})
    for _ in range(5):
        syncer.step()  # the clock stands still: no call after the first
    assert live.state.call_count("1001") == 1
    assert (store.state("studio", "song").last_error or "").startswith("upstream_auth_failed")
    assert store.state("studio", "instrumental").last_error is None


def test_an_account_the_upstream_does_not_know_shows_in_the_state_at_once(
    live: SandboxServer, store: Store, syncers: Syncers, clock: Clock
) -> None:
    syncer = syncers({"ghost": "9999"})
    for _ in range(3):
        syncer.step()
    assert live.state.call_count("9999") == 1
    error = store.state("ghost", "song").last_error or ""
    assert error.startswith("upstream_error")
    assert "9999" not in error  # the upstream's message names the account: never shown
    clock.now += 60
    syncer.step()  # tried again after an interval
    assert live.state.call_count("9999") == 2


def test_reconcile_deletes_a_vanished_track_only_after_a_complete_walk(
    live: SandboxServer, store: Store, syncers: Syncers, clock: Clock
) -> None:
    users = {"studio": "1001"}
    # No incremental falls due before the reconcile: its first call is the reconcile's own.
    syncer = syncers(users, reconcile_every=600.0, interval=3600.0, max_calls_per_minute=1)
    drive(syncer, clock, backfilled(store, users))
    songs = listed(live, "1001", "song")
    vanished = list(songs)[-1]
    live.state.library.delete("1001", vanished)
    renamed = list(songs)[-2]
    live.state.library.edit("1001", renamed, {"title": "Renamed"})
    # The reconcile reads its first page, then the upstream fails: nothing is deleted.
    reconcile_began(live, store, syncer, clock)
    live.state.set_fault("1001", {"kind": "status", "status": 500})
    drive(syncer, clock, lambda: store.state("studio", "song").last_error is not None)
    live.state.clear_fault("1001")
    assert vanished in store.ids("studio", "song")
    assert not reconciled(syncers)
    # The next reconcile walks to the end: the vanished track goes, the renamed one changes.
    drive(syncer, clock, lambda: bool(reconciled(syncers)))
    assert vanished not in store.ids("studio", "song")
    assert mirrored(store, "studio", "song") == listed(live, "1001", "song")
    assert [r.deleted for r in reconciled(syncers)] == [1]


def test_reconcile_keeps_a_track_a_deletion_shifted_past_its_cursor(
    live: SandboxServer, store: Store, syncers: Syncers, clock: Clock
) -> None:
    # The upstream's cursors are offsets: a deletion on a page already read moves the next
    # page down by one, so the walk never lists the track that was first on it.
    users = {"studio": "1001"}
    syncer = syncers(users, reconcile_every=600.0, interval=3600.0, max_calls_per_minute=1)
    drive(syncer, clock, backfilled(store, users))
    records = live.state.library.page("1001", "song", 0, None)
    deleted, shifted = records[0]["itemId"], records[10]["itemId"]  # pages of 10
    reconcile_began(live, store, syncer, clock)
    live.state.library.delete("1001", deleted)
    drive(syncer, clock, lambda: bool(reconciled(syncers)))
    # The shifted track went unlisted; asked for by its job id, it answers: it stays.
    assert shifted in store.ids("studio", "song")
    assert [r.deleted for r in reconciled(syncers)] == [0]
    # The deleted one was listed before it went: the next reconcile asks about it, and it goes.
    drive(syncer, clock, lambda: len(reconciled(syncers)) == 2)
    assert deleted not in store.ids("studio", "song")
    assert mirrored(store, "studio", "song") == listed(live, "1001", "song")
    assert [r.deleted for r in reconciled(syncers)] == [0, 1]


def reconcile_began(live: SandboxServer, store: Store, syncer: Syncer, clock: Clock) -> None:
    """Move to when the song reconcile is due and step until it read its first page (under a
    budget of one call a minute, it reads no more in that step)."""
    clock.now = max(clock.now, (store.state("studio", "song").last_reconcile or 0.0) + 600)
    read = len(list_cursors(live, "1001", "song"))
    drive(syncer, clock, lambda: len(list_cursors(live, "1001", "song")) > read)
    assert list_cursors(live, "1001", "song")[-1] is None


def reconciled(syncers: Syncers) -> list[SyncReport]:
    """The reports of the song reconciles that completed."""
    return [
        r for r in syncers.reports if (r.kind, r.type, r.outcome) == ("reconcile", "song", "ok")
    ]


def test_reconcile_keeps_tracks_written_after_it_began(
    live: SandboxServer, store: Store, syncers: Syncers, clock: Clock
) -> None:
    users = {"studio": "1001"}
    # No incremental falls due before the reconcile: its first call is the reconcile's own.
    syncer = syncers(users, reconcile_every=600.0, interval=3600.0, max_calls_per_minute=1)
    drive(syncer, clock, backfilled(store, users))
    reconcile_began(live, store, syncer, clock)
    # A track stored while the walk runs (as the active refresh may write one it lists first).
    job_id = "user:12345-tempolor:1001-job:written-during"
    store.write("studio", "song", [Entry("written-during", job_id, {"id": "written-during"}, None)])
    drive(syncer, clock, lambda: bool(reconciled(syncers)))
    assert "written-during" in store.ids("studio", "song")
    # The next reconcile began after it was stored and never saw it listed: it goes.
    drive(syncer, clock, lambda: len(reconciled(syncers)) == 2)
    assert "written-during" not in store.ids("studio", "song")


def test_one_syncer_per_alias_and_a_takeover_after_the_lease_expires(
    live: SandboxServer, open_store: OpenStore, syncers: Syncers, clock: Clock
) -> None:
    users = {"studio": "1001"}
    first = syncers(users, store=open_store(), holder="first")
    second = syncers(users, store=open_store(), holder="second")
    first.step()
    calls = live.state.call_count("1001")
    assert calls == 5
    for _ in range(3):
        assert second.step() <= 15  # it asks again within a quarter interval
        assert live.state.call_count("1001") == calls
    # The first process dies right after its step: the second takes over within two intervals.
    died = clock.now
    while live.state.call_count("1001") == calls:
        clock.now += second.step()
        assert clock.now - died <= 2 * 60
    # The first comes back: the lease is the second's now, so it makes no call.
    calls = live.state.call_count("1001")
    first.step()
    assert live.state.call_count("1001") == calls


def test_run_syncs_until_stopped_and_releases_its_lease(
    live: SandboxServer, mirror_database: str, client: UpstreamClient
) -> None:
    users = {"studio": "1001"}
    store = Store.open(mirror_database)
    try:
        syncer = Syncer(users, Mirror(), store, client, holder="runner")
        stop = threading.Event()
        thread = threading.Thread(target=syncer.run, args=(stop,), daemon=True)
        thread.start()
        try:
            wait_until(backfilled(store, users))
        finally:
            stop.set()
            thread.join(timeout=10)
        assert not thread.is_alive()
        # Released: another process may take it at once.
        assert store.lease("sync:studio", "another", 60)
    finally:
        store.close()


def test_a_cursor_cycle_stops_the_backfill_and_is_recorded(
    live: SandboxServer, store: Store, syncers: Syncers, clock: Clock
) -> None:
    users = {"studio": "1001"}
    live.state.set_fault("1001", {"kind": "cursor_cycle", "pages": 2, "records": 1})
    syncer = syncers(users)
    syncer.step()
    clock.now += 59
    syncer.step()  # paused until the next interval
    state = store.state("studio", "song")
    assert (state.last_error or "").startswith("upstream_cursor_cycle")
    assert not state.backfilled
    assert live.state.call_count("1001") == 3  # page 0, page 1, page 0 again: then stopped
