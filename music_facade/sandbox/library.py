"""The sandbox's accounts as a live library: tracks are added, generate, are edited, deleted.

Each SandboxState holds one Library. It starts as (and resets to) the deterministic accounts of
data.ACCOUNTS, whose records it shares without changing them: an edit replaces a record with an
edited copy.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from music_facade.sandbox.data import ACCOUNTS, INSTRUMENTAL, SONG, TYPES, Account
from music_facade.sandbox.edits import edited
from music_facade.sandbox.generation import GeneratingTrack, milliseconds
from music_facade.sandbox.synthetic import MAX_RECORDS, Synthetic, SyntheticBatch

Entry = Any
"""One record of an account's list: a stored JSON value (usually a record), a GeneratingTrack
or a Synthetic."""


class NoSuchAccount(LookupError):
    """The library has no account with this user_id."""


class NoSuchTrack(LookupError):
    """The account has no track with this itemId."""


@dataclass(frozen=True)
class Listing:
    """What paging one account's list needs to know: how it pages and how long it is now."""

    user_id: str
    single_page: bool
    has_records_key: bool
    size: int


class _Account:
    """One account's records per type, newest first, and where each itemId is."""

    def __init__(self, user_id: str, *, single_page: bool = False, records_key: bool = True):
        self.user_id = user_id
        self.single_page = single_page
        self.has_records_key = records_key
        self.entries: dict[str, list[Entry]] = {music_type: [] for music_type in TYPES}
        self.items: dict[str, tuple[str, Entry]] = {}
        """Stored and generating records by itemId (synthetic ones are found by decoding)."""
        self.batches: dict[str, SyntheticBatch] = {}

    @classmethod
    def original(cls, account: Account) -> _Account:
        """A live copy of one of data.ACCOUNTS, sharing its (unchanged) records."""
        live = cls(
            account.user_id,
            single_page=account.single_page,
            records_key=account.has_records_key,
        )
        for music_type in TYPES:
            records = account.records(music_type)
            live.entries[music_type] = list(records)
            for record in records:
                item = record.get("itemId") if isinstance(record, dict) else None
                # A job_id names a non-empty itemId; the first record with it wins, as a scan would.
                if isinstance(item, str) and item:
                    live.items.setdefault(item, (music_type, record))
        return live

    def locate(self, item: str) -> tuple[str, Entry]:
        """The type and entry of the track with this itemId."""
        found = self.items.get(item)
        if found is not None:
            return found
        for music_type, batch in self.batches.items():
            index = batch.index_of(item)
            if index is not None:
                return music_type, Synthetic(batch, index)
        raise NoSuchTrack(item)

    def replace(self, music_type: str, old: Entry, new: Entry | None) -> None:
        """Put `new` where `old` is in the list (None: remove `old`)."""
        entries = self.entries[music_type]
        start = 0
        if isinstance(old, Synthetic):
            # Synthetic records keep their order and only ever leave the list, so record i is
            # at least i - (how many left) from the top: no scan of a large account from the top.
            start = max(0, old.index - len(old.batch.removed))
        position = next(i for i in range(start, len(entries)) if _same(entries[i], old))
        if new is None:
            del entries[position]
        else:
            entries[position] = new
        if isinstance(old, Synthetic):
            old.batch.removed.add(old.index)


def _same(entry: Entry, other: Entry) -> bool:
    if isinstance(entry, Synthetic) and isinstance(other, Synthetic):
        return entry.batch is other.batch and entry.index == other.index
    return entry is other


def _record(entry: Entry, now: float) -> Any:
    """The JSON an entry is served as at `now`."""
    if isinstance(entry, GeneratingTrack):
        return entry.record(now)
    if isinstance(entry, Synthetic):
        return entry.record()
    return entry


def _originals() -> dict[str, _Account]:
    return {user_id: _Account.original(account) for user_id, account in ACCOUNTS.items()}


