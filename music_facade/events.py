"""GET /events: the mirror's change log as a live Server-Sent Events stream.

A route of the /music handler (music_facade.music), so credentials, scopes, rate limits, CORS,
request ids, metrics and problems are those of /changes. Everything that can refuse the
request (the query, the scope, a position older than the retained log, a caller at its cap
of streams across the fleet, a full worker) is answered before the first byte as an ordinary
problem. Then the stream: `retry:` at once, the
changes after the position in pages of at most `PAGE` (a replay), then live. Live changes come
from the process's `ChangeTail`, which reads the log once per wake-up for every stream; each
stream keeps its own position and filter, and reads the log itself again whenever what the tail
hands it does not continue that position (it fell behind, or subscribed in between), so it
sends every change once and in order. A quiet stream sends a comment
every `[events] heartbeat` seconds, a caller that hung up or a process that begins shutting
down ends it within `WAIT_SLICE` seconds, and each write is bounded like /library's. While it
runs a stream renews its caller's lease (music_facade.stream_leases) from the same loop.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from . import jsoncodec
from .auth import UserNotAllowed
from .change_tail import PAGE, ChangeTail
from .config import EventsSettings, LibrarySettings
from .core.query import TYPES, decode_query
from .errors import InvalidQuery, Problem
from .lifecycle import Lifecycle
from .scope import Answer, Scope
from .stream_leases import LEASE, RENEW_EVERY, Lease, StreamLeaseStore
from .streaming import BUSY_RETRY_AFTER, Connection, Slot, Stream, StreamSlots
from .tickets import GRANT, Grant
from .wakeups import Wakeups

if TYPE_CHECKING:
    from .mirror.store import Change, ChangesPage, Store

log = logging.getLogger(__name__)

RETRY_MS = 3000  # how long a client waits before it reconnects (the `retry:` field)
WAIT_SLICE = 0.5  # seconds: how often a waiting stream looks at its caller and the process
MAX_SEQ = 2**63 - 1
_PARAMETERS = ("user", "type", "since", "ticket")  # a ticket is redeemed by music_facade.tickets
_KEEP_ALIVE = b": keep-alive\n\n"


class EventsBusy(Problem, code="events_busy"):
    """The worker already holds as many /events streams as it allows."""


class TooManyStreams(Problem, code="too_many_streams"):
    """The caller already holds as many /events streams as it may, across every replica."""


def _too_many(cap: int) -> Problem:
    return TooManyStreams(
        f"This caller already holds {cap} event streams; close one or retry shortly.",
        headers={"Retry-After": str(BUSY_RETRY_AFTER)},
    )


def caller_key(scope: Scope) -> str:
    """Whose cap a stream counts against: the client's name (a ticket's is its issuer's, an
    OIDC caller's `oidc:<subject>`), or in open mode the caller's address, as rate limits
    key a caller."""
    client = scope.who.client
    if client is not None:
        return f"client:{client.name}"
    return f"addr:{scope.environ.get('REMOTE_ADDR')}"


def _busy(size: int) -> Problem:
    return EventsBusy(
        f"This process already holds {size} event streams; retry shortly.",
        headers={"Retry-After": str(BUSY_RETRY_AFTER)},
    )


class Events:
    """Answers GET /events for the handler: one per app, with the process's slots and poller."""

    def __init__(
        self,
        settings: EventsSettings,
        library: LibrarySettings,
        store: Store,
        lifecycle: Lifecycle,
        leases: StreamLeaseStore,
        wakeups: Wakeups | None = None,
    ) -> None:
        self.settings = settings
        self.leases = leases
        self.send_timeout = library.send_timeout
        self.store = store
        self.lifecycle = lifecycle
        self.slots = StreamSlots(settings.max_streams, _busy)
        self.wakeups = wakeups if wakeups is not None else Wakeups(store.version)
        self.tail = ChangeTail(store, self.wakeups, _render)

    def answer(self, raw: bytes, scope: Scope, item: str) -> Answer:
        """Validate, find the position (410 before the first byte), take a slot, stream."""
        args, errors = decode_query(raw)
        values: dict[str, str] = {}
        for name, given in args.items():
            if name not in _PARAMETERS:
                errors[name] = [f"is not a parameter of /events (use {', '.join(_PARAMETERS)})"]
            elif len(given) > 1:
                errors[name] = ["must be given once"]
            else:
                values[name] = given[0]
        type_ = values.get("type")
        if type_ is not None and type_ not in TYPES:
            errors["type"] = [f"must be one of {', '.join(TYPES)}"]
        grant: Grant | None = scope.environ.get(GRANT)
        if grant is not None and grant.type is not None:
            # A ticket issued for one type streams only that type.
            if type_ is not None and type_ != grant.type:
                errors["type"] = [f"must be {grant.type}, the ticket's"]
            type_ = grant.type
        since = _position(values.get("since"), "since", errors)
        header = scope.environ.get("HTTP_LAST_EVENT_ID")
        if header is not None:
            # The reconnecting client's own bookmark wins over the URL it was first given.
            since = _position(header.strip(), "Last-Event-ID", errors)
        if errors:
            raise InvalidQuery(f"Invalid query parameter(s): {', '.join(errors)}.", errors=errors)
        users = values.get("user")
        aliases = scope.accounts(tuple(users.split(",")) if users is not None else None)
        if grant is not None:
            # The ticket's aliases bound the stream (in open mode no principal narrows it).
            outside = [a for a in aliases if a not in grant.aliases]
            if users is None:
                aliases = tuple(a for a in aliases if a in grant.aliases)
            elif outside:
                raise UserNotAllowed(f"The ticket does not cover '{outside[0]}'.")
        store = self.store
        if since is None:
            first = None
            position = store.version()  # live only: from now on
        else:
            first = store.changes(since, aliases, PAGE)  # ChangesExpired: 410, nothing sent
            position = since
        lease = self.leases.take(
            caller_key(scope), secrets.token_hex(8), self.settings.max_streams_per_client, LEASE
        )
        if lease is None:
            raise _too_many(self.settings.max_streams_per_client)
        try:
            worker_slot = self.slots.take()
        except Problem:
            lease.release()
            raise
        slot = Slot(lambda: _release_both(worker_slot, lease))
        connection = Connection.of(scope.environ)
        ending = _Ending()
        chunks = self._stream(aliases, type_, position, first, connection, ending, lease)
        stream = _EventStream(chunks, slot, connection, self.send_timeout, ending)
        headers = [
            ("Content-Type", "text/event-stream"),
            ("Cache-Control", "no-cache"),
            ("X-Accel-Buffering", "no"),  # nginx: pass each event on at once
        ]
        return 200, stream, headers, None

    def _stream(
        self,
        aliases: Sequence[str],
        type_: str | None,
        position: int,
        page: ChangesPage | None,
        connection: Connection | None,
        ending: _Ending,
        lease: Lease,
    ) -> Iterator[bytes]:
        # Subscribed once the server begins the stream (a HEAD never does), before the replay's
        # next read of the log: every batch the tail reads from here on is offered to it.
        subscription = self.tail.subscribe(aliases, position)
        wanted = frozenset(aliases)
        store = self.store
        heartbeat = self.settings.heartbeat
        sent = 0
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            beat_at = time.monotonic() + heartbeat
            renew_at = time.monotonic() + RENEW_EVERY
            own_read = page is not None  # a replay, or the tail says this stream is behind it
            while True:
                if time.monotonic() >= renew_at:  # a long replay renews between its pages
                    lease.renew()
                    renew_at = time.monotonic() + RENEW_EVERY
                out: list[bytes] = []
                if own_read:
                    if page is None:
                        page = store.changes(position, aliases, PAGE)
                    out = [_render(c) for c in page.changes if type_ is None or c.type == type_]
                    position = page.next
                    own_read, page = page.has_more, None
                else:
                    batches, own_read = subscription.take()
                    for batch in batches:
                        if batch.end <= position:
                            continue  # passed already (by a read of its own)
                        if batch.start > position or not wanted <= batch.aliases:
                            own_read = True  # a gap: the log has what lies between
                            break
                        out += [
                            event
                            for change, event in batch.changes
                            if change.seq > position
                            and change.user in wanted
                            and (type_ is None or change.type == type_)
                        ]
                        position = batch.end
                if out:
                    sent += len(out)
                    yield b"".join(out)
                    beat_at = time.monotonic() + heartbeat
                if own_read:
                    continue
                while not subscription.ready.is_set():
                    if self.lifecycle.shutting_down:
                        ending.shutdown = True
                        log.info("events stream ended for shutdown after %d events", sent)
                        return
                    if connection is not None and connection.gone():
                        log.info("events caller hung up after %d events", sent)
                        ending.gone = True
                        return
                    now = time.monotonic()
                    if now >= renew_at:
                        lease.renew()
                        renew_at = now + RENEW_EVERY
                    if now >= beat_at:
                        yield _KEEP_ALIVE
                        beat_at = now + heartbeat
                        continue
                    subscription.ready.wait(min(WAIT_SLICE, beat_at - now))
        except GeneratorExit:
            # The server closed the stream: a write failed (the caller left) or timed out.
            log.info("events stream closed after %d events", sent)
            raise
        except Problem as exc:
            # The log was pruned past this stream (it fell far behind): the client reconnects
            # with Last-Event-ID and is told 410 then, as a problem it can read.
            log.warning("events stream ended: %s", exc.code)
        except Exception as exc:
            log.error("unexpected error in an events stream", exc_info=exc)
        finally:
            self.tail.unsubscribe(subscription)


