"""Reading a text/event-stream answer the way a client does: events, comments and `retry:`."""

from __future__ import annotations

import json
import threading
import time
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


class Follower:
    """A thread reading one open stream as a client does, noting when each item arrived.

    `arrivals` holds (epoch seconds, item) in order, comments included; `ended` is set once the
    stream ended by itself, and `error` says how if it did not end cleanly (a connection cut
    without the answer's end). stop() returns once the thread saw its next item (a heartbeat at
    the latest) and closes the answer.
    """

    def __init__(self, resp: requests.Response) -> None:
        self.resp = resp
        self.arrivals: list[tuple[float, Event]] = []
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for item in items(self.resp):
                with self._lock:
                    self.arrivals.append((time.time(), item))
                if self._stop.is_set():
                    return
        except requests.RequestException as exc:
            self.error = exc
        self.ended.set()

    def events(self) -> list[tuple[float, Event]]:
        """The events that carry data so far, with their arrival times."""
        with self._lock:
            return [(at, item) for at, item in self.arrivals if item.data]

    def comments(self) -> list[tuple[float, str]]:
        """The comment lines so far, with their arrival times."""
        with self._lock:
            return [(at, item.comment) for at, item in self.arrivals if item.comment is not None]

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading and close the answer (the client hangs up)."""
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream sent nothing to wake its reader"
        self.resp.close()
