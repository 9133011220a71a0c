"""Never hammer a saturated or broken account: cooldown, auth memory, breaker, with call counts."""

from __future__ import annotations

import time

import pytest

from music_facade.config import Secret, UpstreamSettings
from music_facade.errors import BreakerOpen, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from music_facade.guards import Guards
from music_facade.guards.memory import MemoryGuardStore
from music_facade.guards.state import CLEAR
from music_facade.sandbox import SandboxServer
from tests.support.clock import Clock
from tests.support.helpers import AppFactory
from tests.support.problem import problem

# --- cooldown after 429 ------------------------------------------------------------------------


def test_cooldown_after_429(make_app: AppFactory, sandbox: SandboxServer) -> None:
    clock = Clock()
    client = make_app(clock=clock, cache_ttl=0).test_client()
    sandbox.state.set_fault("1001", {"kind": "rate_limited", "seconds": 20}, times=1)
    first = client.get("/music?user=studio")
    problem(first, 503, "upstream_rate_limited")
    assert first.headers["Retry-After"] == "20"
    clock.now += 5
    for _ in range(5):
        again = client.get("/music?user=studio&type=instrumental")
        problem(again, 503, "upstream_rate_limited")
        assert again.headers["Retry-After"] == "15"
    assert sandbox.state.call_count("1001") == 1  # answered without an upstream call
    # Other accounts are not affected.
    assert client.get("/music?user=edge").status_code == 200
    clock.now += 15
    assert client.get("/music?user=studio").status_code == 200
    assert sandbox.state.call_count("1001") == 2


@pytest.mark.parametrize(("given", "cooldown"), [(None, 10), ("3600", 60), ("5", 5)])
def test_cooldown_length(
    make_app: AppFactory, sandbox: SandboxServer, given: str | None, cooldown: int
) -> None:
    clock = Clock()
    client = make_app(clock=clock, cache_ttl=0).test_client()
    headers = {"Retry-After": given} if given else {}
    sandbox.state.set_fault("*", {"kind": "status", "status": 429, "headers": headers}, times=1)
    assert client.get("/music?user=studio").headers["Retry-After"] == str(cooldown)
    clock.now += cooldown - 0.5
    problem(client.get("/music?user=studio"), 503, "upstream_rate_limited")
    clock.now += 0.5
    assert client.get("/music?user=studio").status_code == 200
    assert sandbox.state.call_count() == 2


def test_max_cooldown_is_configurable(make_app: AppFactory, sandbox: SandboxServer) -> None:
    client = make_app(upstream_max_cooldown=30, cache_ttl=0).test_client()
    sandbox.state.set_fault("*", {"kind": "rate_limited", "seconds": 900, "form": "date"})
    resp = client.get("/music?user=studio")
    assert resp.headers["Retry-After"] == "30"


def test_cooldown_serves_the_stale_page(make_app: AppFactory, sandbox: SandboxServer) -> None:
    clock = Clock()
    client = make_app(clock=clock, cache_ttl=30).test_client()
    fresh = client.get("/music?user=studio")
    clock.now += 31
    sandbox.state.set_fault("*", {"kind": "rate_limited", "seconds": 20}, times=1)
    for _ in range(3):
        stale = client.get("/music?user=studio")
        assert stale.status_code == 200
        assert stale.get_data() == fresh.get_data()
        assert "detail=stale-if-error" in stale.headers["Cache-Status"]
    assert sandbox.state.call_count() == 2


# --- remembered auth failures ----------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 402, 403, 596])
def test_auth_failures_are_remembered(
    make_app: AppFactory, sandbox: SandboxServer, status: int
) -> None:
    clock = Clock()
    client = make_app(clock=clock, cache_ttl=0).test_client()
    sandbox.state.set_fault("*", {"kind": "status", "status": status}, times=1)
    problem(client.get("/music?user=studio"), 502, "upstream_auth_failed")
    clock.now += 4
    remembered = client.get("/music?user=studio")
    body = problem(remembered, 502, "upstream_auth_failed")
    assert f"status {status}" in body["detail"]
    assert remembered.headers["Retry-After"] == "6"
    assert sandbox.state.call_count() == 1
    assert client.get("/music?user=edge").status_code == 200  # another account
    clock.now += 6
    assert client.get("/music?user=studio").status_code == 200
    assert sandbox.state.call_count("1001") == 2


def test_auth_memory_can_be_switched_off(make_app: AppFactory, sandbox: SandboxServer) -> None:
    client = make_app(upstream_auth_failure_cooldown=0, cache_ttl=0).test_client()
    sandbox.state.set_fault("*", {"kind": "status", "status": 401}, times=1)
    problem(client.get("/music?user=studio"), 502, "upstream_auth_failed")
    assert client.get("/music?user=studio").status_code == 200


# --- circuit breaker ---------------------------------------------------------------------------


