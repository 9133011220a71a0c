"""The mirror's syncer: backfill, incremental sync, active refresh and reconcile of every alias.

One Syncer per process; `step()` does what is due now and says how long until the next thing
is, `run()` repeats it until stopped. Every upstream call goes through the service's own
client (its guards: a 429 cooldown, the breaker, a remembered auth failure) and this process's
per-account Budget; a walk that runs out of budget keeps its place in memory (a backfill also
in the store) and goes on when the budget allows, so one account's long walk never holds up
another's. Each alias is synced by one process of the fleet at a time: the one holding the
store's lease `sync:<alias>`, renewed while it works.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..core.music import Upstream
from ..core.query import TYPES
from ..core.tracks import dump_track, reshape_page
from ..core.walk import CursorCycle, PageLimitReached
from ..errors import Problem, UpstreamError, UpstreamFailure, UpstreamRejected
from .budget import Budget
from .store import Entry, Store, SyncState

log = logging.getLogger(__name__)

LEASE_PREFIX = "sync:"
# A step never asks to be woken later than this, nor sooner than MIN_WAIT (run's floor): a
# bug that made step() return 0 without doing anything must not become a busy loop.
MIN_WAIT = 0.05
_MAX_ERROR = 300
_MAX_EPOCH_MS = 253_402_300_799_999


class SyncSettings(Protocol):
    """What the syncer reads of the [mirror] settings (config.MirrorSettings)."""

    @property
    def interval(self) -> float:
        """Seconds between incremental syncs."""

    @property
    def active_interval(self) -> float:
        """Seconds between refreshes of generating tracks."""

    @property
    def reconcile_every(self) -> float:
        """Seconds between full walks."""

    @property
    def max_calls_per_minute(self) -> int:
        """Upstream calls per account in any 60-second window."""

    @property
    def max_pages(self) -> int:
        """Pages one walk reads at most."""


@dataclass(frozen=True)
class SyncReport:
    """One finished (or failed) sync of an alias's type, for the metrics."""

    alias: str
    type: str
    kind: str  # "backfill", "incremental", "active" or "reconcile"
    outcome: str  # "ok" or the failure's problem code
    calls: int
    written: int
    deleted: int
    skipped: int  # records without a usable itemId or job_id
    seconds: float
    last_complete: float | None  # epoch seconds: the metrics' lag is now minus this


Observe = Callable[[SyncReport], None]


def _ignore(report: SyncReport) -> None:
    """The default observer: no metrics."""


@dataclass
class _Walk:
    """A walk in progress over one alias's type: where it stands and what it did so far."""

    kind: str
    cursor: str | None
    started: float
    resumed_from: str | None = None
    # Digests of the cursors followed, not the cursors: a cycle ends the walk (core.walk).
    seen: set[bytes] = field(default_factory=set)
    pages: int = 0
    calls: int = 0
    written: int = 0
    deleted: int = 0
    skipped: int = 0
    listed: set[str] = field(default_factory=set)  # reconcile: every id the walk saw
    stored_before: set[str] = field(default_factory=set)  # reconcile: ids stored at its start
    # reconcile, after its last page: the stored ids it did not list, still to be asked for
    # one by one (None: not at its last page yet), and those the upstream confirmed gone.
    unlisted: list[str] | None = None
    gone: list[str] = field(default_factory=list)


