"""`music-facade mirror status`: where the mirror of each alias and type stands, read from the
configured database alone (no upstream call, no syncer, no schema change)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .config import MirrorSettings, mask_url
from .core.query import TYPES
from .mirror import DatabaseURLError, Store, open_database
from .mirror.database import parse_url
from .mirror.migrations import STEPS
from .text_table import write_table

# As /readyz judges it: an account whose last complete sync is older than this many intervals.
STALE_INTERVALS = 5


class StatusError(Exception):
    """The mirror cannot be read; the message is one line and holds no secret."""


@dataclass(frozen=True)
class AccountStatus:
    """One (alias, type) of the mirror."""

    user: str
    type: str
    state: str  # "syncing" (backfill unfinished), "ok" or "stale"
    tracks: int
    generating: int
    last_complete: str | None  # RFC 3339, UTC
    lag_seconds: float | None  # now minus the last complete sync; None before the first
    last_error: str | None


def open_store(mirror: MirrorSettings) -> Store:
    """The configured mirror's store, read-only in intent: a SQLite file must already exist and
    every schema step must have run (the service makes and migrates it when it starts)."""
    url = mirror.database.reveal()
    password = mirror.password.reveal() if mirror.password is not None else None
    shown = mask_url(url)
    secrets = mirror.secrets()
    try:
        parsed = parse_url(url, password)
    except DatabaseURLError as exc:
        raise StatusError(f"mirror database {shown}: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database is not None
        if not os.path.isfile(parsed.database):
            raise StatusError(
                f"mirror database {shown}: no such file (the service creates it when it starts)"
            )
    try:
        db = open_database(url, password)
    except (DatabaseURLError, SQLAlchemyError, OSError) as exc:
        raise StatusError(f"mirror database {shown}: {_reason(exc, secrets)}") from None
    try:
        with db.read() as conn:
            version = conn.execute(text("SELECT version FROM mirror_schema")).scalar()
    except SQLAlchemyError as exc:
        db.close()
        reason = _reason(exc, secrets)
        if "mirror_schema" in reason:
            reason = "no mirror schema in it (the service creates it when it starts)"
        raise StatusError(f"mirror database {shown}: {reason}") from None
    newest = len(STEPS[db.dialect])
    if version is None or int(version) < newest:
        db.close()
        raise StatusError(
            f"mirror database {shown}: schema version {version or 0}, this release reads "
            f"{newest} (start the service once to migrate it)"
        )
    return Store(db, clock=time.time, changes_retention=mirror.changes_retention)


def _reason(exc: BaseException, secrets: Sequence[str]) -> str:
    """The failure's first line, with any secret the settings hold replaced."""
    orig = getattr(exc, "orig", None)  # the driver's own message, without SQLAlchemy's SQL
    lines = str(orig if orig is not None else exc).strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    for secret in secrets:
        if secret:
            reason = reason.replace(secret, "********")
    return reason


def collect(
    store: Store,
    aliases: Sequence[str],
    interval: float,
    clock: Callable[[], float] = time.time,
) -> list[AccountStatus]:
    """Each alias's and type's status, in the order given, types as the API lists them."""
    now = clock()
    found = []
    for alias in aliases:
        for type_ in TYPES:
            state = store.state(alias, type_)
            counts = store.counts(alias, type_)
            lag = None if state.last_complete is None else max(0.0, now - state.last_complete)
            if not state.backfilled:
                judged = "syncing"
            elif lag is None or lag > STALE_INTERVALS * interval:
                judged = "stale"
            else:
                judged = "ok"
            found.append(
                AccountStatus(
                    user=alias,
                    type=type_,
                    state=judged,
                    tracks=counts["total"],
                    generating=counts.get("generating", 0),
                    last_complete=_rfc3339(state.last_complete),
                    lag_seconds=None if lag is None else round(lag, 1),
                    last_error=state.last_error,
                )
            )
    return found


def _rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
    return moment.replace("+00:00", "Z")


def render_json(database: str, interval: float, rows: list[AccountStatus], out: TextIO) -> None:
    """One JSON document: the database (password masked), the interval and every account."""
    document: dict[str, Any] = {
        "database": database,
        "interval_seconds": interval,
        "accounts": [asdict(row) for row in rows],
    }
    out.write(json.dumps(document, indent=2) + "\n")


_COLUMNS = ("USER", "TYPE", "STATE", "TRACKS", "GENERATING", "LAST COMPLETE SYNC", "LAG", "ERROR")


def render_text(database: str, interval: float, rows: list[AccountStatus], out: TextIO) -> None:
    """A table, one line per alias and type, under a line naming the database."""
    out.write(f"mirror database {database} (sync every {interval:g} s)\n")
    table = [_COLUMNS] + [
        (
            row.user,
            row.type,
            row.state,
            str(row.tracks),
            str(row.generating),
            row.last_complete or "never",
            "-" if row.lag_seconds is None else f"{row.lag_seconds:.0f}s",
            row.last_error or "-",
        )
        for row in rows
    ]
    write_table(table, out)
