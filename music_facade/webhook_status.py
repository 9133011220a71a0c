"""`music-facade webhooks status` and `webhooks retry`: the webhooks' outbox as an operator reads
and mends it, from the configured mirror database alone (no delivery is attempted here; the
service's deliverers send what `retry` makes pending again)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from .mirror import Store
from .text_table import write_table

DELIVERED_WINDOW = 86_400.0  # seconds: delivered deliveries are counted over the last 24 hours


@dataclass(frozen=True)
class WebhookStatus:
    """One configured webhook's deliveries."""

    webhook: str
    pending: int
    failed: int
    delivered_24h: int  # delivered, of those made in the last 24 hours
    oldest_pending_age_seconds: float | None  # None: nothing pending
    # The last answer of the newest delivery an attempt failed for: "HTTP 500", "no answer";
    # None when no undelivered delivery has been attempted.
    last_error: str | None


def collect(
    store: Store, webhooks: Sequence[str], clock: Callable[[], float] = time.time
) -> list[WebhookStatus]:
    """Each webhook's status, in the order given."""
    now = clock()
    found = store.outbox.summary(webhooks, now - DELIVERED_WINDOW)
    rows = []
    for name in webhooks:
        one = found[name]
        oldest = one.oldest_created_at
        if not one.failed_attempts:
            error = None
        elif one.last_error_status is None:
            error = "no answer"
        else:
            error = f"HTTP {one.last_error_status}"
        rows.append(
            WebhookStatus(
                webhook=name,
                pending=one.pending,
                failed=one.failed,
                delivered_24h=one.delivered,
                oldest_pending_age_seconds=None if oldest is None else round(now - oldest, 1),
                last_error=error,
            )
        )
    return rows


def render_json(database: str, rows: list[WebhookStatus], out: TextIO) -> None:
    """One JSON document: the database (password masked) and every webhook."""
    document: dict[str, Any] = {"database": database, "webhooks": [asdict(r) for r in rows]}
    out.write(json.dumps(document, indent=2) + "\n")


_COLUMNS = ("WEBHOOK", "PENDING", "FAILED", "DELIVERED 24H", "OLDEST PENDING", "LAST ERROR")


def render_text(database: str, rows: list[WebhookStatus], out: TextIO) -> None:
    """A table, one line per webhook, under a line naming the database."""
    out.write(f"mirror database {database}\n")
    table = [_COLUMNS] + [
        (
            row.webhook,
            str(row.pending),
            str(row.failed),
            str(row.delivered_24h),
            "-"
            if row.oldest_pending_age_seconds is None
            else f"{row.oldest_pending_age_seconds:.0f}s",
            row.last_error or "-",
        )
        for row in rows
    ]
    write_table(table, out)
