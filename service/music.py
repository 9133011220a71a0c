"""GET /music: who asks, may they, what, for which account; then the page (cache → upstream).

`MusicHandler` answers GET and HEAD /music, hits and misses alike, as a plain WSGI handler in
front of Flask (a request context, routing and a Response object cost more than the whole of
a cache hit). It calls the same rule functions Flask's hooks call for every other route, in
this order: request id → identify → rate limit → parse query → alias (authorized before it is
looked up, and before the cache) → page → If-None-Match → headers (CORS, rate limit, common)
→ access log.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from flask import Flask
from werkzeug.http import parse_etags

from . import access, trace
from .auth import Authenticator, Principal, authorize, presented
from .bulkhead import Bulkhead
from .cache import Lookup, PageCache
from .config import Settings
from .cors import Cors
from .errors import INTERNAL_DETAIL, InvalidQuery, Problem, UnknownUser, problem_parts
from .limits import Limits, RateLimited
from .metrics import Metrics, client_label
from .query import MusicQuery, parse_query
from .tracks import reshape_page
from .upstream import UpstreamClient

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}
# Cache outcomes after which this process stored a page: its cache gauges change.
STORED = frozenset({"miss", "stale"})


class Music:
    """The pieces behind /music for one process: settings, upstream client and page cache."""

    def __init__(
        self, settings: Settings, client: UpstreamClient, cache: PageCache, bulkhead: Bulkhead
    ) -> None:
        self.settings = settings
        self.client = client
        self.cache = cache
        self.bulkhead = bulkhead

    def alias(self, given: str | None, caller: Principal | None) -> str:
        """The alias a query names, or the implicit one; the caller may read it; it exists.

        The scope is checked first, so an alias outside it gets the same 403 whether or not it
        is configured: a key or token cannot list the configured aliases.
        """
        alias = given if given is not None else self.settings.implicit_user
        if alias is None:
            raise InvalidQuery(
                "Name the account with the 'user' parameter.",
                errors={"user": ["required: the service has several accounts and no default"]},
            )
        authorize(caller, alias)
        if alias not in self.settings.users:
            raise UnknownUser(f"'{alias}' is not a configured user alias.")
        return alias

    def page(self, alias: str, query: MusicQuery, request_id: str) -> Lookup:
        """The rendered page for an alias's query, from the cache or the upstream."""
        user_id = self.settings.users[alias]

        def load() -> bytes:
            # Only a single flight's leader loads, so only leaders take a bulkhead slot.
            with self.bulkhead.slot():
                raw = self.client.list_music(user_id, query.type, query.cursor, request_id)
            return json.dumps(reshape_page(raw), ensure_ascii=False, separators=(",", ":")).encode()

        # \x1f cannot occur in any part (user ids and cursors are visible ASCII).
        key = "\x1f".join((user_id, query.type, query.cursor or ""))
        return self.cache.get(key, load)


def page_parts(
    lookup: Lookup, if_none_match: str | None, credentialed: bool = False
) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Status, body and headers for a page, honouring If-None-Match (weak comparison).

    A page read with a credential is `private, no-cache`: a browser revalidates it every time
    (a 304 when unchanged), so the service checks the credential and its scope on every use and
    a revoked key or another caller never gets a stored copy. Open mode keeps max-age.
    """
    page = lookup.page
    control = "private, no-cache" if credentialed else f"private, max-age={lookup.max_age}"
    headers = [
        ("ETag", f'"{page.etag}"'),
        ("Cache-Control", control),
        ("Cache-Status", lookup.cache_status),
    ]
    if if_none_match and parse_etags(if_none_match).contains_weak(page.etag):
        return 304, b"", headers
    headers += [("Content-Type", "application/json"), ("Content-Length", str(len(page.body)))]
    return 200, page.body, headers


class MusicHandler:
    """WSGI: GET and HEAD /music answered here; every other request goes on to Flask."""

    def __init__(
        self,
        app: WSGIApp,
        music: Music,
        auth: Authenticator,
        limits: Limits,
        cors: Cors,
        metrics: Metrics,
    ) -> None:
        self.app = app
        self.music = music
        self.auth = auth
        self.limits = limits
        self.cors = cors
        # What a /music response varies on: the credential when one is required, the Origin
        # when CORS is on (one Vary header; Cors.headers' own is folded into it).
        vary = (["Origin"] if cors.enabled else []) + (["Authorization"] if auth.required else [])
        self.vary = [("Vary", ", ".join(vary))] if vary else []
        self.metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if environ.get("PATH_INFO") != "/music" or method not in ("GET", "HEAD"):
            return self.app(environ, start_response)
        started = time.monotonic()
        rid = access.request_id(environ.get("HTTP_X_REQUEST_ID"))
        span = trace.begin(environ.get("HTTP_TRACEPARENT"))
        authorization = environ.get("HTTP_AUTHORIZATION")
        presented(authorization)
        who = self.auth.identify(authorization)
        user = cache_status = None
        limit_headers: list[tuple[str, str]] = []
        try:
            state = self.limits.check(who, environ.get("REMOTE_ADDR"))
            if state is not None:
                limit_headers = state.headers()
            if who.problem is not None:
                raise who.problem
            # PEP 3333: the query's bytes arrive as latin-1 text.
            query = parse_query(environ.get("QUERY_STRING", "").encode("latin-1"))
            # Authorized before the cache: a cached page is no excuse.
            alias = self.music.alias(query.user, who.client)
            user = alias
            lookup = self.music.page(alias, query, rid)
            cache_status = lookup.cache_status
            status, body, headers = page_parts(
                lookup, environ.get("HTTP_IF_NONE_MATCH"), who.client is not None
            )
            headers += limit_headers
        except Problem as exc:
            if isinstance(exc, RateLimited):
                self.metrics.limited(client_label(who.client.name if who.client else None))
            status = exc.status
            body, headers = problem_parts(exc.body(), rid, exc.headers)
            headers.append(("Content-Length", str(len(body))))
            present = {name for name, _ in headers}  # a 429 carries its own rate-limit headers
            headers += [h for h in limit_headers if h[0] not in present]
        except Exception as exc:
            log.error("unexpected error", exc_info=exc)
            status = 500
            body, headers = problem_parts(Problem(INTERNAL_DETAIL).body(), rid)
            headers.append(("Content-Length", str(len(body))))
            headers += limit_headers
        if self.cors.enabled:
            headers += [h for h in self.cors.headers(environ.get("HTTP_ORIGIN")) if h[0] != "Vary"]
        headers += self.vary
        headers += access.common_headers(rid, span)
        start_response(_STATUS_LINES[status], headers)
        client = who.client.name if who.client else None
        access.log_access(
            method,
            "/music",
            status,
            rid,
            started,
            user=user,
            client=client,
            cache=cache_status,
            remote_addr=environ.get("REMOTE_ADDR"),
        )
        metrics = self.metrics
        metrics.request("/music", method, status, client_label(client), time.monotonic() - started)
        # A lookup that stored a page changed this process's cache size.
        if cache_status is not None and metrics.page(cache_status) in STORED:
            metrics.cache_size(*self.music.cache.backend.size())
        trace.end()
        return [] if method == "HEAD" else [body]


def _routing_only() -> str:
    """Never called: MusicHandler answers GET and HEAD /music before Flask sees them."""
    raise AssertionError("GET /music reached Flask; MusicHandler is not installed")


def register(app: Flask, music: Music) -> None:
    """Give Flask the /music rule (so it answers OPTIONS and 405 like on any route)."""
    app.extensions["music"] = music
    app.add_url_rule("/music", "music", _routing_only, methods=["GET"])
