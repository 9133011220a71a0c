"""Caching as callers see it: ETag, 304, Cache-Control, Cache-Status, expiry and stale-if-error."""

from __future__ import annotations

import pytest

from music_facade.sandbox import SandboxServer
from tests.support.clock import Clock
from tests.support.helpers import AppFactory
from tests.support.problem import problem


def test_miss_then_hit(make_app: AppFactory, sandbox: SandboxServer) -> None:
    clock = Clock()
    client = make_app(clock=clock).test_client()
    first = client.get("/music?user=studio")
    assert first.headers["Cache-Status"] == "music-facade; fwd=miss; stored"
    assert first.headers["Cache-Control"] == "private, max-age=30"
    etag = first.headers["ETag"]
    assert etag.startswith('"')
    assert not etag.startswith("W/")
    clock.now += 18
    second = client.get("/music?user=studio")
    assert second.headers["Cache-Status"] == "music-facade; hit; ttl=12"
    assert second.headers["Cache-Control"] == "private, max-age=12"
    assert second.headers["ETag"] == etag
    assert second.get_data() == first.get_data()
    assert sandbox.state.call_count() == 1


def test_key_is_user_type_and_cursor(make_app: AppFactory, sandbox: SandboxServer) -> None:
    client = make_app().test_client()
    cursor = client.get("/music?user=studio").get_json()["next_cursor"]
    for url in (
        "/music?user=studio",
        "/music?user=studio&type=song",
        "/music?user=studio&type=instrumental",
        f"/music?user=studio&cursor={cursor}",
        "/music?user=edge",
    ):
        client.get(url)
    assert sandbox.state.call_count() == 4  # page 1 of songs twice by two spellings: one call


def test_if_none_match(make_app: AppFactory, sandbox: SandboxServer) -> None:
    client = make_app().test_client()
    etag = client.get("/music?user=studio").headers["ETag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        resp = client.get("/music?user=studio", headers={"If-None-Match": header})
        assert resp.status_code == 304, header
        assert resp.get_data() == b""
        assert resp.headers["ETag"] == etag
        assert resp.headers["Cache-Status"].startswith("music-facade; hit")
        assert resp.headers["Cache-Control"].startswith("private, max-age=")
    assert client.get("/music?user=studio", headers={"If-None-Match": '"x"'}).status_code == 200
    assert sandbox.state.call_count() == 1


def test_expired_page_is_fetched_again(make_app: AppFactory, sandbox: SandboxServer) -> None:
    clock = Clock()
    client = make_app(clock=clock, cache_ttl=10).test_client()
    client.get("/music?user=studio")
    clock.now += 10
    resp = client.get("/music?user=studio")
    assert resp.headers["Cache-Status"] == "music-facade; fwd=stale; stored"
    assert resp.headers["Cache-Control"] == "private, max-age=10"
    assert sandbox.state.call_count() == 2


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "status", "status": 503},
        {"kind": "status", "status": 500},
        {"kind": "status", "status": 429},
        {"kind": "status", "status": 401},
        {"kind": "malformed"},
        {"kind": "hang", "seconds": 30},
    ],
)
def test_stale_if_error(
    make_app: AppFactory, sandbox: SandboxServer, spec: dict[str, object]
) -> None:
    clock = Clock()
    client = make_app(
        clock=clock, cache_ttl=30, cache_stale_if_error=60, upstream_read_timeout=0.5
    ).test_client()
    fresh = client.get("/music?user=studio")
    sandbox.state.set_fault("*", spec)
    clock.now += 45
    stale = client.get("/music?user=studio")
    assert stale.status_code == 200
    assert stale.get_data() == fresh.get_data()
    assert (
        stale.headers["Cache-Status"] == "music-facade; fwd=stale; ttl=-15; detail=stale-if-error"
    )
    assert stale.headers["Cache-Control"] == "private, max-age=0"
    clock.now += 46  # older than ttl + stale_if_error: the failure shows
    assert client.get("/music?user=studio").status_code >= 500


def test_no_stale_copy_for_a_rejected_request(make_app: AppFactory, sandbox: SandboxServer) -> None:
    clock = Clock()
    client = make_app(clock=clock).test_client()
    client.get("/music?user=studio")
    sandbox.state.set_fault("*", {"kind": "status", "status": 400})
    clock.now += 31
    problem(client.get("/music?user=studio"), 400, "upstream_rejected")


def test_errors_are_not_cached(make_app: AppFactory, sandbox: SandboxServer) -> None:
    client = make_app().test_client()
    sandbox.state.set_fault("*", {"kind": "status", "status": 500}, times=1)
    problem(client.get("/music?user=studio"), 502, "upstream_error")
    resp = client.get("/music?user=studio")
    assert resp.status_code == 200
    assert resp.headers["Cache-Status"] == "music-facade; fwd=miss; stored"


def test_cache_off(make_app: AppFactory, sandbox: SandboxServer) -> None:
    client = make_app(cache_ttl=0).test_client()
    for _ in range(2):
        resp = client.get("/music?user=studio")
        assert resp.headers["Cache-Status"] == "music-facade; fwd=bypass"
        assert resp.headers["Cache-Control"] == "private, max-age=0"
        assert resp.headers["ETag"]
    assert sandbox.state.call_count() == 2


def test_lru_bound(make_app: AppFactory, sandbox: SandboxServer) -> None:
    client = make_app(cache_max_entries=2).test_client()
    for url in (
        "/music?user=studio",
        "/music?user=edge",
        "/music?user=studio",
        "/music?user=empty",
    ):
        client.get(url)  # empty evicts edge, the least recently used
    assert sandbox.state.call_count() == 3
    assert client.get("/music?user=studio").headers["Cache-Status"].startswith("music-facade; hit")
    assert (
        client.get("/music?user=edge").headers["Cache-Status"] == "music-facade; fwd=miss; stored"
    )
