"""Endpoints about the service itself: liveness, readiness and the OpenAPI document."""

from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app

from .errors import problem_response
from .lifecycle import Lifecycle

bp = Blueprint("meta", __name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers HTTP. It does not call the upstream."""
    resp = Response('{"status":"ok"}', mimetype="application/json")
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: 200 while the process may take traffic, 503 once it is shutting down.

    Redis being down is "degraded" and still ready: pulling every replica out because the
    shared store is gone would turn a degraded fleet into an outage.
    """
    checks = {"redis": redis_check()}
    lifecycle: Lifecycle = current_app.extensions["lifecycle"]
    if lifecycle.shutting_down:
        doc = {
            "type": "tag:music-facade,2026:problem/shutting_down",
            "title": "Shutting down",
            "status": 503,
            "detail": "This process is shutting down; new requests belong on another replica.",
            "code": "shutting_down",
            "checks": checks,
        }
        return problem_response(503, doc)
    resp = Response(
        json.dumps({"status": "ready", "checks": checks}, separators=(",", ":")),
        mimetype="application/json",
    )
    resp.headers["Cache-Control"] = "no-store"
    return resp


def redis_check() -> str:
    """'off' without Redis; 'ok' when it answers a PING now; 'degraded' when it does not."""
    store = current_app.extensions.get("store")
    if store is None:
        return "off"
    from .shared import StoreUnavailable

    try:
        store.call(lambda r: r.ping())
    except StoreUnavailable:
        return "degraded"
    return "ok"


@bp.get("/openapi.yaml")
def openapi() -> Response:
    """The service's contract."""
    resp = Response(current_app.extensions["openapi"], mimetype="application/yaml")
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


def register(app: Flask) -> None:
    """Mount /healthz, /readyz and /openapi.yaml, reading the document once."""
    app.extensions["openapi"] = OPENAPI_PATH.read_bytes()
    app.extensions["lifecycle"] = Lifecycle()
    app.register_blueprint(bp)