def test_breaker_opens_probes_and_closes(make_app: AppFactory, sandbox: SandboxServer) -> None:
    clock = Clock()
    client = make_app(clock=clock, cache_ttl=0, upstream_breaker_failures=3).test_client()
    sandbox.state.set_fault("1001", {"kind": "status", "status": 500})
    for _ in range(3):
        problem(client.get("/music?user=studio"), 502, "upstream_error")
    assert sandbox.state.call_count("1001") == 3
    for _ in range(5):
        started = time.monotonic()
        refused = client.get("/music?user=studio")
        assert time.monotonic() - started < 0.05
        problem(refused, 503, "upstream_unavailable")
        assert refused.headers["Retry-After"] == "15"
    assert sandbox.state.call_count("1001") == 3  # no call while open
    assert client.get("/music?user=edge").status_code == 200  # another account
    # Half-open: one probe; it fails, so the breaker reopens at once.
    clock.now += 15
    problem(client.get("/music?user=studio"), 502, "upstream_error")
    problem(client.get("/music?user=studio"), 503, "upstream_unavailable")
    assert sandbox.state.call_count("1001") == 4
    # The upstream recovers: the next probe succeeds and closes the breaker.
    sandbox.state.clear_fault("1001")
    clock.now += 15
    assert client.get("/music?user=studio").status_code == 200
    assert client.get("/music?user=studio&type=instrumental").status_code == 200
    assert sandbox.state.call_count("1001") == 6


def test_timeouts_and_cdn_pages_count_an_answer_resets(
    make_app: AppFactory, sandbox: SandboxServer
) -> None:
    client = make_app(cache_ttl=0, upstream_breaker_failures=2, upstream_deadline=0.3).test_client()
    sandbox.state.set_fault("*", {"kind": "cdn", "status": 522}, times=1)
    problem(client.get("/music?user=studio"), 502, "upstream_error")
    # A 400 shows the upstream is up: the streak starts again.
    sandbox.state.set_fault("*", {"kind": "status", "status": 400}, times=1)
    problem(client.get("/music?user=studio"), 400, "upstream_rejected")
    sandbox.state.set_fault("*", {"kind": "hang", "seconds": 5}, times=1)
    problem(client.get("/music?user=studio"), 504, "upstream_timeout")
    sandbox.state.set_fault("*", {"kind": "cdn", "status": 524}, times=1)
    problem(client.get("/music?user=studio"), 502, "upstream_error")
    problem(client.get("/music?user=studio"), 503, "upstream_unavailable")
    assert sandbox.state.call_count() == 4


def test_open_breaker_serves_the_stale_page(make_app: AppFactory, sandbox: SandboxServer) -> None:
    clock = Clock()
    client = make_app(clock=clock, upstream_breaker_failures=1).test_client()
    fresh = client.get("/music?user=studio")
    client.get("/music?user=studio&type=instrumental")
    sandbox.state.set_fault("*", {"kind": "status", "status": 503})
    clock.now += 31
    first = client.get("/music?user=studio")  # fails upstream, opens the breaker, stale
    second = client.get("/music?user=studio&type=instrumental")  # no call: stale
    assert first.get_data() == fresh.get_data()
    assert second.status_code == 200
    assert "detail=stale-if-error" in second.headers["Cache-Status"]
    assert sandbox.state.call_count() == 3


def _guards(clock: Clock, failures: int = 1) -> Guards:
    settings = UpstreamSettings(token=Secret("t"), breaker_failures=failures, breaker_open=15)
    return Guards(settings, MemoryGuardStore(clock), clock)


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = Clock()
    guards = _guards(clock)
    guards.failed("1001", UpstreamTimeout("slow", outage=True))
    with pytest.raises(BreakerOpen):
        guards.admit("1001")
    clock.now += 15
    guards.admit("1001")  # this call probes
    for _ in range(3):
        with pytest.raises(BreakerOpen) as refused:
            guards.admit("1001")  # concurrent others are refused as open
        assert refused.value.stale_ok
    guards.succeeded("1001")
    guards.admit("1001")
    assert guards.store.read("1001") == CLEAR


def test_every_timeout_and_unreachable_upstream_is_an_outage_whoever_raised_it() -> None:
    clock = Clock()
    guards = _guards(clock, failures=3)
    # Raised without saying so (as a body read that noticed the deadline did): still outages.
    guards.failed("1001", UpstreamTimeout("slow"))
    guards.failed("1001", UpstreamUnreachable("gone"))
    assert guards.store.read("1001").failures == 2
    guards.failed("1001", UpstreamTimeout("slow", outage=False))
    with pytest.raises(BreakerOpen):
        guards.admit("1001")


def test_a_lost_probe_lease_expires() -> None:
    clock = Clock()
    guards = _guards(clock)
    guards.failed("1001", UpstreamError("500", outage=True))
    clock.now += 15
    guards.admit("1001")  # the probe's worker dies: it never reports
    with pytest.raises(BreakerOpen):
        guards.admit("1001")
    clock.now += guards.probe_lease
    guards.admit("1001")


def test_state_is_plain_data_and_forgotten_when_clear() -> None:
    clock = Clock()
    guards = _guards(clock, failures=5)
    guards.failed("1001", UpstreamError("500", outage=True))
    state = guards.store.read("1001")
    assert state.failures == 1
    assert state.open_until == 0
    guards.succeeded("1001")
    assert guards.store.read("1001") == CLEAR
    assert len(guards.store._states) == 0  # type: ignore[attr-defined]