class Syncer:
    """Keeps the store's mirror of every alias's library in step with the upstream."""

    def __init__(
        self,
        users: Mapping[str, str],
        mirror: SyncSettings,
        store: Store,
        client: Upstream,
        *,
        clock: Callable[[], float] = time.time,
        observe: Observe = _ignore,
        holder: str | None = None,
    ) -> None:
        """users: alias → upstream user_id; clock: epoch seconds (the store's times are)."""
        self.users = dict(users)
        self.mirror = mirror
        self.store = store
        self.client = client
        self.clock = clock
        self.observe = observe
        # Unique per process and per Syncer: two in one process must not share a lease.
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        # Per upstream account (user_id), not alias: two aliases of one account share its limit.
        self.budget = Budget(mirror.max_calls_per_minute, clock=clock)
        # Renewed every third of it while held: a holder that died is replaced within
        # ttl + a non-holder's retry (interval / 4), inside two intervals.
        self.ttl = 1.5 * mirror.interval
        self._walks: dict[tuple[str, str], _Walk] = {}
        self._held: dict[str, float] = {}  # alias → when its lease was last taken or renewed
        self._paused: dict[str, float] = {}  # alias → when a failure's pause ends
        self._next_active: dict[tuple[str, str], float] = {}
        self._next_prune = 0.0
        # Fairness under a tight budget: a walk in progress is owed the call after a refresh,
        # and the types take turns going first, so neither the refresh nor one type's walk can
        # take every call of the account for ever.
        self._owed: set[tuple[str, str]] = set()
        self._first: dict[str, int] = {}

    # --- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Step until stop is set, waiting cooperatively in between; leases released at the end."""
        try:
            while not stop.is_set():
                try:
                    wait = self.step()
                except Exception as exc:  # a bug must not end the loop, nor spin it
                    log.warning("mirror sync step failed: %s", type(exc).__name__)
                    wait = self.mirror.interval
                # Event.wait: time.sleep's cooperative twin under gevent, and it ends at stop.
                stop.wait(max(wait, MIN_WAIT))
        finally:
            self.release()

    def release(self) -> None:
        """Give up every lease this syncer holds, so another process takes over at once."""
        for alias in list(self._held):
            try:
                self.store.release(LEASE_PREFIX + alias, self.holder)
            except Exception as exc:  # the lease expires by itself
                log.warning("mirror lease of %s not released: %s", alias, type(exc).__name__)
        self._held.clear()
        self._walks.clear()

    def step(self) -> float:
        """Do what is due now for every alias; the seconds until the next thing is due."""
        wait = self.mirror.interval
        now = self.clock()
        if now >= self._next_prune:
            # Retention applies once per interval; any process may (the pruning is the same).
            self._next_prune = now + self.mirror.interval
            try:
                self.store.prune()
            except Exception as exc:
                log.warning("mirror change log not pruned: %s", type(exc).__name__)
        for alias in self.users:
            try:
                wait = min(wait, self._alias(alias))
            except Exception as exc:  # the store failed: pause this alias, go on with others
                log.warning("mirror sync of %s failed: %s", alias, type(exc).__name__)
                self._drop(alias)
                self._paused[alias] = self.clock() + self.mirror.interval
        return max(wait, 0.0)

    # --- one alias --------------------------------------------------------------------------

    def _alias(self, alias: str) -> float:
        now = self.clock()
        if not self._lease(alias, now):
            # Another process syncs it; ask again soon enough to take over in time.
            return self.mirror.interval / 4
        waits = [self._renew_in(alias, now)]
        paused = self._paused.get(alias, 0.0)
        if paused > now:
            return min(*waits, paused - now)
        first = self._first[alias] = (self._first.get(alias, -1) + 1) % len(TYPES)
        for type_ in TYPES[first:] + TYPES[:first]:
            waits.append(self._type(alias, type_))
            if alias not in self._held:  # lost the lease part-way
                return self.mirror.interval / 4
            if self._paused.get(alias, 0.0) > self.clock():
                # A failure pauses the whole account: the guards that refuse one of its calls
                # (cooldown, breaker, auth) would refuse the other type's too.
                return min(waits)
        return min(waits)

    def _lease(self, alias: str, now: float) -> bool:
        """Whether this process holds the alias's lease (taken or renewed when due)."""
        taken = self._held.get(alias)
        if taken is not None and now - taken < self.ttl / 3:
            return True
        if self.store.lease(LEASE_PREFIX + alias, self.holder, self.ttl):
            if taken is None:
                log.info("mirror sync of %s taken by this process", alias)
            self._held[alias] = now
            return True
        if taken is not None:
            log.warning("mirror sync of %s lost its lease to another process", alias)
        self._drop(alias)
        return False

    def _renew_in(self, alias: str, now: float) -> float:
        return self._held[alias] + self.ttl / 3 - now

    def _drop(self, alias: str) -> None:
        """Forget the alias's lease and walks in progress (a backfill resumes from the store)."""
        self._held.pop(alias, None)
        for key in [key for key in self._walks if key[0] == alias]:
            del self._walks[key]

    # --- one alias's type -------------------------------------------------------------------

    def _type(self, alias: str, type_: str) -> float:
        """Run what is due for one alias's type; the seconds until its next due thing."""
        key = (alias, type_)
        state = self.store.state(alias, type_)
        now = self.clock()
        if key not in self._walks and state.last_error is not None:
            # A failure remembered by the store (this process's or a former holder's) pauses
            # the type until the next interval after it.
            resume = (state.last_attempt or 0.0) + self.mirror.interval
            if resume > now:
                return resume - now
        waits: list[float] = []
        kind = "active"
        # Ids of the tracks read in this step: the active refresh need not read them again.
        seen: set[str] = set()
        try:
            walk = self._walks.get(key)
            if walk is None:
                due, walk = self._due(alias, type_, state, now)
                if walk is None:
                    waits.append(due)
                else:
                    self._walks[key] = walk
                    self.store.save_state(alias, type_, last_attempt=now)
            # A walk from the top reads the newest page first, where generating tracks are: the
            # refresh goes after it, usually with nothing left to read; one deep inside a long
            # library goes after the refresh, so the refresh never waits for the whole walk.
            from_top = walk is not None and walk.cursor is None
            if walk is not None and not from_top and key not in self._owed:
                kind = "active"
                if self._active_due(alias, type_, seen):
                    self._owed.add(key)
            if walk is not None:
                kind = walk.kind
                waits.append(self._advance(alias, type_, walk, seen))
            if alias not in self._held:
                return self.mirror.interval / 4
            if walk is None or from_top:
                kind = "active"
                self._active_due(alias, type_, seen)
            if key not in self._owed:
                # (A refresh deferred for a walk goes when the walk's wait is over.)
                waits.append(self._next_active[key] - self.clock())
        except (UpstreamFailure, CursorCycle, PageLimitReached) as exc:
            waits.append(self._failed(alias, type_, kind, exc))
        return min(waits)

    def _active_due(self, alias: str, type_: str, seen: set[str]) -> int:
        """Refresh the type's generating tracks if that is due; the calls it made."""
        key = (alias, type_)
        now = self.clock()
        if now < self._next_active.get(key, 0.0):
            return 0
        self._next_active[key] = now + self.mirror.active_interval
        return self._active(alias, type_, seen)

    def _due(
        self, alias: str, type_: str, state: SyncState, now: float
    ) -> tuple[float, _Walk | None]:
        """The walk due now (None: seconds until one is due)."""
        if not state.backfilled:
            cursor = state.backfill_cursor
            return 0.0, _Walk("backfill", cursor, now, resumed_from=cursor)
        reconcile_at = (state.last_reconcile or 0.0) + self.mirror.reconcile_every
        if now >= reconcile_at:
            walk = _Walk("reconcile", None, now)
            walk.stored_before = self.store.ids(alias, type_)
            return 0.0, walk
        incremental_at = (state.last_complete or 0.0) + self.mirror.interval
        if now >= incremental_at:
            return 0.0, _Walk("incremental", None, now)
        return min(reconcile_at, incremental_at) - now, None

    def _advance(self, alias: str, type_: str, walk: _Walk, seen: set[str]) -> float:
        """Read pages while the budget allows; the seconds until the walk can go on (0: done)."""
        user_id = self.users[alias]
        if walk.unlisted is not None:  # every page read: the walk is asking about the unlisted
            return self._finish(alias, type_, walk)
        while True:
            if walk.pages >= self.mirror.max_pages:
                raise PageLimitReached(f"Stopped after {self.mirror.max_pages} pages.")
            wait = self.budget.take(user_id)
            if wait:
                return wait
            if not self._lease(alias, self.clock()):
                return self.mirror.interval / 4
            # Between pages the worker's other requests run (gevent switches only on I/O).
            time.sleep(0)
            walk.calls += 1
            try:
                raw = self.client.list_music(user_id, type_, walk.cursor, _request_id())
            except UpstreamRejected as exc:
                if not self._refused_resume(alias, type_, walk, exc):
                    raise
                continue
            records, next_cursor = _page(raw)
            entries, skipped = entries_of(records)
            walk.pages += 1
            walk.skipped += skipped
            seen.update(entry.id for entry in entries)
            self._owed.discard((alias, type_))
            if self._apply(alias, type_, walk, entries, next_cursor):
                return self._finish(alias, type_, walk)
            assert next_cursor is not None  # _apply finishes a walk without one
            digest = hashlib.blake2b(next_cursor.encode(), digest_size=16).digest()
            if digest in walk.seen:
                raise CursorCycle(
                    f"After {walk.pages} pages the upstream's next cursor leads back to a page "
                    "already read."
                )
            walk.seen.add(digest)
            walk.cursor = next_cursor
            if walk.kind == "backfill":
                # After the page's own write: a restart reads this page again (an identical
                # write writes nothing) rather than skip it.
                self.store.save_state(alias, type_, backfill_cursor=next_cursor)

    def _refused_resume(self, alias: str, type_: str, walk: _Walk, exc: UpstreamRejected) -> bool:
        """Whether a 400 was the upstream refusing a stored backfill cursor: then the backfill
        starts again from the top (once; a cursor it has just handed out is not retried)."""
        if not (
            walk.kind == "backfill"
            and exc.upstream_status == 400
            and walk.cursor is not None
            and walk.cursor == walk.resumed_from
        ):
            return False
        log.warning("mirror backfill of %s %s: stored cursor refused, from the top", alias, type_)
        walk.cursor = walk.resumed_from = None
        self.store.save_state(alias, type_, backfill_cursor=None)
        return True

    def _apply(
        self,
        alias: str,
        type_: str,
        walk: _Walk,
        entries: list[Entry],
        next_cursor: str | None,
    ) -> bool:
        """Store one page as the walk's kind wants; whether the walk is done."""
        if walk.kind == "incremental":
            stored = self.store.stored(alias, type_, [entry.id for entry in entries])
            fresh = [entry for entry in entries if stored.get(entry.id) != entry.track]
            if fresh:
                walk.written += len(self.store.write(alias, type_, fresh))
            # Listed newest first: past a page with nothing new or changed, nothing is.
            return not fresh or next_cursor is None
        if entries:
            # One transaction per page; identical tracks write nothing.
            walk.written += len(self.store.write(alias, type_, entries))
        if walk.kind == "reconcile":
            walk.listed.update(entry.id for entry in entries)
        return next_cursor is None

    def _finish(self, alias: str, type_: str, walk: _Walk) -> float:
        """Record a walk that reached the last page; the seconds until the type's next walk
        (or until a reconcile can go on asking about the tracks it did not list)."""
        if walk.kind == "reconcile":
            if walk.unlisted is None:
                # Only tracks stored before the walk began: one written since (a new track, by
                # the active refresh) may sit above where the walk started.
                stored = walk.stored_before & self.store.ids(alias, type_)
                walk.unlisted = sorted(stored - walk.listed)
            wait = self._confirm_gone(alias, type_, walk)
            if wait:
                return wait
            if walk.gone:
                walk.deleted += len(self.store.delete(alias, type_, walk.gone))
        now = self.clock()
        fields: dict[str, Any] = {"last_complete": now, "last_error": None}
        if walk.kind == "backfill":
            # The first full walk doubles as the first reconcile: every listed track is stored.
            fields.update(backfilled=True, backfill_cursor=None, last_reconcile=now)
        elif walk.kind == "reconcile":
            fields["last_reconcile"] = now
        self.store.save_state(alias, type_, **fields)
        del self._walks[(alias, type_)]
        self._report(alias, type_, walk.kind, "ok", walk, now)
        return self.mirror.interval

    def _confirm_gone(self, alias: str, type_: str, walk: _Walk) -> float:
        """Ask the upstream about each track the reconcile did not list; 0 once all are asked,
        else the seconds until the budget allows the next call.

        The upstream's cursors are positions in a list that changes under the walk: a deletion
        above the cursor moves the next page down by one, so a live track can go unlisted.
        Each is asked for by its job id: a 404 confirms it gone, an answer writes it again.
        """
        assert walk.unlisted is not None
        user_id = self.users[alias]
        while walk.unlisted:
            id_ = walk.unlisted[-1]
            job_id = self.store.job_id(alias, id_)
            if job_id is None:  # deleted meanwhile by another writer
                walk.unlisted.pop()
                continue
            wait = self.budget.take(user_id)
            if wait:
                return wait
            if not self._lease(alias, self.clock()):
                return self.mirror.interval / 4
            time.sleep(0)  # the worker's other requests run between calls
            walk.calls += 1
            try:
                record = self.client.get_record(user_id, job_id, _request_id())
            except UpstreamFailure as exc:
                if exc.upstream_status != 404:
                    raise
                walk.gone.append(walk.unlisted.pop())
                continue
            walk.unlisted.pop()
            found, skipped = entries_of([record])
            walk.skipped += skipped
            live = [entry for entry in found if entry.id == id_]
            if live:
                walk.written += len(self.store.write(alias, type_, live))
            else:
                walk.gone.append(id_)  # its job answers, but no longer with this track
        return 0.0

    def _failed(self, alias: str, type_: str, kind: str, exc: Problem) -> float:
        """Record a failure and pause the alias until the next interval; a walk in progress
        ends (a backfill resumes from its stored cursor)."""
        now = self.clock()
        walk = self._walks.pop((alias, type_), None)
        # The detail is secret-free (the upstream client strips token, ids and job_ids).
        error = f"{exc.code}: {exc.detail}"[:_MAX_ERROR]
        self.store.save_state(alias, type_, last_error=error, last_attempt=now)
        self._paused[alias] = now + self.mirror.interval
        log.warning("mirror %s of %s %s failed: %s", kind, alias, type_, exc.code)
        if walk is None or walk.kind != kind:
            walk = _Walk(kind, None, now)
        self._report(alias, type_, kind, exc.code, walk, now)
        return self.mirror.interval

    def _report(
        self, alias: str, type_: str, kind: str, outcome: str, walk: _Walk, now: float
    ) -> None:
        seconds = max(now - walk.started, 0.0)
        if outcome == "ok":
            log.info(
                "mirror %s of %s %s done: %d calls, %d written, %d deleted, %.1f s",
                kind,
                alias,
                type_,
                walk.calls,
                walk.written,
                walk.deleted,
                seconds,
            )
        last = self.store.state(alias, type_).last_complete
        self.observe(
            SyncReport(
                alias,
                type_,
                kind,
                outcome,
                walk.calls,
                walk.written,
                walk.deleted,
                walk.skipped,
                seconds,
                last,
            )
        )

    # --- generating tracks ------------------------------------------------------------------

    def _active(self, alias: str, type_: str, seen: set[str]) -> int:
        """Refresh the type's generating tracks not read just now (seen): the first page, then
        one by one those it lacks."""
        generating = {
            id_: job_id for id_, job_id in self.store.generating(alias, type_) if id_ not in seen
        }
        if not generating:
            return 0
        user_id = self.users[alias]
        now = self.clock()
        walk = _Walk("active", None, now)
        wait = self.budget.take(user_id)
        if wait:
            self._next_active[(alias, type_)] = now + wait
            return 0
        walk.calls += 1
        records, _ = _page(self.client.list_music(user_id, type_, None, _request_id()))
        entries, walk.skipped = entries_of(records)
        if entries:
            walk.written += len(self.store.write(alias, type_, entries))
        missing = set(generating) - {entry.id for entry in entries}
        for id_ in sorted(missing):
            wait = self.budget.take(user_id)
            if wait:  # the rest at the next refresh the budget allows
                self._next_active[(alias, type_)] = self.clock() + wait
                break
            time.sleep(0)
            walk.calls += 1
            try:
                record = self.client.get_record(user_id, generating[id_], _request_id())
            except UpstreamFailure as exc:
                if exc.upstream_status == 404:
                    continue  # gone upstream: the next reconcile deletes it
                raise
            found, skipped = entries_of([record])
            walk.skipped += skipped
            if found and found[0].id == id_:
                walk.written += len(self.store.write(alias, type_, found))
        self._report(alias, type_, "active", "ok", walk, self.clock())
        return walk.calls


