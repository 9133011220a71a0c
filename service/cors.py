"""CORS for browser frontends: only the configured origins get CORS headers; default none.

A function of the request's Origin (and, for a preflight, what it asks to send), so /music's
WSGI handler, Flask's routes (hook below) and anything answering outside Flask (gunicorn's own
refusals) compute the same headers.
"""

from __future__ import annotations

from flask import Flask, Response, request

# What a frontend's fetch may send, and which response headers its script may read.
ALLOW_HEADERS = ["Authorization", "If-None-Match", "X-Request-ID"]
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
]
ALLOW_METHODS = "GET, HEAD, OPTIONS"
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

    def headers(
        self, origin: str | None, preflight: bool = False, requested: str | None = None
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
        headers = [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Methods", ALLOW_METHODS),
            ("Access-Control-Max-Age", MAX_AGE),
            ("Vary", "Origin"),
        ]
        if allowed:
            headers.append(("Access-Control-Allow-Headers", ", ".join(allowed)))
        return headers


def register(app: Flask, cors: Cors) -> None:
    """Put the CORS headers on every Flask response (preflights included)."""
    if not cors.enabled:
        return

    @app.after_request
    def _cors(resp: Response) -> Response:
        preflight = (
            request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        )
        requested = request.headers.get("Access-Control-Request-Headers")
        for name, value in cors.headers(request.headers.get("Origin"), preflight, requested):
            if name == "Vary":
                resp.vary.add(value)
            else:
                resp.headers[name] = value
        return resp
