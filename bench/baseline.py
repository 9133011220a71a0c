"""The benchmark's baselines: bare Flask returning the service's cached page.

    gunicorn -c deploy/gunicorn.conf.py 'bench.baseline:create_app()'

Run under the same gunicorn configuration and worker class as the service, so a ratio to it
measures what the service adds to a hit, and nothing else. BENCH_BODY_FILE holds the page's
bytes; BENCH_HEADERS_FILE (JSON: route → [[name, value], ...]) the headers the service sent
with it, which the bench captured from a real answer:

- /music: the same response as the service's cache hit (status, every header, body);
- /keyed: the same response as a keyed hit (its rate-limit headers and Vary included);
- /body: the body alone, with only Content-Type (what a bare Flask app would send by default);
- /proxy: the upstream's answer at BENCH_UPSTREAM_URL passed through as it came, fetched with
  urllib3 on a kept-alive connection by a plain WSGI function in front of Flask (as the
  service's /music handler is): the least a proxy on this stack adds to a miss.

Every header costs gunicorn and Flask some work to send, whoever computed it: the first two
compare the service with Flask sending the same bytes; the third shows what the headers cost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import urllib3
from flask import Flask, Response


def create_app() -> Flask:
    """A Flask app answering each route with the page and that route's fixed headers."""
    body = Path(os.environ["BENCH_BODY_FILE"]).read_bytes()
    headers: dict[str, list[tuple[str, str]]] = {
        route: [(name, value) for name, value in pairs]
        for route, pairs in json.loads(Path(os.environ["BENCH_HEADERS_FILE"]).read_text()).items()
    }
    app = Flask(__name__)

    @app.get("/music")
    def music() -> Response:
        return Response(body, headers=headers["/music"])

    @app.get("/keyed")
    def keyed() -> Response:
        return Response(body, headers=headers["/keyed"])

    @app.get("/body")
    def bare_body() -> Response:
        return Response(body, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response('{"status":"ok"}', mimetype="application/json")

    upstream = os.environ.get("BENCH_UPSTREAM_URL", "")
    if upstream:
        app.wsgi_app = _proxy(app.wsgi_app, upstream)  # type: ignore[method-assign,assignment]
    return app


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _proxy(app: WSGIApp, upstream: str) -> WSGIApp:
    """GET /proxy answered with the upstream's body, as it came; the rest goes on to app."""
    pool = urllib3.connection_from_url(upstream, maxsize=4)
    token = {"Authorization": "Bearer bench-token"}

    def handler(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/proxy":
            return app(environ, start_response)
        answer = pool.request("GET", upstream, headers=token)
        body = answer.data
        start_response(
            f"{answer.status} {answer.reason}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return handler
