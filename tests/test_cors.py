"""CORS: configured origins get CORS headers and working preflights; nobody else does."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from .helpers import AppFactory
from .test_clients import CLIENTS, WEB_KEY, bearer

APP = "https://app.example.com"


@pytest.fixture
def cors(make_app: AppFactory) -> FlaskClient:
    return make_app(clients=CLIENTS, cors_origins=(APP,)).test_client()


def test_allowed_origin_gets_headers(cors: FlaskClient) -> None:
    resp = cors.get("/music?user=studio", headers={"Origin": APP, **bearer(WEB_KEY)})
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    exposed = {h.strip().lower() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"etag", "cache-status", "retry-after", "x-request-id"} <= exposed
    assert "Origin" in resp.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in resp.headers


def test_errors_are_readable_cross_origin(cors: FlaskClient) -> None:
    resp = cors.get("/music?user=studio", headers={"Origin": APP})
    assert resp.status_code == 401
    assert resp.headers["Access-Control-Allow-Origin"] == APP


def test_preflight(cors: FlaskClient) -> None:
    resp = cors.options(
        "/music?user=studio",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, if-none-match",
        },
    )
    assert resp.status_code == 200  # no key needed, not rate limited
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    allowed = resp.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed
    assert "if-none-match" in allowed
    assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    assert resp.headers["Access-Control-Max-Age"] == "600"


@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "https://app.example.com.evil.net", "null"]
)
def test_other_origins_get_nothing(cors: FlaskClient, origin: str) -> None:
    get = cors.get("/music?user=studio", headers={"Origin": origin, **bearer(WEB_KEY)})
    assert get.status_code == 200
    preflight = cors.options(
        "/music", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
    )
    for resp in (get, preflight):
        names = resp.headers.keys()  # Headers iterates as (name, value) pairs
        assert not [h for h in names if h.lower().startswith("access-control-")]


def test_default_is_no_cors(make_app: AppFactory) -> None:
    client = make_app().test_client()
    resp = client.get("/music?user=studio", headers={"Origin": APP})
    assert "Access-Control-Allow-Origin" not in resp.headers
