"""The webhooks' outbox: one delivery per (webhook, change), made in the change's transaction.

A delivery is claimed before it is attempted: an UPDATE sets `claimed_until` only where the
previous claim has run out, so of several processes on one database exactly one attempts it
(SQLite serializes writers; PostgreSQL re-checks the condition on a row another transaction
just updated). A process that dies mid-attempt loses nothing: its claim runs out and another
takes the delivery. Only the oldest pending delivery of a (webhook, alias, type, track) is ever
claimable, so a receiver sees one track's events in the order they happened.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, and_, case, delete, exists, func, select, update

from .. import jsoncodec
from .migrations import deliveries

if TYPE_CHECKING:
    from .database import Database

CLAIM_SECONDS = 30.0  # longer than one attempt may take (its deadline), so claims never overlap
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


class Change(Protocol):
    """What the outbox reads of a change of the log (store.Change)."""

    @property
    def seq(self) -> int: ...
    @property
    def user(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def event(self) -> str: ...
    @property
    def at(self) -> float: ...
    def data(self) -> dict[str, Any]:
        """The payload's data."""
        ...


@dataclass(frozen=True)
class Route:
    """Which changes a webhook is sent: its name, its aliases ({"*"}: every one), its events."""

    name: str
    users: frozenset[str]
    events: frozenset[str]

    def wants(self, change: Change) -> bool:
        """Whether this change is one of the webhook's."""
        return change.event in self.events and ("*" in self.users or change.user in self.users)


@dataclass(frozen=True)
class Backlog:
    """One webhook's pending deliveries: how many, and when the oldest was made (None: none)."""

    pending: int
    oldest_created_at: float | None


@dataclass(frozen=True)
class Summary:
    """One webhook's deliveries as an operator reads them."""

    pending: int
    failed: int
    delivered: int  # made since the time asked about
    oldest_created_at: float | None  # of the pending ones
    # The last answer of the newest delivery an attempt failed for (still pending, or failed);
    # None with failed_attempts: no answer came. No attempt failed: both None/False.
    last_error_status: int | None
    failed_attempts: bool


@dataclass(frozen=True)
class Delivery:
    """One delivery as a process claimed it."""

    id: str  # the webhook-id: the same on every attempt, for the receiver's de-duplication
    webhook: str
    seq: int
    event: str
    body: str  # the payload, compact JSON, as made with the change
    attempts: int  # made before this one
    created_at: float
    claimed_until: float
    status: str = PENDING
    last_status: int | None = None


def payload(change: Change) -> str:
    """The JSON a webhook is sent for a change: its event, when it happened, and its data."""
    return jsoncodec.dumps(
        {"type": change.event, "timestamp": rfc3339(change.at), "data": change.data()}
    ).decode()


