"""The benchmark's baselines: bare Flask returning the service's cached page.

    gunicorn -c deploy/gunicorn.conf.py 'bench.baseline:create_app()'

Run under the same gunicorn configuration and worker class as the service, so a ratio to it
measures what the service adds to a hit, and nothing else. BENCH_BODY_FILE holds the page's
bytes; BENCH_HEADERS_FILE (JSON: route → [[name, value], ...]) the headers the service sent
with it, which the bench captured from a real answer:

- /music: the same response as the service's cache hit (status, every header, body);
- /keyed: the same response as a keyed hit (its rate-limit headers and Vary included);
- /body: the body alone, with only Content-Type (what a bare Flask app would send by default).

Every header costs gunicorn and Flask some work to send, whoever computed it: the first two
compare the service with Flask sending the same bytes; the third shows what the headers cost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

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

    return app
