"""Endpoints about the service itself: health and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, current_app

bp = Blueprint("meta", __name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers HTTP. It does not call the upstream."""
    resp = Response('{"status":"ok"}', mimetype="application/json")
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/openapi.yaml")
def openapi() -> Response:
    """The service's contract."""
    resp = Response(current_app.extensions["openapi"], mimetype="application/yaml")
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


def register(app: Flask) -> None:
    """Mount /healthz and /openapi.yaml, reading the document once."""
    app.extensions["openapi"] = OPENAPI_PATH.read_bytes()
    app.register_blueprint(bp)
