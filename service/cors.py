"""CORS for browser frontends: only the configured origins get CORS headers; default none."""

from __future__ import annotations

from flask import Flask, Response
from flask_cors import CORS

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


def register(app: Flask, origins: tuple[str, ...]) -> None:
    """Answer CORS (and preflights) for `origins` on every route; nothing when there are none."""
    if not origins:
        return
    CORS(
        app,
        origins=list(origins),
        methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        supports_credentials=False,  # keys travel in Authorization, never in cookies
        max_age=600,
        vary_header=True,
    )

    @app.after_request
    def _vary(resp: Response) -> Response:
        # flask-cors leaves Vary out when one origin is configured, yet whether the CORS
        # headers are there still depends on the request's Origin.
        if not any("origin" in v.lower() for v in resp.headers.getlist("Vary")):
            resp.vary.add("Origin")
        return resp
