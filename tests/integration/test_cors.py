"""CORS: configured origins get CORS headers and working preflights; nobody else does."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.support.helpers import AppFactory
from tests.support.keys import CLIENTS, WEB_KEY, bearer

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


@pytest.mark.parametrize("path", ["/musics", "/music/", "/nope/deeper"])
def test_preflight_for_any_path(cors: FlaskClient, path: str) -> None:
    resp = cors.options(
        path,
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert "authorization" in resp.headers["Access-Control-Allow-Headers"].lower()
    # The real request then gets its real problem, readable cross-origin.
    real = cors.get(path, headers={"Origin": APP, **bearer(WEB_KEY)})
    assert real.status_code == 404
    assert real.json is not None
    assert real.json["code"] == "not_found"
    assert real.headers["Access-Control-Allow-Origin"] == APP


def test_unknown_path_preflight_from_another_origin_is_404(cors: FlaskClient) -> None:
    resp = cors.options(
        "/musics",
        headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET"},
    )
    assert resp.status_code == 404
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_preflight_for_another_method_lets_the_405_through(cors: FlaskClient) -> None:
    resp = cors.options(
        "/music", headers={"Origin": APP, "Access-Control-Request-Method": "DELETE"}
    )
    assert "DELETE" in resp.headers["Access-Control-Allow-Methods"]
    real = cors.delete("/music", headers={"Origin": APP})
    assert real.status_code == 405
    assert real.headers["Access-Control-Allow-Origin"] == APP


def test_fetch_wrapper_headers_are_allowed(cors: FlaskClient) -> None:
    asked = "content-type, cache-control, traceparent, authorization, x-unknown"
    resp = cors.options(
        "/music",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": asked,
        },
    )
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"content-type", "cache-control", "traceparent", "authorization"}


def test_www_authenticate_is_exposed_and_vary_names_the_credential(cors: FlaskClient) -> None:
    resp = cors.get("/music?user=studio", headers={"Origin": APP})
    assert resp.status_code == 401
    exposed = {h.strip().lower() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert "www-authenticate" in exposed
    ok = cors.get("/music?user=studio", headers={"Origin": APP, **bearer(WEB_KEY)})
    assert {v.strip() for v in ok.headers["Vary"].split(",")} == {"Origin", "Authorization"}
    assert ok.headers["Cache-Control"] == "private, no-cache"
    # Revalidation re-checks the credential: 304 for the key, 401 without one.
    etag = ok.headers["ETag"]
    assert (
        cors.get(
            "/music?user=studio", headers={"If-None-Match": etag, **bearer(WEB_KEY)}
        ).status_code
        == 304
    )
    assert cors.get("/music?user=studio", headers={"If-None-Match": etag}).status_code == 401


def test_open_mode_keeps_max_age(make_app: AppFactory) -> None:
    resp = make_app(cors_origins=(APP,)).test_client().get("/music?user=studio")
    assert resp.headers["Cache-Control"].startswith("private, max-age=")
    assert resp.headers["Vary"] == "Origin"


def test_no_origin_no_cors_headers(cors: FlaskClient) -> None:
    for resp in (
        cors.get("/music?user=studio", headers=bearer(WEB_KEY)),
        cors.get("/healthz"),
        cors.get("/musics"),
        cors.options("/music", headers={"Access-Control-Request-Method": "GET"}),
    ):
        names = resp.headers.keys()  # Headers iterates as (name, value) pairs
        assert not [h for h in names if h.lower().startswith("access-control-")]
