"""A track added through the control API: it generates for a while, then completes or fails.

Its status, progress and updateTime are computed from the clock each time it is served, so no
thread has to move it along.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from music_facade.sandbox.data import full_record
from music_facade.sandbox.edits import edited

GENERATING = 0
OUTCOMES: Mapping[str, int] = {"completed": 30, "failed": 10}
"""The status a generation ends in, by the control API's outcome name."""


def milliseconds(seconds: float) -> int:
    """A clock reading as the upstream's epoch milliseconds."""
    return round(seconds * 1000)


class GeneratingTrack:
    """A track generating from `created` for `seconds`, then in its outcome's status."""

    __slots__ = ("created", "final", "generating", "seconds", "touched")

    def __init__(
        self,
        user_id: str,
        music_type: str,
        number: int,
        item: str,
        edits: Mapping[str, Any],
        *,
        created: float,
        seconds: float,
        outcome: str,
    ) -> None:
        self.created = created
        self.seconds = seconds
        self.touched = 0
        """When the control API last edited it, in epoch milliseconds (0: never)."""
        created_ms = milliseconds(created)

        def shaped(status: tuple[int, int]) -> dict[str, Any]:
            title = edits.get("title")
            record = full_record(user_id, music_type, number, item=item, title=title, status=status)
            record["createTime"] = created_ms
            return edited(record, edits)

        # Two ready records, so serving one is a shallow copy and two numbers.
        self.generating = shaped((GENERATING, 0))
        final = OUTCOMES[outcome]
        self.final = shaped((final, 100 if final >= 30 else 0))
        self.final["updateTime"] = created_ms + milliseconds(seconds)

    @property
    def item(self) -> str:
        """Its itemId."""
        item: str = self.final["itemId"]
        return item

    def record(self, now: float) -> dict[str, Any]:
        """The record as the upstream would serve it at `now`."""
        elapsed = now - self.created
        if elapsed >= self.seconds:
            record = dict(self.final)
        else:
            # Below 100 until the end: a generating track never shows 100.
            progress = max(0, min(99, int(100 * elapsed / self.seconds)))
            record = dict(self.generating, progress=progress)
            # updateTime moves exactly when progress does.
            step = milliseconds(self.seconds * progress / 100)
            record["updateTime"] = milliseconds(self.created) + step
        record["updateTime"] = max(record["updateTime"], self.touched)
        return record

    def edit(self, edits: Mapping[str, Any], now: float) -> None:
        """Apply edits to the track whatever its phase; its updateTime becomes at least now."""
        self.generating = edited(self.generating, edits)
        self.final = edited(self.final, edits)
        self.touched = milliseconds(now)
