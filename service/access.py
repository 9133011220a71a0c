"""Per-request plumbing: the request id, headers every response carries, and the access log."""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

log = logging.getLogger("service.access")

# An incoming X-Request-ID is kept only when it is a short, safe token; otherwise a fresh one.
_REQUEST_ID_RE = re.compile(r"\A[A-Za-z0-9._-]{1,64}\Z")


def _begin() -> None:
    g.started = time.monotonic()
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if _REQUEST_ID_RE.match(given) else uuid.uuid4().hex


def _finish(resp: Response) -> Response:
    resp.headers["X-Request-ID"] = g.get("request_id", "")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    log.info(
        "%s %s %s",
        request.method,
        request.path,
        resp.status_code,
        extra={
            "request_id": g.get("request_id"),
            "method": request.method,
            "path": request.path,
            # Not the raw query: a careless caller may put a key in it. The parsed alias instead.
            "user": g.get("user"),
            "client": who.client.name if (who := g.get("caller")) and who.client else None,
            "status": resp.status_code,
            "duration_ms": round((time.monotonic() - g.get("started", time.monotonic())) * 1000, 2),
            "cache": resp.headers.get("Cache-Status"),
            "remote_addr": request.remote_addr,
        },
    )
    return resp


def register(app: Flask) -> None:
    """Give every request an id and every response the common headers and a log line."""
    app.before_request(_begin)
    app.after_request(_finish)
