"""Reading a text/event-stream answer the way a client does: events, comments and `retry:`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests


@dataclass
class Event:
    """One dispatched event (its fields as sent), or a comment line (`comment` set)."""

    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    retry: str | None = None
    comment: str | None = None

    def json(self) -> Any:
        """The data lines joined, as JSON."""
        return json.loads("\n".join(self.data))


def items(resp: requests.Response) -> Iterator[Event]:
    """Each comment as it arrives, and each event once its blank line ends it; a `retry:`
    field alone is given as an event with only `retry`. Stops when the stream ends."""
    current = Event()
    for raw in resp.iter_lines(chunk_size=None):
        line = raw.decode("utf-8")
        if line == "":
            if current.data or current.retry is not None or current.id is not None:
                yield current
            current = Event()
            continue
        if line.startswith(":"):
            yield Event(comment=line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            current.data.append(value)
        elif name in ("id", "event", "retry"):
            setattr(current, name, value)


def events(resp: requests.Response) -> Iterator[Event]:
    """Only the events that carry data (no comments, no bare `retry:`)."""
    return (item for item in items(resp) if item.data)