def _release_both(slot: Slot, lease: Lease) -> None:
    try:
        slot.release()
    finally:
        lease.release()


class _Ending:
    """How a stream ended, for its close: a caller gone, or the process shutting down."""

    shutdown = False
    gone = False


class _EventStream(Stream):
    """A Stream whose connection ends with it when the process shuts down (after the last
    chunk, so the client sees a whole answer and reconnects elsewhere) or the caller left."""

    def __init__(
        self,
        chunks: Iterator[bytes],
        slot: Slot,
        connection: Connection | None,
        send_timeout: float,
        ending: _Ending,
    ) -> None:
        super().__init__(chunks, slot, connection, send_timeout)
        self._connection = connection
        self._ending = ending

    def close(self) -> None:
        """As Stream.close, then the connection ended if the stream ended for good.

        The server may close the body before it writes the answer's end (the handler's
        `traced` does, once the chunks run out), so a shutdown only stops the reading side.
        """
        super().close()
        connection = self._connection
        if connection is None:
            return
        if self._ending.gone:
            connection.drop()
        elif self._ending.shutdown:
            connection.stop_reading()


def _position(text: str | None, name: str, errors: dict[str, list[str]]) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or int(text) > MAX_SEQ:
        errors[name] = [f"must be a whole number from 0 to {MAX_SEQ}"]
        return None
    return int(text)


def _render(change: Change) -> bytes:
    """One event: its seq as the id, its name, and one line of JSON."""
    # Compact JSON has no raw newline (one in a string is escaped): one data line.
    body = jsoncodec.dumps(change.data())
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (change.seq, change.event.encode(), body)
