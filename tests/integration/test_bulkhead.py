"""The bulkhead: a cap on concurrent upstream calls, 503 upstream_busy past it, stale instead."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask import Flask

from music_facade.bulkhead import Bulkhead
from music_facade.cache import list_key
from music_facade.config import BulkheadSettings
from music_facade.errors import UpstreamBusy
from music_facade.sandbox import SandboxServer
from tests.support.helpers import AppFactory
from tests.support.waiting import wait_until

ONE_SLOT = BulkheadSettings(max_concurrent_calls=1, max_wait=0.05)


@contextmanager
def hung_call(app: Flask, sandbox: SandboxServer, url: str) -> Iterator[list[int]]:
    """A request for `url` stuck on a hanging upstream (holding a slot) for the block's length."""
    sandbox.state.set_fault("1001", {"kind": "hang", "seconds": 30}, times=1)
    statuses: list[int] = []
    thread = threading.Thread(
        target=lambda: statuses.append(app.test_client().get(url).status_code)
    )
    thread.start()
    try:
        # The call holds the slot and has reached the sandbox: release() below ends its hang
        # (one released before the hang began would leave it waiting the full 30 s).
        wait_until(lambda: app.extensions["music"].bulkhead.in_use == 1)
        wait_until(lambda: sandbox.state.call_count("1001") == 1)
        yield statuses
    finally:
        sandbox.state.release()
        thread.join()


def test_a_slot_is_given_back_whatever_happens() -> None:
    bulkhead = Bulkhead(BulkheadSettings(max_concurrent_calls=2, max_wait=0))
    with bulkhead.slot(), bulkhead.slot():
        assert bulkhead.in_use == 2
        with pytest.raises(UpstreamBusy) as busy, bulkhead.slot():
            pass
        assert busy.value.status == 503
        assert busy.value.stale_ok
        assert busy.value.headers == {"Retry-After": "1"}
    with pytest.raises(RuntimeError), bulkhead.slot():
        raise RuntimeError("the call failed")
    assert bulkhead.in_use == 0
    with bulkhead.slot(), bulkhead.slot():
        assert bulkhead.in_use == 2


def test_a_waiting_miss_gets_the_slot_when_it_frees() -> None:
    bulkhead = Bulkhead(BulkheadSettings(max_concurrent_calls=1, max_wait=10))
    got = threading.Event()

    def wait_for_slot() -> None:
        with bulkhead.slot():
            got.set()

    with bulkhead.slot():
        waiter = threading.Thread(target=wait_for_slot)
        waiter.start()
        assert not got.is_set()
    waiter.join()
    assert got.is_set()


def test_miss_past_the_cap_is_503_upstream_busy(
    make_app: AppFactory, sandbox: SandboxServer
) -> None:
    app = make_app(bulkhead=ONE_SLOT)
    with hung_call(app, sandbox, "/music?user=studio") as statuses:
        busy = app.test_client().get("/music?user=edge")
        assert busy.status_code == 503
        assert busy.mimetype == "application/problem+json"
        assert busy.get_json()["code"] == "upstream_busy"
        assert busy.headers["Retry-After"] == "1"
        assert sandbox.state.call_count("1002") == 0  # refused without calling the upstream
        # Health and other pieces do not need a slot.
        assert app.test_client().get("/healthz").status_code == 200
    assert statuses == [200]
    assert app.extensions["music"].bulkhead.in_use == 0
    assert app.test_client().get("/music?user=edge").status_code == 200


def test_busy_serves_the_stale_page(make_app: AppFactory, sandbox: SandboxServer) -> None:
    now = [1000.0]
    app = make_app(clock=lambda: now[0], bulkhead=ONE_SLOT, cache_ttl=30)
    first = app.test_client().get("/music?user=edge")
    assert first.status_code == 200
    now[0] += 60  # stale, within stale_if_error
    with hung_call(app, sandbox, "/music?user=studio"):
        stale = app.test_client().get("/music?user=edge")
        assert stale.status_code == 200
        assert stale.get_data() == first.get_data()
        assert "fwd=stale" in stale.headers["Cache-Status"]
        assert "detail=stale-if-error" in stale.headers["Cache-Status"]


def test_followers_of_a_flight_take_no_slot(make_app: AppFactory, sandbox: SandboxServer) -> None:
    # The leader's call hangs until all six followers wait on it, however long a busy machine
    # takes to start them: a deadline well past that (the test settings' is 3 s).
    app = make_app(bulkhead=ONE_SLOT, upstream_read_timeout=20.0)
    statuses: list[int] = []

    def get() -> None:
        statuses.append(app.test_client().get("/music?user=studio").status_code)

    with hung_call(app, sandbox, "/music?user=studio") as leader:
        followers = [threading.Thread(target=get) for _ in range(6)]
        for t in followers:
            t.start()
        wait_until(lambda: app.extensions["music"].cache.followers(_studio_key()) == 6)
    for t in followers:
        t.join()
    assert leader + statuses == [200] * 7
    assert sandbox.state.call_count() == 1


def _studio_key() -> str:
    return list_key("1001", "song", None)


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        ({"kind": "status", "status": 503}, 502),
        ({"kind": "status", "status": 400}, 400),
        ({"kind": "malformed"}, 502),
        ({"kind": "hang", "seconds": 5}, 504),
        (None, 200),
    ],
)
def test_every_outcome_gives_the_slot_back(
    make_app: AppFactory, sandbox: SandboxServer, fault: dict[str, object] | None, status: int
) -> None:
    app = make_app(
        bulkhead=BulkheadSettings(max_concurrent_calls=1, max_wait=0), upstream_read_timeout=0.2
    )
    if fault is not None:
        sandbox.state.set_fault("1001", fault, times=1)
    assert app.test_client().get("/music?user=studio").status_code == status
    assert app.extensions["music"].bulkhead.in_use == 0
    # max_wait 0: the next miss would be refused at once if the slot had leaked.
    assert app.test_client().get("/music?user=edge").status_code == 200
