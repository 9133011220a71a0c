"""Event-stream tickets: how a browser's EventSource, which cannot send a header, opens /events.

`POST /events/tickets` (with the caller's usual credential) answers a ticket: 32 random bytes,
URL-safe, valid `TTL` seconds and for one use. `GET /events?ticket=…` without an Authorization
header redeems it: the stream runs as the caller who asked for it, within the aliases it could
read then (narrowed by the `user` it named) and the `type` it named. The ticket stands in for a
credential in a URL, so only its SHA-256 is stored, it is taken from the store atomically (a
replayed URL finds nothing), and it is redacted from every log line of the request that shows it.

Where tickets live is a `TicketStore`: this process's memory, or (with [redis]) Redis, so any
replica redeems a ticket any other issued (music_facade.shared.tickets).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

from . import jsoncodec, logs
from .auth import OPEN, Caller, Unauthorized
from .core.query import TYPES, decode_query
from .errors import InvalidQuery
from .pipeline import Exchange
from .scope import Answer, Scope

TTL = 60  # seconds a ticket may wait for its stream
TICKET_BYTES = 32
MAX_BODY = 4096  # bytes of a ticket request's JSON
GRANT = "music_facade.ticket"  # the environ key of a redeemed ticket's grant, for /events
MAX_MEMORY_TICKETS = 100_000  # tickets one process keeps unredeemed, at most
_TICKET_RE = re.compile(r"\A[A-Za-z0-9_-]{43,64}\Z")
_FIELDS = ("user", "type")


class InvalidTicket(Unauthorized, code="invalid_ticket"):
    """The ticket is unknown, used already, or expired (a new one is needed for each stream)."""


@dataclass(frozen=True)
class TicketHolder:
    """The principal a redeemed ticket stands for: the issuing caller's name and rate limit,
    reading only the aliases the ticket was issued for."""

    name: str
    rate_limit: str | None
    aliases: frozenset[str]

    def may_read(self, alias: str) -> bool:
        """Whether the ticket covers the alias."""
        return alias in self.aliases


@dataclass(frozen=True)
class Grant:
    """What a ticket allows: whose it is, which aliases and type, and until when."""

    client: str | None  # None: issued in open mode
    rate_limit: str | None
    aliases: tuple[str, ...]
    type: str | None
    expires: float

    def dumps(self) -> bytes:
        """The grant as stored."""
        return jsoncodec.dumps(
            {
                "client": self.client,
                "rate_limit": self.rate_limit,
                "aliases": list(self.aliases),
                "type": self.type,
                "expires": self.expires,
            }
        )

    @classmethod
    def loads(cls, data: bytes) -> Grant:
        """A stored grant."""
        doc: dict[str, Any] = jsoncodec.loads(data)
        return cls(
            doc["client"], doc["rate_limit"], tuple(doc["aliases"]), doc["type"], doc["expires"]
        )

    def caller(self) -> Caller:
        """The caller the ticket authenticates."""
        if self.client is None:
            return OPEN
        return Caller(TicketHolder(self.client, self.rate_limit, frozenset(self.aliases)))


class TicketStore(Protocol):
    """Where unredeemed tickets wait, by the SHA-256 of each."""

    def put(self, digest: str, grant: bytes, ttl: float) -> None:
        """Keep the grant under digest for ttl seconds."""

    def take(self, digest: str) -> bytes | None:
        """The grant under digest, removed in the same step (None: none, or taken already)."""


class MemoryTicketStore:
    """Tickets in this process's memory: redeemable only by the process that issued them."""

    def __init__(self, clock: Callable[[], float], limit: int = MAX_MEMORY_TICKETS) -> None:
        self.clock = clock
        self.limit = limit
        self._lock = threading.Lock()
        self._tickets: dict[str, tuple[float, bytes]] = {}

    def put(self, digest: str, grant: bytes, ttl: float) -> None:
        """Keep it; expired tickets are swept when the store is full, the oldest dropped if
        it is still full (a flood of unused tickets cannot grow memory without end)."""
        with self._lock:
            tickets = self._tickets
            if len(tickets) >= self.limit:
                now = self.clock()
                for key in [k for k, (expires, _) in tickets.items() if expires <= now]:
                    del tickets[key]
                while len(tickets) >= self.limit:
                    del tickets[next(iter(tickets))]  # dicts keep insertion order: the oldest
            tickets[digest] = (self.clock() + ttl, grant)

    def take(self, digest: str) -> bytes | None:
        """Removed under the lock: two redemptions of one ticket cannot both find it."""
        with self._lock:
            found = self._tickets.pop(digest, None)
        if found is None or found[0] <= self.clock():
            return None
        return found[1]


