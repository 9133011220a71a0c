"""GET /music: who asks, may they, what, for which account; then the page (cache → upstream).

`MusicHandler` answers GET and HEAD /music, hits and misses alike, as a plain WSGI handler in
front of Flask (a request context, routing and a Response object cost more than the whole of
a cache hit). It runs the request pipeline every entrance runs (music_facade.pipeline), and
between its phases the route's own rules: request id → trace → identify (pipeline) → rate
limit → parse query → alias (authorized before it is looked up, and before the cache) → page
→ If-None-Match → rate-limit headers → CORS and common headers (pipeline, then one Vary) →
access log → metrics (pipeline). /music/{id}, /music/{id}/audio and /library go through the
same steps, each its own route in the handler's table.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any

from flask import Flask
from werkzeug.http import parse_accept_header, parse_etags
from werkzeug.routing import BaseConverter

from . import jsoncodec, trace
from .cache import Lookup
from .core.music import Music
from .core.problems import INTERNAL_DETAIL
from .core.query import (
    AUDIO_RULES,
    ITEM_ID_PATTERN,
    TRACK_RULES,
    item_id,
    parse_params,
    parse_query,
    unknown_message,
)
from .cors import Cors
from .errors import Problem
from .events import Events
from .library import Library
from .limits import Limits, RateLimited
from .metrics import STORED, Metrics, client_label
from .pipeline import Exchange, Pipeline
from .queries import MirrorAnswers
from .scope import Answer, Scope
from .tickets import Tickets

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}


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


_TRACK_PATH_RE = re.compile(r"\A/music/([^/]+)(/audio)?\Z")
_JSON_TYPE = "application/json"


class MusicHandler:
    """WSGI: GET and HEAD of /music, /music/{id}, /music/{id}/audio, /library and (with the
    mirror) /tracks, /changes and /events, and POST /events/tickets, answered here through the
    request pipeline and the same rule functions; every other request goes on to
    Flask."""

    def __init__(
        self,
        app: WSGIApp,
        music: Music,
        pipeline: Pipeline,
        credentialed: bool,
        limits: Limits,
        cors: Cors,
        metrics: Metrics,
        mirror: MirrorAnswers | None = None,
        events: Events | None = None,
        tickets: Tickets | None = None,
    ) -> None:
        self.app = app
        self.music = music
        self.pipeline = pipeline
        self.limits = limits
        # What every response here varies on: the credential when one is required, the Origin
        # when CORS is on. A route's own (Accept) joins them: one Vary header per response.
        self.vary_on = (["Origin"] if cors.enabled else []) + (
            ["Authorization"] if credentialed else []
        )
        self.vary = [("Vary", ", ".join(self.vary_on))] if self.vary_on else []
        self.metrics = metrics
        self.library = Library(
            music, limits, music.settings.library, metrics, mirror.store if mirror else None
        )
        # Routes answered from the mirror, when it is on (else they are Flask's 404).
        self.mirrored: dict[str, Callable[..., Answer]] = (
            {"/tracks": mirror.tracks, "/changes": mirror.changes} if mirror else {}
        )
        if events is not None:
            self.mirrored["/events"] = events.answer
        # POST routes: a ticket for /events, which a browser's EventSource opens without a header.
        self.posted: dict[str, Callable[..., Answer]] = {}
        self.tickets = tickets if events is not None else None
        if self.tickets is not None:
            self.posted["/events/tickets"] = self.tickets.issue

    def _route(self, path: str | None) -> tuple[str, Callable[..., Answer], str] | None:
        """The route template, its answering method and the track id in the path, or None."""
        if path == "/music":  # first and cheapest: the list is most of the traffic
            return "/music", self._list, ""
        if path == "/library":
            return "/library", self.library.answer, ""
        answer = self.mirrored.get(path or "")
        if answer is not None:
            return path or "", answer, ""
        match = _TRACK_PATH_RE.match(path or "")
        if match is None:
            return None
        if match[2]:
            return "/music/{id}/audio", self._audio, match[1]
        return "/music/{id}", self._track, match[1]

    def _posted(self, path: str | None) -> tuple[str, Callable[..., Answer], str] | None:
        answer = self.posted.get(path or "")
        return None if answer is None else (path or "", answer, "")

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method == "GET" or method == "HEAD":
            route = self._route(environ.get("PATH_INFO"))
        elif method == "POST" and self.posted:
            route = self._posted(environ.get("PATH_INFO"))
        else:
            route = None
        if route is None:
            return self.app(environ, start_response)
        template, answer, item = route
        ex = Exchange(environ, method, template, template)
        pipeline = self.pipeline
        scope: Scope | None = None
        limit_headers: list[tuple[str, str]] = []
        body: Iterable[bytes]
        try:
            pipeline.begin(ex)  # request id, trace, caller
            if template == "/events" and self.tickets is not None:
                self.tickets.identify(ex)  # a ticket in place of an Authorization header
            who = ex.caller
            state = self.limits.check(who, environ.get("REMOTE_ADDR"))
            if state is not None:
                limit_headers = state.headers()
            if who.problem is not None:
                raise who.problem
            # PEP 3333: the query's bytes arrive as latin-1 text.
            raw = environ.get("QUERY_STRING", "").encode("latin-1")
            scope = Scope(self.music, who, ex.request_id, environ)
            status, body, headers, ex.cache = answer(raw, scope, item)
            ex.user = scope.user
            headers += limit_headers
        except Problem as exc:
            if isinstance(exc, RateLimited):
                who = ex.caller
                self.metrics.limited(client_label(who.client.name if who.client else None))
            status = exc.status
            problem, headers = exc.parts(ex.request_id)
            headers.append(("Content-Length", str(len(problem))))
            present = {name for name, _ in headers}  # a 429 carries its own rate-limit headers
            headers += [h for h in limit_headers if h[0] not in present]
            body = [problem]
        except Exception as exc:
            log.error("unexpected error", exc_info=exc)
            status = 500
            problem, headers = Problem(INTERNAL_DETAIL).parts(ex.request_id)
            headers.append(("Content-Length", str(len(problem))))
            headers += limit_headers
            body = [problem]
        ex.status = status
        ex.streamed = method != "HEAD" and not isinstance(body, list)
        start_response(_STATUS_LINES[status], self._one_vary(pipeline.headers(ex, headers)))
        pipeline.end(ex)  # access line, metrics (a stream's when it ends), trace over
        # A lookup that stored a page changed this process's cache size.
        cache_status = ex.cache
        metrics = self.metrics
        if cache_status is not None and metrics.page(cache_status) in STORED:
            metrics.cache_size(*self.music.cache.backend.size())
        if method == "HEAD":
            close = getattr(body, "close", None)
            if close is not None:
                close()  # a stream not begun: nothing is fetched
            return []
        if not ex.streamed:
            return body

        def ended() -> None:
            # A stream is counted when it ends: one an unexpected error cut short (its summary
            # says internal_error; the 200 had gone out) counts as the 500 it stands for.
            if scope is not None and scope.internal_error:
                ex.status = 500
            pipeline.done(ex)

        # A stream: its upstream calls and log lines stay in the trace.
        return traced(body, ex.trace, ended)

    def _one_vary(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The headers with every Vary (the route's own, CORS's) folded into one after the
        handler's: one Vary header, each value once."""
        own = [value for name, value in headers if name == "Vary"]
        if not own:
            return headers + self.vary
        vary = list(self.vary_on)
        vary += [value for value in own if value not in vary]
        return [*(h for h in headers if h[0] != "Vary"), ("Vary", ", ".join(vary))]

    def _list(self, raw: bytes, scope: Scope, item: str) -> Answer:
        query = parse_query(raw)
        alias = scope.account(query.user)
        lookup = self.music.page(alias, query, scope.request_id)
        status, body, headers = page_parts(
            lookup, scope.environ.get("HTTP_IF_NONE_MATCH"), scope.who.client is not None
        )
        return status, [body], headers, lookup.cache_status

    def _track(self, raw: bytes, scope: Scope, item: str) -> Answer:
        values = parse_params(raw, TRACK_RULES, unknown_message("/music/{id}", TRACK_RULES))
        track_id = item_id(item)
        alias = scope.account(values.get("user"))
        lookup = self.music.track(alias, track_id, scope.request_id)
        status, body, headers = page_parts(
            lookup, scope.environ.get("HTTP_IF_NONE_MATCH"), scope.who.client is not None
        )
        return status, [body], headers, lookup.cache_status

    def _audio(self, raw: bytes, scope: Scope, item: str) -> Answer:
        rules = AUDIO_RULES
        values = parse_params(raw, rules, unknown_message("/music/{id}/audio", rules))
        track_id = item_id(item)
        alias = scope.account(values.get("user"))
        lookup = self.music.audio(alias, track_id, values["format"], scope.request_id)
        headers = [
            ("Cache-Control", f"private, max-age={lookup.max_age}"),
            ("Cache-Status", lookup.cache_status),
            ("Vary", "Accept"),
        ]
        if wants_json(scope.environ.get("HTTP_ACCEPT")):
            body = lookup.page.body
            headers += [("Content-Type", _JSON_TYPE), ("Content-Length", str(len(body)))]
            return 200, [body], headers, lookup.cache_status
        url = jsoncodec.loads(lookup.page.body)["url"]
        headers += [("Location", url), ("Content-Length", "0")]
        return 302, [], headers, lookup.cache_status


