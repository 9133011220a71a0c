"""GET /: a browser is sent to /docs, any other caller gets the JSON index of links."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/json, */*"])
def test_a_program_gets_the_links(client: FlaskClient, accept: str | None) -> None:
    resp = client.get("/", headers={"Accept": accept} if accept else {})
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    assert json.loads(resp.data) == {
        "service": "music-facade",
        # Without [mirror], its paths are 404s here: not listed.
        "links": {
            "docs": "/docs",
            "openapi": "/openapi.yaml",
            "openapi_json": "/openapi.json",
            "music": "/music",
            "library": "/library",
            "health": "/healthz",
            "ready": "/readyz",
            "metrics": "/metrics",
        },
    }
    assert resp.headers["Cache-Control"] == "public, max-age=300"
    assert "Accept" in resp.headers["Vary"]


def test_every_link_answers(client: FlaskClient) -> None:
    for path in json.loads(client.get("/").data)["links"].values():
        if path in ("/music", "/library"):
            path += "?user=studio"
        resp = client.get(path)
        assert resp.status_code == 200, path
        resp.close()


@pytest.mark.parametrize("accept", [BROWSER, "text/html"])
def test_a_browser_is_sent_to_the_docs(client: FlaskClient, accept: str) -> None:
    resp = client.get("/", headers={"Accept": accept})
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/docs"
    assert "Accept" in resp.headers["Vary"]
    followed = client.get("/", headers={"Accept": accept}, follow_redirects=True)
    assert followed.status_code == 200
    assert "swagger-ui-bundle.js" in followed.get_data(as_text=True)


def test_head_answers_as_get_without_a_body(client: FlaskClient) -> None:
    resp = client.head("/")
    assert resp.status_code == 200
    assert resp.data == b""
    assert client.head("/", headers={"Accept": BROWSER}).status_code == 302
