"""CORS for browser frontends: only the configured origins get CORS headers; default none.

A function of the request's Origin (and, for a preflight, what it asks to send), so /music's
WSGI handler, Flask's routes (hook below) and anything answering outside Flask (gunicorn's own
refusals) compute the same headers.
"""

from __future__ import annotations

import re

from flask import Flask, Response, request

# What a frontend's fetch may send, and which response headers its script may read. Content-Type
# and Cache-Control are harmless on a GET, and common fetch wrappers add them to every request;
# traceparent is W3C Trace Context, which browser tracing adds.
ALLOW_HEADERS = [
    "Authorization",
    "If-None-Match",
    "X-Request-ID",
    "Content-Type",
    "Cache-Control",
    "traceparent",
]
EXPOSE_HEADERS = [
    "ETag",
    "Cache-Status",
    "Retry-After",
    "X-Request-ID",
    "RateLimit",
    "RateLimit-Policy",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "WWW-Authenticate",
]
ALLOW_METHODS = "GET, HEAD, OPTIONS"
# An RFC 9110 method token: a preflight for another method is allowed too, so the real request
# reaches the service and the page reads its real answer (405 method_not_allowed).
_METHOD_RE = re.compile(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}\Z")
MAX_AGE = "600"

_ALLOWED_LOWER = {h.lower(): h for h in ALLOW_HEADERS}
_EXPOSE = ", ".join(EXPOSE_HEADERS)


class Cors:
    """The CORS headers for the configured origins (none configured: never any)."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.origins = frozenset(origins)

    @property
    def enabled(self) -> bool:
        """Whether any origin is configured."""
        return bool(self.origins)

    def allows(self, origin: str | None) -> bool:
        """Whether origin is one of the configured ones."""
        return origin is not None and origin in self.origins

    def headers(
        self,
        origin: str | None,
        preflight: bool = False,
        requested: str | None = None,
        method: str | None = None,
    ) -> list[tuple[str, str]]:
        """The headers for a response to `origin`; a preflight also answers what it may send.

        Vary: Origin whenever CORS is on: whether the headers are there depends on Origin.
        Keys travel in Authorization, never in cookies: no Allow-Credentials.
        """
        if not self.origins:
            return []
        if origin is None or origin not in self.origins:
            return [("Vary", "Origin")]
        if not preflight:
            return [
                ("Access-Control-Allow-Origin", origin),
                ("Access-Control-Expose-Headers", _EXPOSE),
                ("Vary", "Origin"),
            ]
        asked = [h.strip().lower() for h in (requested or "").split(",") if h.strip()]
        allowed = [_ALLOWED_LOWER[h] for h in asked if h in _ALLOWED_LOWER]
        methods = ALLOW_METHODS
        if method and _METHOD_RE.match(method) and method not in ("GET", "HEAD", "OPTIONS"):
            methods += f", {method}"
        headers = [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Methods", methods),
            ("Access-Control-Max-Age", MAX_AGE),
            ("Vary", "Origin"),
        ]
        if allowed:
            headers.append(("Access-Control-Allow-Headers", ", ".join(allowed)))
        return headers


def _is_preflight() -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def register(app: Flask, cors: Cors) -> None:
    """Answer preflights for any path (music_facade.pipeline puts the CORS headers on every
    response).

    The Cors object is also app.extensions["cors"]: gunicorn's own refusals (music_facade.worker)
    use it too.
    """
    app.extensions["cors"] = cors
    if not cors.enabled:
        return

    @app.before_request
    def _preflight() -> Response | None:
        # Before routing's 404 is raised: an allowed origin's preflight succeeds for any path,
        # so the real request is sent and the page reads its real problem, not a CORS failure.
        # (A known path's preflight is Flask's own OPTIONS answer, with Allow.)
        unknown = request.routing_exception is not None
        if unknown and _is_preflight() and cors.allows(request.headers.get("Origin")):
            return Response(status=200)
        return None