def traced(
    body: Iterable[bytes], span: trace.Trace | None, ended: Callable[[], None] | None = None
) -> Iterator[bytes]:
    """A streamed body produced inside the request's trace (the handler ended it on return).

    The WSGI server pulls the chunks after the handler returned: each is made with the span
    current again, so the upstream calls of later pages are its children and log lines carry
    its trace_id; closing the stream (a client gone) closes the body. ended, if given, is
    called once the stream is over, however it ended.
    """
    chunks = iter(body)
    try:
        while True:
            trace.CURRENT.set(span)
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            finally:
                trace.end()
            yield chunk
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
        if ended is not None:
            ended()


def wants_json(accept: str | None) -> bool:
    """Whether an Accept header names application/json itself (not only */*) with q > 0."""
    if not accept:
        return False
    return any(value == _JSON_TYPE and q > 0 for value, q in parse_accept_header(accept))


class TrackIdConverter(BaseConverter):
    """A Track id in a Flask route: the pattern query.ITEM_ID_PATTERN checks."""

    regex = ITEM_ID_PATTERN[2:-2]


def _routing_only(**_: str) -> str:
    """Never called: MusicHandler answers GET and HEAD of its routes before Flask sees them."""
    raise AssertionError("GET /music reached Flask; MusicHandler is not installed")


def register(app: Flask, music: Music, mirrored: bool = False) -> None:
    """Give Flask the handler's rules (so they answer OPTIONS and 405 like any route)."""
    app.extensions["music"] = music
    app.add_url_rule("/music", "music", _routing_only, methods=["GET"])
    # Only well-formed ids are routes (for OPTIONS); GET and HEAD of others are the handler's 400.
    app.url_map.converters["track_id"] = TrackIdConverter
    # The variable is named `id` as in openapi.yaml: metrics label a route by its template.
    app.add_url_rule("/music/<track_id:id>", "track", _routing_only, methods=["GET"])
    app.add_url_rule("/music/<track_id:id>/audio", "audio", _routing_only, methods=["GET"])
    app.add_url_rule("/library", "library", _routing_only, methods=["GET"])
    if mirrored:
        app.add_url_rule("/tracks", "tracks", _routing_only, methods=["GET"])
        app.add_url_rule("/changes", "changes", _routing_only, methods=["GET"])
        app.add_url_rule("/events", "events", _routing_only, methods=["GET"])
        app.add_url_rule("/events/tickets", "event_tickets", _routing_only, methods=["POST"])
