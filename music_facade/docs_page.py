"""The /docs page: Swagger UI 5, served by the service itself, on its own served contract."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Response
from flask_swagger_ui import get_swaggerui_blueprint

# The tag openapi.yaml gives every HEAD and OPTIONS operation: listed last, and collapsed here.
VARIANTS_TAG = "HEAD and OPTIONS"

CONFIG: dict[str, Any] = {
    "url": "/openapi.json",  # same origin: the page and "Try it out" call this service
    "dom_id": "#swagger-ui",
    "layout": "StandaloneLayout",
    "deepLinking": True,
    # Tags open, operations closed: the GET/POST operations are one click away.
    "docExpansion": "list",
    # Swagger UI would otherwise send the document to validator.swagger.io: offline.
    "validatorUrl": None,
}

# flask-swagger-ui's own page takes only JSON settings; collapsing one tag needs a call once
# the document is rendered (Swagger UI keeps a tag's open state under this key).
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>music-facade API</title>
  <link rel="stylesheet" type="text/css" href="/docs/index.css">
  <link rel="stylesheet" type="text/css" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script>
    window.onload = function () {
      var config = %(config)s;
      var collapsed = %(collapsed)s;
      config.presets = [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset];
      config.plugins = [SwaggerUIBundle.plugins.DownloadUrl];
      config.onComplete = function () {
        collapsed.forEach(function (tag) {
          window.ui.layoutActions.show(["operations-tag", tag], false);
        });
      };
      window.ui = SwaggerUIBundle(config);
    };
  </script>
</body>
</html>
"""


def page() -> Response:
    """The Swagger UI page, its settings inline."""
    body = PAGE % {"config": json.dumps(CONFIG), "collapsed": json.dumps([VARIANTS_TAG])}
    return Response(body, mimetype="text/html")


def register(app: Flask) -> None:
    """Mount /docs (and /docs/) and Swagger UI's scripts and styles under /docs/."""
    app.register_blueprint(get_swaggerui_blueprint("/docs", "/openapi.json"))
    # flask-swagger-ui's view serves the assets; its page (at /docs/ and /docs/index.html) is
    # replaced by ours.
    assets = app.view_functions["swagger_ui.show"]

    def show(path: str | None = None) -> Any:
        """Our page for the page's paths, Swagger UI's file for the rest."""
        if path in (None, "index.html"):
            return page()
        return assets(path=path)

    app.view_functions["swagger_ui.show"] = show
    app.add_url_rule("/docs", "docs", page)
