"""GET /: a browser is sent to the docs page; any other caller gets an index of links."""

from __future__ import annotations

import json

from flask import Blueprint, Flask, current_app, request
from werkzeug.wrappers import Response

bp = Blueprint("home", __name__)

# The index's links, in order, by name: each listed only when this app has the path (the
# mirror's paths exist only with [mirror], /metrics only where metrics are on).
LINKS = (
    ("docs", "/docs"),
    ("openapi", "/openapi.yaml"),
    ("openapi_json", "/openapi.json"),
    ("music", "/music"),
    ("library", "/library"),
    ("tracks", "/tracks"),
    ("changes", "/changes"),
    ("events", "/events"),
    ("health", "/healthz"),
    ("ready", "/readyz"),
    ("metrics", "/metrics"),
)


def wants_html() -> bool:
    """True when the request prefers text/html to JSON: a browser, not curl's */* or a client."""
    accept = request.accept_mimetypes
    return accept.quality("text/html") > accept.quality("application/json")


def links(app: Flask) -> dict[str, str]:
    """The LINKS this app answers."""
    paths = {rule.rule for rule in app.url_map.iter_rules()}
    return {name: path for name, path in LINKS if path in paths}


@bp.get("/")
def index() -> Response:
    """The way in: /docs for a person, the links for a program."""
    if wants_html():
        # No body: a browser follows the Location at once.
        resp = Response(status=302, headers={"Location": "/docs"})
    else:
        # Worked out per request: cheap, and every route is registered by then.
        body = {"service": "music-facade", "links": links(current_app)}
        resp = Response(json.dumps(body, separators=(",", ":")), mimetype="application/json")
    # Both answers are the same for everyone; which one depends on Accept.
    resp.headers["Cache-Control"] = "public, max-age=300"
    resp.vary.add("Accept")
    return resp


def register(app: Flask) -> None:
    """Mount GET /."""
    app.register_blueprint(bp)
