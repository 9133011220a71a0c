"""Per-request plumbing: the request id, headers every response carries, and the access log.

Rule functions, free of any framework: the steps of music_facade.pipeline call them for every
response, whichever entrance answers it.
"""

from __future__ import annotations

import logging
import re
import time
from contextvars import ContextVar

from . import logs, trace

log = logging.getLogger("music_facade.access")

# Probes (load balancers, orchestrators) ask these every few seconds: their lines are DEBUG.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# An incoming X-Request-ID is kept only when it is a short, safe token; otherwise a fresh one.
_REQUEST_ID_RE = re.compile(r"\A[A-Za-z0-9._-]{1,64}\Z")


class UpstreamTally:
    """The upstream calls made for one request before its access line: how many, how long
    in all, and the last answer's status. The line reports them, in place of a line per call
    (nginx's $upstream_status and $upstream_response_time, on one line)."""

    __slots__ = ("calls", "seconds", "status")

    def __init__(self) -> None:
        self.calls = 0
        self.seconds = 0.0
        self.status: int | None = None


# The current request's tally while its access line is still to be written; None otherwise
# (a call outside any request, or made by a stream after its line: it writes its own line).
# Per thread, and per greenlet under gevent.
TALLY: ContextVar[UpstreamTally | None] = ContextVar("upstream_tally", default=None)


def request_id(given: str | None) -> str:
    """The request's id: the caller's X-Request-ID when it is safe, else a fresh one."""
    if given and _REQUEST_ID_RE.match(given):
        return given
    return trace.random_hex(32)  # 32 hex digits, as uuid4().hex, without building a UUID


def common_headers(rid: str, span: trace.Trace | None) -> list[tuple[str, str]]:
    """The headers every response of the service carries (traceparent: the service's span)."""
    headers = [("X-Request-ID", rid), ("X-Content-Type-Options", "nosniff")]
    if span is not None:
        headers.append(("traceparent", span.header()))
    return headers


# The access line's record, its constant parts worked out once (music_facade.logs.LineRecords).
ACCESS_LINES = logs.LineRecords(log, "%s %s %s", __file__, "log_access")


def log_access(
    method: str,
    path: str,
    status: int,
    rid: str | None,
    started: float,
    *,
    user: str | None,
    client: str | None,
    cache: str | None,
    remote_addr: str | None,
    upstream: UpstreamTally | None = None,
) -> None:
    """One INFO line per request, DEBUG for probes (music_facade.access at WARNING: none at all)."""
    level = logging.DEBUG if path in PROBE_PATHS else logging.INFO
    fields = {
        "request_id": rid,
        "method": method,
        "path": path,
        # Not the raw query: a careless caller may put a key in it. The parsed alias instead.
        "user": user,
        "client": client,
        "status": status,
        "duration_ms": round((time.monotonic() - started) * 1000, 2),
        "cache": cache,
        "remote_addr": remote_addr,
    }
    if upstream is not None and upstream.calls:
        fields["upstream_calls"] = upstream.calls
        fields["upstream_ms"] = round(upstream.seconds * 1000, 1)
        fields["upstream_status"] = upstream.status
    ACCESS_LINES.emit(level, (method, path, status), fields)