def entries_of(records: Sequence[Any]) -> tuple[list[Entry], int]:
    """The page's records as Entries (first of each id) and how many were skipped: records that
    are not objects or lack a usable itemId or job_id cannot be stored or refreshed."""
    entries: list[Entry] = []
    ids: set[str] = set()
    skipped = 0
    for record in records:
        track = dump_track(record)
        job_id = record.get("job_id") if isinstance(record, dict) else None
        id_ = track["id"]
        if not isinstance(record, dict) or id_ is None or not isinstance(job_id, str) or not job_id:
            skipped += 1
            continue
        if id_ in ids:
            continue  # a page that lists a track twice: the first (newest) copy counts
        ids.add(id_)
        entries.append(Entry(id_, job_id, track, _updated_ms(record.get("updateTime"))))
    return entries, skipped


def _updated_ms(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or not 0 <= value <= _MAX_EPOCH_MS:
        return None
    return int(value)


def _page(raw: dict[str, Any]) -> tuple[list[Any], str | None]:
    """An upstream page's records and next cursor (None: the last page); UpstreamError if
    misshapen. hasNext and the cursor are checked by the same rules as /music's pages."""
    records = raw.get("records")
    if records is None:
        records = []
    if not isinstance(records, list):
        raise UpstreamError("The upstream's answer had no list of records.")
    # Without its records: reshape_page would build (and log about) tracks not needed here.
    shape = reshape_page({**raw, "records": []})
    return records, shape["next_cursor"]


def _request_id() -> str:
    return "mirror-" + uuid.uuid4().hex[:16]
