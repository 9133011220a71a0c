"""Each caller's cap on open /events streams, in process with the memory leases: the N+1th
stream is 429 too_many_streams, other callers are unaffected, a closed stream gives its place
back and an abandoned lease runs out (on a clock the test moves).

Streams are read with requests from the app on a real threaded WSGI server (werkzeug's); the
cap shared by replicas through Redis is tests/live/test_event_stream_caps_redis.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from music_facade import create_app
from music_facade.auth import mint_key
from music_facade.config import ClientSettings, EventsSettings, MirrorSettings, Secret
from music_facade.sandbox import SandboxServer
from music_facade.stream_leases import LEASE, MemoryStreamLeases
from tests.support import problem_codes
from tests.support.clock import Clock
from tests.support.helpers import sandbox_settings
from tests.support.serving import served
from tests.support.sse import items
from tests.support.waiting import wait_until

USERS = {"studio": "1001", "edge": "1002"}


@pytest.fixture
def clients() -> dict[str, tuple[ClientSettings, str]]:
    """Two clients, each with its key."""
    made = {}
    for name in ("one", "two"):
        key, digest = mint_key()
        made[name] = (ClientSettings(name=name, key_sha256=(digest,), users=frozenset("*")), key)
    return made


@pytest.fixture
def capped_app(
    sandbox: SandboxServer, tmp_path: Path
) -> Iterator[Callable[..., tuple[Flask, Clock]]]:
    """Apps with [mirror] on SQLite, the given clients and EventsSettings, and a test clock."""
    apps: list[Flask] = []

    def factory(clients: tuple[ClientSettings, ...] = (), **events: Any) -> tuple[Flask, Clock]:
        database = Secret(f"sqlite:///{tmp_path / f'mirror-{len(apps)}.db'}")
        settings = sandbox_settings(
            sandbox,
            users=USERS,
            clients=clients,
            mirror=MirrorSettings(database=database),
            events=EventsSettings(**{"heartbeat": 0.2, **events}),
        )
        clock = Clock()
        app = create_app(settings, clock=clock, sync=False)
        apps.append(app)
        return app, clock

    yield factory
    for app in apps:
        app.extensions["lifecycle"].begin_shutdown()
        app.extensions["music"].client.close()
        app.extensions["mirror"].client.close()
        app.extensions["mirror"].store.close()


class Opened:
    """A started stream and its reader (dropping the reader would close the response)."""

    def __init__(self, url: str, key: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.resp = requests.get(url + "/events", stream=True, timeout=(2, 5), headers=headers)
        assert self.resp.status_code == 200, self.resp.text
        self.items = items(self.resp)
        assert next(self.items).retry == "3000"

    def close(self) -> None:
        self.resp.close()


open_stream = Opened


def refused(url: str, key: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = requests.get(url + "/events", timeout=5, headers=headers)
    assert resp.status_code == 429, resp.text
    assert resp.headers["Retry-After"] == "10"
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.json()["code"] == "too_many_streams"
    problem_codes.record(resp.json(), "GET /events past the caller's cap")  # not via Flask
    return resp


def leases_of(app: Flask) -> MemoryStreamLeases:
    leases = app.extensions["events"].leases
    assert isinstance(leases, MemoryStreamLeases)
    return leases


def test_the_cap_refuses_one_callers_next_stream_and_leaves_others_alone(
    capped_app: Callable[..., tuple[Flask, Clock]],
    clients: dict[str, tuple[ClientSettings, str]],
) -> None:
    (one, one_key), (two, two_key) = clients["one"], clients["two"]
    app, _ = capped_app(clients=(one, two), max_streams_per_client=2)
    with served(app) as url:
        first, second = open_stream(url, one_key), open_stream(url, one_key)
        refused(url, one_key)
        assert leases_of(app).held("client:one") == 2
        # Another client has its own cap.
        others = [open_stream(url, two_key), open_stream(url, two_key)]
        refused(url, two_key)
        # A closed stream gives its place back (at its next write, which fails).
        first.close()
        wait_until(lambda: leases_of(app).held("client:one") == 1, timeout=5)
        third = open_stream(url, one_key)
        refused(url, one_key)
        for resp in (second, third, *others):
            resp.close()
        wait_until(lambda: leases_of(app).held("client:one") == 0, timeout=5)
        wait_until(lambda: leases_of(app).held("client:two") == 0, timeout=5)


def test_open_mode_caps_each_address(capped_app: Callable[..., tuple[Flask, Clock]]) -> None:
    app, _ = capped_app(max_streams_per_client=1)
    with served(app) as url:
        first = open_stream(url)
        for _ in range(3):
            refused(url)
        assert leases_of(app).held("addr:127.0.0.1") == 1
        first.close()


def test_a_full_worker_gives_the_callers_lease_back(
    capped_app: Callable[..., tuple[Flask, Clock]],
    clients: dict[str, tuple[ClientSettings, str]],
) -> None:
    (one, one_key), (two, two_key) = clients["one"], clients["two"]
    app, _ = capped_app(clients=(one, two), max_streams_per_client=1, max_streams=1)
    with served(app) as url:
        first = open_stream(url, one_key)
        refused(url, one_key)  # the caller's cap is checked first
        busy = requests.get(
            url + "/events", timeout=5, headers={"Authorization": f"Bearer {two_key}"}
        )
        assert busy.status_code == 503
        assert busy.json()["code"] == "events_busy"
        assert leases_of(app).held("client:two") == 0
        first.close()


def test_an_abandoned_lease_stops_counting_once_it_expires(
    capped_app: Callable[..., tuple[Flask, Clock]],
) -> None:
    app, clock = capped_app(max_streams_per_client=1)
    # A lease held by a stream that died without giving it back, as a crashed worker leaves it.
    abandoned = leases_of(app).take("addr:127.0.0.1", "dead-stream", 1, LEASE)
    assert abandoned is not None
    with served(app) as url:
        refused(url)
        clock.now += LEASE - 1
        refused(url)
        clock.now += 2  # past its expiry: nobody renewed it
        open_stream(url).close()