def rfc3339(epoch: float) -> str:
    """Epoch seconds as an RFC 3339 UTC time with milliseconds."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def enqueue(conn: Connection, made: Sequence[Change], routes: Sequence[Route], now: float) -> int:
    """Add one pending delivery per change and webhook that wants it, in the caller's
    transaction; returns how many were added."""
    rows: list[dict[str, Any]] = []
    for change in made:
        body: str | None = None
        for route in routes:
            if not route.wants(change):
                continue
            body = body if body is not None else payload(change)
            rows.append(
                {
                    "id": f"msg_{uuid.uuid4().hex}",
                    "webhook": route.name,
                    "seq": change.seq,
                    "alias": change.user,
                    "type": change.type,
                    "track": change.id,
                    "event": change.event,
                    "body": body,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "claimed_until": 0.0,
                    "status": PENDING,
                    "last_status": None,
                    "created_at": now,
                }
            )
    if rows:
        conn.execute(deliveries.insert(), rows)
    return len(rows)


_COLUMNS = (
    deliveries.c.id,
    deliveries.c.webhook,
    deliveries.c.seq,
    deliveries.c.event,
    deliveries.c.body,
    deliveries.c.attempts,
    deliveries.c.created_at,
    deliveries.c.claimed_until,
    deliveries.c.status,
    deliveries.c.last_status,
)


def _delivery(row: Any) -> Delivery:
    return Delivery(
        row.id,
        row.webhook,
        int(row.seq),
        row.event,
        row.body,
        int(row.attempts),
        float(row.created_at),
        float(row.claimed_until),
        row.status,
        None if row.last_status is None else int(row.last_status),
    )


class Outbox:
    """Claims due deliveries and records each attempt's outcome."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock

    def claim(self, limit: int, webhooks: Sequence[str]) -> list[Delivery]:
        """Claim up to `limit` due deliveries of these webhooks, oldest first, each the oldest
        pending one of its webhook and track; none is claimed by another process at once.

        A webhook no longer configured keeps its pending deliveries, unclaimed.
        """
        now = self._clock()
        d = deliveries
        earlier = deliveries.alias("earlier")
        blocked = exists().where(
            earlier.c.webhook == d.c.webhook,
            earlier.c.alias == d.c.alias,
            earlier.c.type == d.c.type,
            earlier.c.track == d.c.track,
            earlier.c.status == PENDING,
            earlier.c.seq < d.c.seq,
        )
        due = (
            select(d.c.id)
            .where(
                d.c.status == PENDING,
                d.c.webhook.in_(list(webhooks)),
                d.c.next_attempt_at <= now,
                d.c.claimed_until < now,
                ~blocked,
            )
            .order_by(d.c.seq, d.c.webhook)
            .limit(limit)
        )
        with self._db.write(lock=False) as conn:
            ids = list(conn.execute(due).scalars())
            if not ids:
                return []
            # Conditional again: a concurrent claimer that took a row first makes it fail here.
            claimed = conn.execute(
                update(d)
                .where(d.c.id.in_(ids), d.c.status == PENDING, d.c.claimed_until < now)
                .values(claimed_until=now + CLAIM_SECONDS)
                .returning(*_COLUMNS)
            )
            found = [_delivery(row) for row in claimed]
        return sorted(found, key=lambda one: (one.seq, one.webhook))

    def record(
        self,
        delivery: Delivery,
        *,
        status: str,
        answered: int | None,
        next_attempt_at: float | None = None,
    ) -> bool:
        """Record an attempt: delivered, failed, or pending again from next_attempt_at. Only
        while the claim is still this one's (False: it ran out and another process took it)."""
        values: dict[str, Any] = {
            "status": status,
            "attempts": deliveries.c.attempts + 1,
            "last_status": answered,
            "claimed_until": 0.0,
        }
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        with self._db.write(lock=False) as conn:
            done = conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.id == delivery.id,
                    deliveries.c.status == PENDING,
                    deliveries.c.claimed_until == delivery.claimed_until,
                )
                .values(**values)
            )
        return done.rowcount == 1

    def prune(self, before: float) -> int:
        """Remove the delivered and failed deliveries made before `before`; how many."""
        with self._db.write(lock=False) as conn:
            done = conn.execute(
                delete(deliveries).where(
                    deliveries.c.status != PENDING, deliveries.c.created_at < before
                )
            )
        return int(done.rowcount)

    def find(self, webhook: str | None = None) -> list[Delivery]:
        """Every delivery (of one webhook), in the order of their changes."""
        statement = select(*_COLUMNS).order_by(deliveries.c.seq, deliveries.c.webhook)
        if webhook is not None:
            statement = statement.where(deliveries.c.webhook == webhook)
        with self._db.read() as conn:
            return [_delivery(row) for row in conn.execute(statement)]

    def next_due(self) -> float | None:
        """When the earliest pending delivery is next due (None: nothing is pending)."""
        with self._db.read() as conn:
            found = conn.execute(
                select(deliveries.c.next_attempt_at)
                .where(deliveries.c.status == PENDING)
                .order_by(deliveries.c.next_attempt_at)
                .limit(1)
            ).scalar()
        return None if found is None else float(found)

    def backlog(self, webhooks: Sequence[str]) -> dict[str, Backlog]:
        """Each of these webhooks' pending deliveries (one indexed query for all of them)."""
        d = deliveries
        statement = (
            select(d.c.webhook, func.count(), func.min(d.c.created_at))
            .where(d.c.status == PENDING, d.c.webhook.in_(list(webhooks)))
            .group_by(d.c.webhook)
        )
        found = dict.fromkeys(webhooks, Backlog(0, None))
        with self._db.read() as conn:
            for name, count, oldest in conn.execute(statement):
                found[name] = Backlog(int(count), None if oldest is None else float(oldest))
        return found

    def summary(self, webhooks: Sequence[str], delivered_since: float) -> dict[str, Summary]:
        """Each of these webhooks' pending, failed and (made since `delivered_since`) delivered
        deliveries, the oldest pending one's making and the last failed attempt's answer."""
        d = deliveries
        counts = (
            select(
                d.c.webhook,
                func.sum(case((d.c.status == PENDING, 1), else_=0)),
                func.sum(case((d.c.status == FAILED, 1), else_=0)),
                func.sum(
                    case(
                        (and_(d.c.status == DELIVERED, d.c.created_at >= delivered_since), 1),
                        else_=0,
                    )
                ),
                func.min(case((d.c.status == PENDING, d.c.created_at), else_=None)),
            )
            .where(d.c.webhook.in_(list(webhooks)))
            .group_by(d.c.webhook)
        )
        # Not delivered after an attempt: a retry is waiting, or it failed for good.
        tried = and_(d.c.status != DELIVERED, d.c.attempts > 0)
        newest = (
            select(d.c.webhook, func.max(d.c.seq).label("seq"))
            .where(tried, d.c.webhook.in_(list(webhooks)))
            .group_by(d.c.webhook)
            .subquery()
        )
        errors = (
            select(d.c.webhook, d.c.last_status)
            .join(newest, and_(newest.c.webhook == d.c.webhook, newest.c.seq == d.c.seq))
            .where(tried)
        )
        found = dict.fromkeys(webhooks, Summary(0, 0, 0, None, None, False))
        last: dict[str, int | None] = {}
        with self._db.read() as conn:
            rows = list(conn.execute(counts))
            for name, status in conn.execute(errors):
                last[name] = None if status is None else int(status)
        for name, pending, failed, delivered, oldest in rows:
            found[name] = Summary(
                int(pending or 0),
                int(failed or 0),
                int(delivered or 0),
                None if oldest is None else float(oldest),
                last.get(name),
                name in last,
            )
        return found

    def retry(self, webhook: str) -> int:
        """Make the webhook's failed deliveries pending again, due now, with a new 24-hour
        window (created_at is now; their attempts are kept); how many."""
        now = self._clock()
        with self._db.write(lock=False) as conn:
            done = conn.execute(
                update(deliveries)
                .where(deliveries.c.webhook == webhook, deliveries.c.status == FAILED)
                .values(status=PENDING, next_attempt_at=now, claimed_until=0.0, created_at=now)
            )
        return int(done.rowcount)
