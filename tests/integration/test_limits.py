"""Rate limits: per client, per address in open mode, headers, 429 problems, what never counts."""

from __future__ import annotations

import math
import re
import time

import pytest
from flask.testing import FlaskClient
from werkzeug.datastructures import Headers

from music_facade.config import ClientSettings, LimitSettings
from music_facade.limits import _reset_at
from tests.support.helpers import AppFactory
from tests.support.keys import ADMIN_KEY, CLIENTS, WEB_KEY, bearer
from tests.support.problem import problem

LIMITED = (
    ClientSettings("web", CLIENTS[0].key_sha256, frozenset({"studio"}), rate_limit="3/minute"),
    CLIENTS[1],  # admin: the default limit
)


@pytest.fixture
def limited(make_app: AppFactory) -> FlaskClient:
    return make_app(clients=LIMITED, limits=LimitSettings(default="5/minute")).test_client()


def test_headers_count_down_then_429(limited: FlaskClient) -> None:
    for remaining in (2, 1, 0):
        resp = limited.get("/music?user=studio", headers=bearer(WEB_KEY))
        assert resp.status_code == 200
        assert resp.headers["X-RateLimit-Limit"] == "3"
        assert resp.headers["X-RateLimit-Remaining"] == str(remaining)
        assert int(resp.headers["X-RateLimit-Reset"]) > 0
        assert resp.headers["RateLimit-Policy"] == '"music";q=3;w=60'
        assert resp.headers["RateLimit"].startswith(f'"music";r={remaining};t=')
        assert "Retry-After" not in resp.headers
    over = limited.get("/music?user=studio", headers=bearer(WEB_KEY))
    body = problem(over, 429, "rate_limited")
    assert "3 per 1 minute" in body["detail"]
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    assert over.headers["X-RateLimit-Remaining"] == "0"


def reset_of(headers: Headers) -> tuple[int, int]:
    """RateLimit's t (seconds to the reset) and X-RateLimit-Reset (epoch seconds)."""
    found = re.search(r";t=(\d+)\Z", headers["RateLimit"])
    assert found is not None
    return int(found.group(1)), int(headers["X-RateLimit-Reset"])


def test_the_first_request_of_a_window_resets_at_the_windows_end(limited: FlaskClient) -> None:
    before = time.time()
    t, reset = reset_of(limited.get("/music?user=studio", headers=bearer(WEB_KEY)).headers)
    # In memory a window is aligned to the clock: this one ends at the next whole minute.
    end = (math.floor(before / 60) + 1) * 60
    assert 1 <= t <= 60
    assert abs(reset - end) <= 1
    assert abs((before + t) - end) <= 1


@pytest.mark.parametrize(("current_ttl", "left"), [(120.0, 60.0), (119.5, 59.5), (90.0, 30.0)])
def test_a_fresh_counters_window_ends_a_window_from_now(current_ttl: float, left: float) -> None:
    # A counter lives two windows: set with a whole 2 x 60 s (Redis's first hit of a window, or
    # memory's on a window boundary), its window ends 60 s from now, not now.
    assert _reset_at(60, 0, 0.0, 1, current_ttl) - time.time() == pytest.approx(left, abs=0.1)


def test_clients_have_separate_buckets(limited: FlaskClient) -> None:
    for _ in range(3):
        limited.get("/music?user=studio", headers=bearer(WEB_KEY))
    problem(limited.get("/music?user=studio", headers=bearer(WEB_KEY)), 429, "rate_limited")
    resp = limited.get("/music?user=studio", headers=bearer(ADMIN_KEY))
    assert resp.status_code == 200
    assert resp.headers["X-RateLimit-Limit"] == "5"  # admin has no own limit: the default


def test_errors_count_too(limited: FlaskClient) -> None:
    for _ in range(3):
        assert limited.get("/music?type=bad", headers=bearer(WEB_KEY)).status_code == 400
    problem(limited.get("/music?user=studio", headers=bearer(WEB_KEY)), 429, "rate_limited")


def test_health_spec_and_preflights_never_count(limited: FlaskClient) -> None:
    for _ in range(10):
        assert limited.get("/healthz").status_code == 200
        assert limited.get("/openapi.yaml").status_code == 200
        assert limited.options("/music").status_code == 200
    assert "X-RateLimit-Limit" not in limited.get("/healthz").headers
    resp = limited.get("/music?user=studio", headers=bearer(WEB_KEY))
    assert resp.headers["X-RateLimit-Remaining"] == "2"


def test_requests_without_a_valid_key_count_per_address(limited: FlaskClient) -> None:
    for _ in range(5):
        problem(limited.get("/music?user=studio"), 401, "credential_missing")
    problem(limited.get("/music?user=studio"), 429, "rate_limited")
    # A valid client is not starved by the anonymous caller.
    assert limited.get("/music?user=studio", headers=bearer(WEB_KEY)).status_code == 200


def test_open_mode_unlimited_by_default(make_app: AppFactory) -> None:
    client = make_app().test_client()
    for _ in range(20):
        resp = client.get("/music?user=studio")
        assert resp.status_code == 200
    assert "X-RateLimit-Limit" not in resp.headers


def test_open_mode_per_address(make_app: AppFactory) -> None:
    client = make_app(limits=LimitSettings(per_address="2/minute")).test_client()
    here = {"REMOTE_ADDR": "10.1.1.1"}
    there = {"REMOTE_ADDR": "10.2.2.2"}
    for _ in range(2):
        assert client.get("/music?user=studio", environ_base=here).status_code == 200
    problem(client.get("/music?user=studio", environ_base=here), 429, "rate_limited")
    assert client.get("/music?user=studio", environ_base=there).status_code == 200


def test_proxy_hops_take_the_address_from_x_forwarded_for(make_app: AppFactory) -> None:
    client = make_app(
        limits=LimitSettings(per_address="1/minute"),
        proxy_hops=1,
        trusted_proxies=("10.0.0.0/24",),
    ).test_client()
    lb = {"REMOTE_ADDR": "10.0.0.1"}
    first = {"X-Forwarded-For": "198.51.100.7"}
    second = {"X-Forwarded-For": "203.0.113.9"}
    assert client.get("/music?user=studio", environ_base=lb, headers=first).status_code == 200
    problem(client.get("/music?user=studio", environ_base=lb, headers=first), 429, "rate_limited")
    assert client.get("/music?user=studio", environ_base=lb, headers=second).status_code == 200


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(make_app: AppFactory) -> None:
    client = make_app(
        limits=LimitSettings(per_address="2/minute"),
        proxy_hops=1,
        trusted_proxies=("10.0.0.0/24", "fd00::/8"),
    ).test_client()
    direct = {"REMOTE_ADDR": "192.0.2.50"}  # reached gunicorn without the load balancer
    statuses = [
        client.get(
            "/music?user=studio",
            environ_base=direct,
            headers={"X-Forwarded-For": f"198.51.100.{i}"},
        ).status_code
        for i in range(6)
    ]
    # Rotating forged addresses do not escape the limit: the peer's own address counts.
    assert statuses == [200, 200, 429, 429, 429, 429]
    ipv6_lb = {"REMOTE_ADDR": "fd00::1"}
    forwarded = {"X-Forwarded-For": "203.0.113.77"}
    assert (
        client.get("/music?user=studio", environ_base=ipv6_lb, headers=forwarded).status_code == 200
    )