class Library:
    """Every account of the sandbox; safe to share between request threads."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._accounts = _originals()
        # Never reset, so a track added after a reset never reuses an earlier itemId.
        self._added = itertools.count()

    def reset(self) -> None:
        """Back to the deterministic accounts: added, edited and generated tracks are gone."""
        originals = _originals()
        with self._lock:
            self._accounts = originals

    def listing(self, user_id: str, music_type: str) -> Listing | None:
        """How one account's list of one type pages now; None for an unknown account."""
        with self._lock:
            account = self._accounts.get(user_id)
            if account is None:
                return None
            size = len(account.entries[music_type])
            return Listing(user_id, account.single_page, account.has_records_key, size)

    def page(self, user_id: str, music_type: str, start: int, end: int | None) -> list[Any]:
        """The records from start to end (None: to the last) of one account's list, as served
        now; empty for an unknown account."""
        with self._lock:
            account = self._accounts.get(user_id)
            if account is None:
                return []
            now = self._clock()
            return [_record(entry, now) for entry in account.entries[music_type][start:end]]

    def find(self, user_id: str, item: str) -> Any | None:
        """The record with this itemId as served now, or None."""
        with self._lock:
            account = self._accounts.get(user_id)
            try:
                entry = account.locate(item)[1] if account is not None else None
            except NoSuchTrack:
                return None
            return None if entry is None else _record(entry, self._clock())

    def add(
        self,
        user_id: str,
        music_type: str,
        edits: Mapping[str, Any],
        *,
        seconds: float = 30,
        outcome: str = "completed",
    ) -> dict[str, Any]:
        """Start generating a track at the top of the list; its record as served now."""
        with self._lock:
            account = self._account(user_id)
            now = self._clock()
            number = next(self._added)
            digest = hashlib.sha256(f"added:{user_id}:{music_type}:{number}".encode())
            item = digest.hexdigest()[:15]
            track = GeneratingTrack(
                user_id,
                music_type,
                number,
                item,
                edits,
                created=now,
                seconds=seconds,
                outcome=outcome,
            )
            account.entries[music_type].insert(0, track)
            account.items[item] = (music_type, track)
            return track.record(now)

    def edit(self, user_id: str, item: str, edits: Mapping[str, Any]) -> Any:
        """Change some fields of a track; updateTime becomes now. Its record as served now."""
        with self._lock:
            account = self._account(user_id)
            music_type, entry = account.locate(item)
            now = self._clock()
            if isinstance(entry, GeneratingTrack):
                entry.edit(edits, now)
                return entry.record(now)
            record = edited(_record(entry, now), edits)
            record["updateTime"] = milliseconds(now)
            account.replace(music_type, entry, record)
            account.items[item] = (music_type, record)
            return record

    def delete(self, user_id: str, item: str) -> None:
        """Remove a track from every endpoint."""
        with self._lock:
            account = self._account(user_id)
            music_type, entry = account.locate(item)
            account.replace(music_type, entry, None)
            account.items.pop(item, None)

    def generate(self, user_id: str, songs: int, instrumentals: int) -> None:
        """Replace an account's records (or create the account) with synthetic ones, the
        newest created now."""
        for name, count in (("songs", songs), ("instrumentals", instrumentals)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"{name} must be an integer of at least 0")
            if count > MAX_RECORDS:
                raise ValueError(f"{name} must be at most {MAX_RECORDS}")
        account = _Account(user_id)
        newest = milliseconds(self._clock())
        for music_type, count in ((SONG, songs), (INSTRUMENTAL, instrumentals)):
            batch = SyntheticBatch(user_id, music_type, count, newest)
            account.batches[music_type] = batch
            account.entries[music_type] = list(
                map(Synthetic, itertools.repeat(batch), range(count))
            )
        with self._lock:
            self._accounts[user_id] = account

    def _account(self, user_id: str) -> _Account:
        account = self._accounts.get(user_id)
        if account is None:
            raise NoSuchAccount(user_id)
        return account