def digest(ticket: str) -> str:
    """The stored name of a ticket: its SHA-256, so the store never holds a usable ticket."""
    return hashlib.sha256(ticket.encode()).hexdigest()


class Tickets:
    """Issues tickets (POST /events/tickets) and redeems them (GET /events?ticket=…)."""

    def __init__(self, store: TicketStore, clock: Callable[[], float], ttl: int = TTL) -> None:
        self.store = store
        self.clock = clock
        self.ttl = ttl

    def issue(self, raw: bytes, scope: Scope, item: str) -> Answer:
        """A new ticket for the caller, within its scope narrowed by the body's user and type."""
        environ = scope.environ
        if raw:
            raise InvalidQuery(
                "/events/tickets takes no query parameters; send them as JSON.",
                errors={name: ["is not a parameter here"] for name in decode_query(raw)[0]},
            )
        values = _body(environ)
        users = values.get("user")
        aliases = scope.accounts(tuple(users.split(",")) if users is not None else None)
        client = scope.who.client
        grant = Grant(
            client.name if client is not None else None,
            client.rate_limit if client is not None else None,
            aliases,
            values.get("type"),
            self.clock() + self.ttl,
        )
        ticket = secrets.token_urlsafe(TICKET_BYTES)
        logs.PRESENTED.set(ticket)  # nothing logged while answering shows it
        self.store.put(digest(ticket), grant.dumps(), self.ttl)
        query = {"ticket": ticket} | {name: values[name] for name in _FIELDS if name in values}
        body = jsoncodec.dumps(
            {"ticket": ticket, "expires_in": self.ttl, "url": "/events?" + urlencode(query)}
        )
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        return 201, [body], headers, None

    def identify(self, ex: Exchange) -> None:
        """The caller of a GET /events that presents a ticket and no Authorization header.

        A ticket that fails leaves a Caller carrying invalid_ticket, answered after the rate
        limit like any failed credential. A request without a ticket is left as it was.
        """
        environ = ex.environ
        query = environ.get("QUERY_STRING", "")
        if "ticket" not in query:
            return
        given = decode_query(query.encode("latin-1"))[0].get("ticket")
        if not given:
            return
        logs.PRESENTED.set(given[0])  # the ticket is this request's secret from now on
        if environ.get("HTTP_AUTHORIZATION") is not None:
            ex.caller = Caller(None, InvalidTicket("Send a ticket or a credential, not both."))
            return
        if len(given) > 1 or not _TICKET_RE.match(given[0]):
            ex.caller = Caller(None, InvalidTicket("The ticket is not well-formed."))
            return
        data = self.store.take(digest(given[0]))
        grant = Grant.loads(data) if data is not None else None
        if grant is None or grant.expires <= self.clock():
            ex.caller = Caller(
                None, InvalidTicket("The ticket is unknown, used or expired; ask for a new one.")
            )
            return
        ex.caller = grant.caller()
        environ[GRANT] = grant


def _body(environ: dict[str, Any]) -> dict[str, str]:
    """The request's JSON object of user and type (no body: neither), checked."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    errors: dict[str, list[str]] = {}
    if length > MAX_BODY:
        raise InvalidQuery("The body is too long.", errors={"body": [f"at most {MAX_BODY} bytes"]})
    data = environ["wsgi.input"].read(length) if length else b""
    if not data.strip():
        return {}
    try:
        doc = jsoncodec.loads(data)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        raise InvalidQuery("The body is not a JSON object.", errors={"body": ["a JSON object"]})
    values: dict[str, str] = {}
    for name, value in doc.items():
        if name not in _FIELDS:
            errors[name] = [f"is not a field of a ticket request (use {', '.join(_FIELDS)})"]
        elif not isinstance(value, str) or not value:
            errors[name] = ["must be a non-empty string"]
        else:
            values[name] = value
    if "type" in values and values["type"] not in TYPES:
        errors["type"] = [f"must be one of {', '.join(TYPES)}"]
    if errors:
        raise InvalidQuery(f"Invalid field(s): {', '.join(errors)}.", errors=errors)
    return values
