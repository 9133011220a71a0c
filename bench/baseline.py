"""The benchmark's baseline: bare Flask returning the service's cached page bytes.

    gunicorn -c deploy/gunicorn.conf.py 'bench.baseline:create_app()'

Run under the same gunicorn configuration and worker class as the service, so a ratio to it
measures what the service adds to a hit, and nothing else. BENCH_BODY_FILE holds the bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, Response


def create_app() -> Flask:
    """A Flask app answering GET /music with the bytes of BENCH_BODY_FILE."""
    body = Path(os.environ["BENCH_BODY_FILE"]).read_bytes()
    app = Flask(__name__)

    @app.get("/music")
    def music() -> Response:
        return Response(body, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response('{"status":"ok"}', mimetype="application/json")

    return app
