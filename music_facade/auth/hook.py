"""Flask's side of callers: every request Flask answers is identified before its view runs."""

from __future__ import annotations

from flask import Flask, current_app, g, request

from . import Authenticator, presented


def _identify() -> None:
    authenticator: Authenticator = current_app.extensions["auth"]
    authorization = request.headers.get("Authorization")
    presented(authorization)
    g.caller = authenticator.identify(authorization)


def register(app: Flask, authenticator: Authenticator) -> None:
    """Identify every Flask request's caller (for its log line and the log redaction)."""
    app.extensions["auth"] = authenticator
    app.before_request(_identify)
