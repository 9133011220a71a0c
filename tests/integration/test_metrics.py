"""GET /metrics in one process: what is counted, with which labels, and who may scrape it."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from music_facade import multiproc
from music_facade.auth import mint_key
from music_facade.config import ClientSettings, LimitSettings, MetricsSettings
from music_facade.metrics import cache_outcome, client_label
from music_facade.sandbox import SandboxServer
from tests.support.helpers import AppFactory
from tests.support.metrics import samples, value
from tests.support.problem import problem

KEY, DIGEST = mint_key()


def test_requests_cache_and_upstream_are_counted(make_app: AppFactory) -> None:
    client = make_app().test_client()
    for _ in range(3):
        assert client.get("/music?user=studio").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/no/such/path").status_code == 404
    found = samples(client)
    music = {"route": "/music", "method": "GET", "status": "200", "client": "anonymous"}
    assert value(found, "music_facade_requests_total", **music) == 3
    assert value(found, "music_facade_request_duration_seconds_count", route="/music") == 3
    health = {"route": "/healthz", "method": "GET", "status": "200", "client": "anonymous"}
    assert value(found, "music_facade_requests_total", **health) == 1
    lost = {"route": "unmatched", "method": "GET", "status": "404", "client": "anonymous"}
    assert value(found, "music_facade_requests_total", **lost) == 1
    assert value(found, "music_facade_page_cache_total", outcome="miss") == 1
    assert value(found, "music_facade_page_cache_total", outcome="hit") == 2
    assert (
        value(
            found,
            "music_facade_upstream_calls_total",
            account="studio",
            outcome="ok",
            source="request",
        )
        == 1
    )
    assert value(found, "music_facade_upstream_duration_seconds_count", account="studio") == 1
    assert value(found, "music_facade_cache_entries") == 1
    assert value(found, "music_facade_cache_bytes") > 100
    assert value(found, "music_facade_upstream_in_flight") == 0


def test_upstream_failures_and_guards_by_alias(
    make_app: AppFactory, sandbox: SandboxServer
) -> None:
    client = make_app(upstream_auth_failure_cooldown=60).test_client()
    sandbox.state.set_fault("1002", {"kind": "status", "status": 596}, times=1)
    problem(client.get("/music?user=edge"), 502, "upstream_auth_failed")
    problem(client.get("/music?user=edge"), 502, "upstream_auth_failed")  # remembered
    sandbox.state.set_fault("1001", {"kind": "rate_limited", "seconds": 30}, times=1)
    problem(client.get("/music?user=studio&type=instrumental"), 503, "upstream_rate_limited")
    found = samples(client)
    calls = "music_facade_upstream_calls_total"
    assert (
        value(found, calls, account="edge", outcome="upstream_auth_failed", source="request") == 1
    )
    assert (
        value(found, calls, account="studio", outcome="upstream_rate_limited", source="request")
        == 1
    )
    refusals = "music_facade_upstream_refusals_total"
    assert value(found, refusals, account="edge", reason="auth_failure_remembered") == 1
    assert value(found, refusals, account="studio", reason="cooldown") == 0
    until = value(found, "music_facade_upstream_cooldown_until_timestamp_seconds", account="studio")
    assert until > 0
    auth = "music_facade_upstream_auth_failed_until_timestamp_seconds"
    assert value(found, auth, account="edge") > 0
    assert (
        value(found, "music_facade_upstream_breaker_open_until_timestamp_seconds", account="edge")
        == 0
    )
    # Aliases label accounts; the upstream's user ids appear nowhere.
    labels = {v for _, ls in samples(client) for _, v in ls}
    assert not labels & {"1001", "1002"}


def test_breaker_open_until(make_app: AppFactory, sandbox: SandboxServer) -> None:
    client = make_app(upstream_breaker_failures=2, upstream_breaker_open=30).test_client()
    sandbox.state.set_fault("1001", {"kind": "status", "status": 500})
    for _ in range(2):
        problem(client.get("/music?user=studio"), 502, "upstream_error")
    problem(client.get("/music?user=studio"), 503, "upstream_unavailable")
    found = samples(client)
    gauge = "music_facade_upstream_breaker_open_until_timestamp_seconds"
    assert value(found, gauge, account="studio") > 0
    assert (
        value(
            found,
            "music_facade_upstream_calls_total",
            account="studio",
            outcome="upstream_error",
            source="request",
        )
        == 2
    )
    assert (
        value(
            found, "music_facade_upstream_refusals_total", account="studio", reason="breaker_open"
        )
        == 1
    )


def test_rate_limited_by_client_name(make_app: AppFactory) -> None:
    clients = (ClientSettings("web", (DIGEST,), frozenset({"*"}), rate_limit="2/minute"),)
    # With keys configured /metrics is closed unless [metrics] opens it (test_metrics_access).
    metrics = MetricsSettings(allow=("127.0.0.0/8",))
    client = make_app(clients=clients, metrics=metrics).test_client()
    auth = {"Authorization": f"Bearer {KEY}"}
    for _ in range(2):
        assert client.get("/music?user=studio", headers=auth).status_code == 200
    problem(client.get("/music?user=studio", headers=auth), 429, "rate_limited")
    found = samples(client)
    assert value(found, "music_facade_rate_limited_total", client="web") == 1
    assert value(found, "music_facade_rate_limited_total", client="anonymous") == 0
    ok = {"route": "/music", "method": "GET", "status": "200", "client": "web"}
    assert value(found, "music_facade_requests_total", **ok) == 2


def test_labels_never_take_caller_values(make_app: AppFactory) -> None:
    client = make_app(limits=LimitSettings(per_address="100/minute")).test_client()
    sent = ["/music?user=evil-alias-x", "/music?user=studio&cursor=evil-cursor-x",
            "/evil-path-x", "/music?user=studio&type=evil-type-x"]  # fmt: skip
    for path in sent:
        client.get(path, headers={"Authorization": "Bearer evil-key-xxxxxxxx"})
    client.open("/music", method="EVILMETHODX")
    text = client.get("/metrics").get_data(as_text=True)
    assert "evil" not in text.lower()
    found = samples(client)
    other = {"route": "/music", "method": "other", "status": "405", "client": "anonymous"}
    assert value(found, "music_facade_requests_total", **other) == 1


def test_scrapes_are_logged_at_debug_and_never_limited(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_app(limits=LimitSettings(per_address="1/minute")).test_client()
    with caplog.at_level(logging.INFO, logger="music_facade.access"):
        for _ in range(5):
            assert client.get("/metrics").status_code == 200
    assert not [r for r in caplog.records if getattr(r, "path", None) == "/metrics"]


def test_scrape_restricted_by_address(make_app: AppFactory) -> None:
    client = make_app(metrics=MetricsSettings(allow=("10.9.0.0/16",))).test_client()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.9.1.2"}).status_code == 200
    doc = problem(
        client.get("/metrics", environ_base={"REMOTE_ADDR": "10.8.1.2"}), 403, "metrics_forbidden"
    )
    assert "allow" in doc["detail"]


def test_scrape_restricted_by_address_after_proxy_hops(make_app: AppFactory) -> None:
    client = make_app(
        metrics=MetricsSettings(allow=("192.0.2.0/24",)),
        proxy_hops=1,
        trusted_proxies=("10.0.0.0/24",),
    ).test_client()
    lb = {"REMOTE_ADDR": "10.0.0.1"}
    ok = client.get("/metrics", environ_base=lb, headers={"X-Forwarded-For": "192.0.2.7"})
    assert ok.status_code == 200
    no = client.get("/metrics", environ_base=lb, headers={"X-Forwarded-For": "198.51.100.7"})
    problem(no, 403, "metrics_forbidden")


def test_scrape_restricted_by_token(make_app: AppFactory) -> None:
    token = "scrape-token-0123456789"
    digest = hashlib.sha256(token.encode()).hexdigest()
    client = make_app(metrics=MetricsSettings(token_sha256=(digest,))).test_client()
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    problem(client.get("/metrics"), 403, "metrics_forbidden")
    problem(
        client.get("/metrics", headers={"Authorization": "Bearer wrong"}), 403, "metrics_forbidden"
    )
    resp = client.get("/metrics", headers={"Authorization": f"Basic {token}"})
    problem(resp, 403, "metrics_forbidden")
    assert token not in resp.get_data(as_text=True)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("music-facade; hit; ttl=12", "hit"),
        ("music-facade; fwd=miss; stored", "miss"),
        ("music-facade; fwd=stale; stored", "stale"),
        ("music-facade; fwd=miss; stored; collapsed", "collapsed"),
        ("music-facade; hit; ttl=3; collapsed", "collapsed"),
        ("music-facade; fwd=bypass", "bypass"),
        ("music-facade; fwd=stale; ttl=-4; detail=stale-if-error", "stale_if_error"),
    ],
)
def test_cache_outcomes(status: str, outcome: str) -> None:
    assert cache_outcome(status) == outcome


def test_client_labels_are_bounded() -> None:
    assert client_label(None) == "anonymous"
    assert client_label("web") == "web"
    assert client_label("oidc:caller-chosen-subject") == "oidc"


def test_the_masters_metrics_directory(tmp_path: Path) -> None:
    given = tmp_path / "metrics"
    given.mkdir()
    for name in ("counter_11.db", "gauge_livesum_11.db", "gauge_all_11.db", "keep.txt"):
        (given / name).write_bytes(b"old run")
    environ = {multiproc.ENV: str(given)}
    assert multiproc.prepare(environ) == (given, False)
    assert sorted(p.name for p in given.iterdir()) == ["keep.txt"]  # old numbers gone
    for name in ("counter_12.db", "gauge_livesum_12.db", "gauge_liveall_12.db", "gauge_all_12.db"):
        (given / name).write_bytes(b"")
    multiproc.mark_process_dead(12, given)
    assert sorted(p.name for p in given.iterdir()) == [
        "counter_12.db",
        "gauge_all_12.db",
        "keep.txt",
    ]
    fresh: dict[str, str] = {}
    made, was_made = multiproc.prepare(fresh)
    assert was_made
    assert fresh[multiproc.ENV] == str(made)
    assert made.is_dir()
    multiproc.remove(made)
    assert not made.exists()
