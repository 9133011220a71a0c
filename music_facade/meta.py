"""Endpoints about the service itself: liveness, readiness, the contract and its docs page."""

from __future__ import annotations

import copy
import functools
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from cachetools import LRUCache
from flask import Blueprint, Flask, Response, current_app, g, request

from . import docs_page, home
from .auth import Authenticator, Caller
from .config import Settings
from .errors import Problem
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


@functools.cache
def packaged_contract() -> dict[str, Any]:
    """openapi.yaml as the package ships it, parsed once per process: every app built here
    starts from it, and deployment_document copies it before changing anything."""
    doc: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    return doc


def deployment_document(base: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """openapi.yaml as this deployment serves it, but for `servers` and the aliases (which are
    per request: with_aliases).

    `security` is required when a credential is configured and absent in open mode (an
    optional one makes generators demand credentials and schemathesis skip its auth checks).
    `user` is the plain `Alias` schema in every document (no enum), so one generated client
    works against every deployment; with_aliases names the readable ones in prose.
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
    if settings.mirror is None:
        _without_mirror(doc)
    return doc


# The paths answered from the mirror: without [mirror] they are 404s, so not in the contract.
MIRROR_PATHS = ("/tracks", "/changes", "/events", "/events/tickets")


def _without_mirror(doc: dict[str, Any]) -> None:
    """Take the mirror's paths out, then every component only they used (a served document
    keeps no unused components, as the packaged one does not), and the tag only they carry."""
    for path in MIRROR_PATHS:
        doc["paths"].pop(path, None)
    components = doc["components"]
    while True:
        used = set(_refs(doc))
        unused = [
            (kind, name)
            for kind in ("parameters", "headers", "schemas", "responses")
            for name in components.get(kind, {})
            if f"#/components/{kind}/{name}" not in used
        ]
        if not unused:
            break
        for kind, name in unused:
            del components[kind][name]
    tagged = {tag for item in doc["paths"].values() for op in item.values()
              if isinstance(op, dict) for tag in op.get("tags", [])}  # fmt: skip
    doc["tags"] = [tag for tag in doc.get("tags", []) if tag["name"] in tagged]


def _refs(node: Any) -> Iterator[str]:
    """Every local $ref (and the target of a $ref into a component's inside) in a node."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            # '#/components/schemas/Track/properties/id' uses the component Track.
            yield "/".join(ref.split("/")[:4])
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def with_aliases(
    doc: dict[str, Any], aliases: tuple[str, ...], default: str | None
) -> dict[str, Any]:
    """The document with `user`'s description naming these aliases (none: unchanged), so a
    reader of /docs knows what to type.

    Prose, not an enum or an example: an enum would become a class per operation in generated
    clients (and tie them to this deployment), and Swagger UI would pre-fill an example.
    """
    if not aliases:
        return doc
    doc = dict(doc)
    components = doc["components"] = dict(doc["components"])
    parameters = components["parameters"] = dict(components["parameters"])
    user = parameters["User"] = dict(parameters["User"])
    listed = ", ".join(f"`{alias}`" for alias in aliases)
    fallback = f" (`{default}` when `user` is absent)" if default in aliases else ""
    user["description"] = (
        f"{user['description'].rstrip()}\n\nThe aliases you may read here: {listed}{fallback}.\n"
    )
    return doc


def served_servers(server_url: str) -> list[dict[str, Any]]:
    """The served `servers`: the packaged template, its default this deployment's address."""
    return [
        {
            "url": "{baseUrl}",
            "description": "This deployment by default; any other deployment's address works too.",
            "variables": {
                "baseUrl": {
                    "default": server_url,
                    "description": "The deployment's base URL, without a trailing slash.",
                }
            },
        }
    ]


def readable_aliases(
    aliases: tuple[str, ...], caller: Caller | None, required: bool
) -> tuple[str, ...]:
    """Of aliases, those a request's caller may read: all in open mode, its scope's with a
    valid credential, none without one (a stranger must not learn which aliases exist)."""
    if not required:
        return aliases
    if caller is None or caller.client is None:
        return ()
    client = caller.client
    return tuple(a for a in aliases if client.may_read(a))


class ServedDocuments:
    """The deployment's document, serialized once per (address asked for, aliases, format).

    The address comes from the Host header, which the caller picks: the cache is bounded.
    """

    def __init__(self, doc: dict[str, Any], settings: Settings) -> None:
        self.doc = doc
        self.aliases = tuple(sorted(settings.users))
        self.default = settings.implicit_user
        self.cache: LRUCache[tuple[str, tuple[str, ...], str], bytes] = LRUCache(maxsize=32)
        self.lock = threading.Lock()

    def render(self, server_url: str, kind: str, aliases: tuple[str, ...] = ()) -> bytes:
        """The document naming server_url as its server and listing aliases, as 'yaml' or
        'json'."""
        key = (server_url, aliases, kind)
        with self.lock:
            found = self.cache.get(key)
        if found is not None:
            return found
        # A shallow copy: the shared document is never written to (renders run concurrently).
        doc = with_aliases(self.doc, aliases, self.default)
        doc = {**doc, "servers": served_servers(server_url)}
        if kind == "json":
            body = json.dumps(doc, separators=(",", ":")).encode()
        else:
            body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode()
        with self.lock:
            self.cache[key] = body
        return body


class ShuttingDown(Problem, code="shutting_down"):
    """/readyz once the process is leaving; `checks` as a ready answer has them."""

    def __init__(self, checks: dict[str, str]) -> None:
        super().__init__("This process is shutting down; new requests belong on another replica.")
        self.checks = checks

    def members(self) -> dict[str, Any]:
        """As any problem's, then the checks."""
        return {**super().members(), "checks": self.checks}


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
    mirror = current_app.extensions.get("mirror")
    if mirror is not None:
        checks["mirror"] = mirror.health()
    lifecycle: Lifecycle = current_app.extensions["lifecycle"]
    if lifecycle.shutting_down:
        raise ShuttingDown(checks)
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
    authenticator: Authenticator = current_app.extensions["auth"]
    # The caller as every route identifies it (music_facade.auth); a refused credential is not an
    # error here (the document needs none), it only lists no aliases.
    caller: Caller | None = g.get("caller")
    credentialed = authenticator.required and caller is not None and caller.client is not None
    aliases = readable_aliases(documents.aliases, caller, authenticator.required)
    # request.host_url honours X-Forwarded-Proto from trusted proxies (music_facade.proxies).
    body = documents.render(request.host_url.rstrip("/"), kind, aliases)
    resp = Response(body, mimetype=mimetype)
    # A document listing a caller's aliases is that caller's: kept by its browser only, and
    # checked again on every use, as /music pages are.
    resp.headers["Cache-Control"] = "private, no-cache" if credentialed else "public, max-age=300"
    resp.headers["Vary"] = "Host, Authorization" if authenticator.required else "Host"
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
    """Mount /healthz, /readyz, /openapi.yaml, /openapi.json, /docs and /."""
    document = deployment_document(packaged_contract(), settings)
    app.extensions["openapi"] = ServedDocuments(document, settings)
    app.extensions["lifecycle"] = Lifecycle()
    app.register_blueprint(bp)
    docs_page.register(app)
    home.register(app)
