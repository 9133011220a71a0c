"""Large made-up accounts for benchmarks: each record is built from its index when served.

A synthetic record costs nothing until it is served, so an account of a million records is a
list of small markers. Its itemId encodes its index, so finding one by itemId needs no index.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from music_facade.sandbox.data import SONG, TITLE_WORDS, full_record

MAX_RECORDS = 1_000_000
"""The most records of one type a synthetic account may have."""
_MINUTE = 60_000
# Songs every 7 minutes, instrumentals every 11, each shifted by up to a minute: newest first,
# never two at the same millisecond.
_SPACING = {SONG: 7 * _MINUTE}
_OTHER_SPACING = 11 * _MINUTE
_INDEX_DIGITS = 8


@dataclass
class SyntheticBatch:
    """The synthetic records of one account and type: `count` of them, the newest at
    `newest` (epoch milliseconds)."""

    user_id: str
    music_type: str
    count: int
    newest: int
    removed: set[int] = field(default_factory=set)
    """Indexes deleted or edited through the control API: no longer synthetic."""

    _prefix: str = field(init=False)

    def __post_init__(self) -> None:
        seed = f"synthetic:{self.user_id}:{self.music_type}".encode()
        self._prefix = hashlib.sha256(seed).hexdigest()[: 15 - _INDEX_DIGITS]

    def item(self, index: int) -> str:
        """The itemId of record `index`: 15 hex digits, like the upstream's."""
        return f"{self._prefix}{index:0{_INDEX_DIGITS}x}"

    def index_of(self, item: str) -> int | None:
        """The index an itemId names, if it is one of this batch's records still present."""
        prefix = self._prefix
        digits = item[len(prefix) :]
        if not item.startswith(prefix) or len(digits) != _INDEX_DIGITS:
            return None
        try:
            index = int(digits, 16)
        except ValueError:
            return None
        ok = index < self.count and index not in self.removed and item == self.item(index)
        return index if ok else None

    def record(self, index: int) -> dict[str, Any]:
        """Record `index`: a completed track with a title of two title words."""
        words = len(TITLE_WORDS)
        title = f"{TITLE_WORDS[index % words]} {TITLE_WORDS[(index // words + 3 * index) % words]}"
        record = full_record(
            self.user_id, self.music_type, index, item=self.item(index), title=title
        )
        spacing = _SPACING.get(self.music_type, _OTHER_SPACING)
        created = self.newest - index * spacing - (index * 7919) % _MINUTE
        record["createTime"] = created
        record["updateTime"] = created + record["musicMaterial"]["dur"] * 1000
        return record


class Synthetic:
    """One synthetic record in an account's list: a batch and an index, built when served."""

    __slots__ = ("batch", "index")

    def __init__(self, batch: SyntheticBatch, index: int) -> None:
        self.batch = batch
        self.index = index

    def record(self) -> dict[str, Any]:
        """The record it stands for."""
        return self.batch.record(self.index)
