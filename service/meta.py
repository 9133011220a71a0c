"""Endpoints about the service itself: liveness, readiness, the contract and its docs page."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from cachetools import LRUCache
from flask import Blueprint, Flask, Response, current_app, request
from flask_swagger_ui import get_swaggerui_blueprint

from .config import Settings
from .errors import problem_response
from .lifecycle import Lifecycle

bp = Blueprint("meta", __name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")

# The credential kinds a deployment may require, each with the test that says whether this
# deployment configured it. The served `security` lists those configured, as alternatives; a
# new kind (e.g. OIDC bearer tokens) is one more row here and its scheme in openapi.yaml.
SECURITY_SCHEMES: dict[str, Callable[[Settings], bool]] = {
    "clientKey": lambda settings: bool(settings.clients),
    "oidcToken": lambda settings: settings.oidc is not None,
}


def security_requirements(settings: Settings) -> list[dict[str, list[str]]]:
    """The served document's `security`: one alternative per configured credential kind."""
    return [{name: []} for name, configured in SECURITY_SCHEMES.items() if configured(settings)]


def deployment_document(base: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """openapi.yaml as this deployment serves it, but for `servers` (which is per request).

    `security` is required when a credential is configured and absent in open mode (an
    optional one makes generators demand credentials and schemathesis skip its auth checks);
    `user` lists the configured aliases, so tools generate only requests the service can answer.
    """
    doc = copy.deepcopy(base)
    requirements = security_requirements(settings)
    schemes = doc.get("components", {}).get("securitySchemes", {})
    if requirements:
        doc["security"] = requirements
    else:
        doc.pop("security", None)
    for name in list(schemes):
        if not any(name in requirement for requirement in requirements):
            del schemes[name]  # not configured: nothing to describe
    if not schemes:
        doc.get("components", {}).pop("securitySchemes", None)
    user = doc["components"]["parameters"]["User"]
    user["schema"]["enum"] = sorted(settings.users)
    user["example"] = settings.implicit_user or sorted(settings.users)[0]
    return doc


class ServedDocuments:
    """The deployment's document, serialized once per (address asked for, format).

    The address comes from the Host header, which the caller picks: the cache is bounded.
    """

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.cache: LRUCache[tuple[str, str], bytes] = LRUCache(maxsize=32)
        self.lock = threading.Lock()

    def render(self, server_url: str, kind: str) -> bytes:
        """The document naming server_url as its server, as 'yaml' or 'json'."""
        with self.lock:
            found = self.cache.get((server_url, kind))
        if found is not None:
            return found
        doc = dict(self.doc)
        doc["servers"] = [{"url": server_url, "description": "This deployment."}]
        if kind == "json":
            body = json.dumps(doc, separators=(",", ":")).encode()
        else:
            body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode()
        with self.lock:
            self.cache[(server_url, kind)] = body
        return body


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


def _document(kind: str, mimetype: str) -> Response:
    documents: ServedDocuments = current_app.extensions["openapi"]
    # request.host_url honours X-Forwarded-Proto from trusted proxies (service.proxies).
    body = documents.render(request.host_url.rstrip("/"), kind)
    resp = Response(body, mimetype=mimetype)
    resp.headers["Cache-Control"] = "public, max-age=300"
    resp.headers["Vary"] = "Host"
    return resp


@bp.get("/openapi.yaml")
def openapi_yaml() -> Response:
    """The service's contract, as this deployment serves it."""
    return _document("yaml", "application/yaml")


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The same document as JSON, for tools that read only JSON."""
    return _document("json", "application/json")


def register(app: Flask, settings: Settings) -> None:
    """Mount /healthz, /readyz, /openapi.yaml, /openapi.json and /docs."""
    base = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    app.extensions["openapi"] = ServedDocuments(deployment_document(base, settings))
    app.extensions["lifecycle"] = Lifecycle()
    app.register_blueprint(bp)
    docs = get_swaggerui_blueprint(
        "/docs",
        "/openapi.json",  # same origin: the page and "Try it out" call this service
        config={
            "app_name": "music-facade API",
            # Swagger UI would otherwise send the document to validator.swagger.io: offline.
            "validatorUrl": None,
        },
    )
    app.register_blueprint(docs)
    # The page at /docs itself, not only /docs/ (its assets stay under /docs/).
    app.add_url_rule("/docs", "docs", app.view_functions["swagger_ui.show"])
