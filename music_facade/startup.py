"""What a configuration runs, said once at start (and by check-config): the caller mode, where
shared state lives, what a rate limit means, who may read /metrics, and what to worry about.

Without Redis every worker counts rate limits in its own memory, so a client's limit silently
multiplies by the number of workers; an open /metrics names every alias and client. Neither is
visible from the configuration file alone, so both are said, as warnings, where an operator
looks: the master's start-up log and check-config's output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from limits import parse_many

from .config import Settings, ineffective_keys

log = logging.getLogger(__name__)

# gunicorn's worker count when MUSIC_WORKERS is unset (deploy/gunicorn.conf.py).
DEFAULT_WORKERS = 2


@dataclass(frozen=True)
class Summary:
    """One line of facts, the same facts as log fields, and the warnings."""

    line: str
    fields: dict[str, str | int]
    warnings: list[str]


def summarize(settings: Settings, workers: int) -> Summary:
    """What settings run as, with `workers` processes (gunicorn's workers, or 1)."""
    mode = settings.mode
    state = "Redis (shared by every worker and replica)" if settings.redis else "memory"
    limit, example = _limits(settings)
    if example is not None:
        if settings.redis is not None:
            limit += "; counted in Redis, once for every worker and replica"
        else:
            limit += f"; counted per worker ({workers} worker{'s' if workers != 1 else ''})"
    access = {
        "open": "open to anyone",
        "restricted": "restricted by [metrics] allow / token_sha256",
        "closed": "closed (keys or OIDC configured, no [metrics] allow or token_sha256)",
    }[settings.metrics_access]
    line = f"mode: {mode}; shared state: {state}; rate limits: {limit}; /metrics: {access}"
    warnings = list(ineffective_keys(settings))
    if mode == "open":
        warnings.append("no [[clients]] or [oidc] configured: /music is open to anyone")
    if example is not None and settings.redis is None and workers > 1:
        warnings.append(
            f"rate limits are counted per worker: without [redis] each of the {workers} workers "
            f"counts alone, so a limit of {example} lets up to {_times(example, workers)} "
            "through (and as much again per replica); configure [redis] to count once"
        )
    if settings.metrics_access == "open":
        warnings.append(
            "/metrics is open to anyone: it names every alias and client; restrict it with "
            "[metrics] allow or token_sha256"
        )
    fields: dict[str, str | int] = {
        "mode": mode,
        "shared_state": "redis" if settings.redis else "memory",
        "rate_limits": limit,
        "metrics_access": settings.metrics_access,
        "workers": workers,
    }
    return Summary(line, fields, warnings)


def log_summary(settings: Settings, workers: int) -> None:
    """Log the summary: one INFO line with the facts, then one WARNING line per warning."""
    summary = summarize(settings, workers)
    log.info("music-facade runs: %s", summary.line, extra=summary.fields)
    for line in summary.warnings:
        log.warning("%s", line)


def _limits(settings: Settings) -> tuple[str, str | None]:
    """What a rate limit means in this mode, and one limit in force (None: nothing limited)."""
    default = settings.limits.default
    if settings.mode == "open":
        per_address = settings.limits.per_address
        if per_address is None:
            return "none (open mode without [limits] per_address)", None
        return f"{per_address} per caller address", per_address
    parts = []
    if settings.clients:
        parts.append(f"per client: its rate_limit, else {default}")
    if settings.oidc is not None:
        parts.append(f"per OIDC subject: {default}")
    parts.append(f"without a valid credential: {default} per address")
    example = next((c.rate_limit for c in settings.clients if c.rate_limit), default)
    return ", ".join(parts), example


def _times(limit: str, factor: int) -> str:
    """A limit string with every amount multiplied: _times("5/minute", 2) == "10/minute"."""
    items = []
    for item in parse_many(limit):
        per = item.GRANULARITY.name
        window = per if item.multiples == 1 else f"{item.multiples} {per}s"
        items.append(f"{item.amount * factor}/{window}")
    return ";".join(items)
