"""The change stream as one deployment: two replicas (gunicorn, 2 gevent workers each) sharing a
real PostgreSQL mirror and a real redis-server, behind real nginx running deploy/nginx/nginx.conf,
against the sandbox's live account.

Proves that a generating track reaches a stream within a second of the sync writing each change
whichever replica holds the stream and whichever runs the sync, that heartbeats pass nginx
unbuffered, that a replica's SIGTERM ends its streams cleanly and a reconnection through nginx
misses and repeats nothing, that the per-client cap spans both replicas, and that a webhook
configured on both is delivered once per change. One fleet serves the whole module.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import requests

from music_facade.auth import mint_key
from music_facade.config import EventsSettings
from music_facade.mirror import Store
from music_facade.mirror.outbox import DELIVERED, Delivery
from music_facade.sandbox import SandboxServer

from ..support.deploy_render import NGINX_TEMPLATE
from ..support.fleet import Fleet, fleet
from ..support.live_account import new_track
from ..support.postgres_server import PostgresServer
from ..support.sse import Event, Follower
from ..support.sync_lease import move_sync, replica_syncing, sync_holder
from ..support.waiting import wait_until
from ..support.webhook_receiver import Receiver, new_secret, receiving

pytestmark = [pytest.mark.redis, pytest.mark.nginx, pytest.mark.postgres]

HEARTBEAT = 0.25  # seconds: short, so that a buffering proxy would show at once
CAP = 2  # [events] max_streams_per_client
LATENCY = 1.0  # seconds from the sync's write to a client's receipt, at most
ALIAS = "studio"
WEBHOOK = "fleet"

EVENTS_CONFIG = """
[mirror]
database = "{database}"
interval = 1
active_interval = 0.5
reconcile_every = 86400
max_calls_per_minute = 1000

[events]
heartbeat = {heartbeat}
max_streams_per_client = {cap}

[[webhooks]]
name = "{webhook}"
url = "{hook_url}"
secret_env = "FLEET_WEBHOOK_SECRET"
users = ["{alias}"]
"""

CLIENT = """
[[clients]]
name = "{name}"
key_sha256 = "{digest}"
users = ["*"]
rate_limit = "100000/minute"
"""

# One client per stream a test holds at a time, so that each test's streams count only against
# caps of their own (the cap test's client holds nothing else).
CLIENTS = ("watch-1", "watch-2", "watch-nginx", "beat", "capped", "resume-1", "resume-2")


@dataclass
class EventsFleet:
    """The fleet, its mirror's database, a key per client name and the webhook's receiver."""

    fleet: Fleet
    database: str
    keys: dict[str, str]
    receiver: Receiver


def synced(url: str) -> bool:
    checks = requests.get(url + "/readyz", timeout=5).json()["checks"]
    return bool(checks["mirror"] == "ok")


@pytest.fixture(scope="module")
def running(
    sandbox_server: SandboxServer,
    postgres: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EventsFleet]:
    tmp = tmp_path_factory.mktemp("events-fleet")
    database = postgres.database("events_fleet")
    secret = new_secret()
    keys: dict[str, str] = {}
    clients = ""
    for name in CLIENTS:
        keys[name], digest = mint_key()
        clients += CLIENT.format(name=name, digest=digest)
    app_key, app_digest = mint_key()
    limited_key, limited_digest = mint_key()
    with receiving(secret) as receiver:
        extra = EVENTS_CONFIG.format(
            database=database, heartbeat=HEARTBEAT, cap=CAP, webhook=WEBHOOK,
            hook_url=receiver.url, alias=ALIAS,
        )  # fmt: skip
        with fleet(sandbox_server, tmp, app_key, app_digest, limited_key, limited_digest,
                   extra=extra + clients, env={"FLEET_WEBHOOK_SECRET": secret}) as f:  # fmt: skip
            for replica in f.replicas:
                wait_until(partial(synced, replica.url), timeout=30)
            yield EventsFleet(f, database, keys, receiver)


@pytest.fixture
def live(running: EventsFleet, sandbox: SandboxServer) -> Iterator[EventsFleet]:
    """The fleet; after the test, every stream it opened has let go of its lease."""
    yield running
    redis = running.fleet.redis.client()
    wait_until(lambda: not redis.keys("fleet:streams:*"), timeout=5)


def headers(key: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **more}


def connect(url: str, key: str, **more: str) -> requests.Response:
    """GET /events for the studio alias, the answer not read yet (a 200 streams until closed)."""
    return requests.get(url + "/events", params={"user": ALIAS}, headers=headers(key, **more),
                        stream=True, timeout=(5, 10))  # fmt: skip


def follow(url: str, key: str, **more: str) -> Follower:
    """An open stream read in the background, once its `retry:` (it is registered) came."""
    resp = connect(url, key, **more)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"] == "text/event-stream"
    follower = Follower(resp)
    wait_until(lambda: bool(follower.arrivals) or follower.ended.is_set(), timeout=5)
    assert follower.arrivals[0][1].retry == "3000"
    return follower


def about(event: Event, item: str) -> bool:
    data = event.json()
    return bool(data.get("track", {}).get("id") == item or data.get("id") == item)


def saw(follower: Follower, item: str, event: str) -> bool:
    """Whether the stream brought that event of that track."""
    return any(e.event == event and about(e, item) for _, e in follower.events())


def logged(database: str, since: int) -> list[Any]:
    """The alias's changes after `since`, from the mirror's own log."""
    store = Store.open(database)
    try:
        return store.changes(since, [ALIAS], 10_000).changes
    finally:
        store.close()


def version(database: str) -> int:
    store = Store.open(database)
    try:
        return store.version()
    finally:
        store.close()


# --- live events within a second, any replica streaming, any replica syncing -----------------


@pytest.mark.parametrize("syncing", [0, 1], ids=["replica-1-syncs", "replica-2-syncs"])
def test_a_generating_track_reaches_every_replicas_streams_within_a_second(
    live: EventsFleet, sandbox: SandboxServer, syncing: int
) -> None:
    replicas = live.fleet.replicas
    move_sync(live.database, ALIAS, replicas, syncing)
    holder = sync_holder(live.database, ALIAS)
    followers = {
        "replica-1": follow(replicas[0].url, live.keys["watch-1"]),
        "replica-2": follow(replicas[1].url, live.keys["watch-2"]),
        "nginx": follow(live.fleet.url, live.keys["watch-nginx"]),
    }
    since = version(live.database)
    item = new_track(sandbox, f"Fleet Lights {syncing}", seconds=2)
    for follower in followers.values():
        wait_until(partial(saw, follower, item, "track.completed"), timeout=20)
    # The same process synced the alias throughout.
    assert sync_holder(live.database, ALIAS) == holder
    assert replica_syncing(live.database, ALIAS, replicas) == syncing
    for follower in followers.values():
        follower.stop()
    written = {c.seq: c for c in logged(live.database, since) if c.id == item}
    events = [c.event for c in written.values()]
    assert events[0] == "track.created"
    assert events[-1] == "track.completed"
    assert "track.progress" in events
    for name, follower in followers.items():
        assert follower.error is None
        got = [(at, e) for at, e in follower.events() if about(e, item)]
        assert [int(e.id or 0) for _, e in got] == list(written)  # each once, in order
        assert [e.event for _, e in got] == events
        delays = [at - written[int(e.id or 0)].at for at, e in got]
        print(f"sync on replica-{syncing + 1}, stream on {name}: {len(got)} events, "
              f"slowest {max(delays):.3f} s after the sync's write")  # fmt: skip
        assert max(delays) < LATENCY


# --- heartbeats through nginx ----------------------------------------------------------------


def test_heartbeats_pass_through_nginx_unbuffered(live: EventsFleet) -> None:
    direct = connect(live.fleet.replicas[0].url, live.keys["beat"])
    try:
        assert direct.status_code == 200
        # What tells nginx to pass each event on at once; nginx consumes it (below).
        assert direct.headers["X-Accel-Buffering"] == "no"
    finally:
        direct.close()
    follower = follow(live.fleet.url, live.keys["beat"])
    try:
        resp = follower.resp
        assert resp.headers["Cache-Control"] == "no-cache"
        assert "X-Accel-Buffering" not in resp.headers
        wait_until(lambda: len(follower.comments()) >= 5, timeout=5)
    finally:
        follower.stop()
    opened = follower.arrivals[0][0]
    beats = [at for at, text in follower.comments()[:5]]
    assert {text for _, text in follower.comments()} == {"keep-alive"}
    gaps = [b - a for a, b in zip([opened, *beats], beats, strict=False)]
    print("heartbeat gaps through nginx: " + ", ".join(f"{g:.3f}" for g in gaps))
    assert max(gaps) < HEARTBEAT + 0.5


def test_nginx_waits_longer_than_a_heartbeat_on_events() -> None:
    lines = NGINX_TEMPLATE.read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    # /events is served by `location /` (no location of its own).
    assert not re.search(r"location\s+[=~^]*\s*/events", text)
    (timeout,) = re.findall(r"proxy_read_timeout\s+(\d+)s;", text)
    (buffering,) = re.findall(r"proxy_buffering\s+(\w+);", text)
    assert int(timeout) > EventsSettings().heartbeat > HEARTBEAT
    # Buffering stays on for every other answer; the stream turns it off with its header, which
    # nginx must not be told to ignore.
    assert buffering == "on"
    assert "proxy_ignore_headers" not in text


# --- the per-client cap across the fleet -----------------------------------------------------


def test_the_per_client_cap_holds_across_both_replicas(live: EventsFleet) -> None:
    one, two = live.fleet.replicas
    key = live.keys["capped"]
    first = follow(one.url, key)
    second = follow(two.url, key)
    for url in (one.url, two.url, live.fleet.url):
        refused = connect(url, key)
        assert refused.status_code == 429, refused.text
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert refused.json()["code"] == "too_many_streams"
        assert refused.headers["Retry-After"] == "10"
    first.stop()  # the client hangs up: replica 1 notices and frees its slot

    admitted: list[Follower] = []

    def admits() -> bool:
        resp = connect(live.fleet.url, key)
        if resp.status_code == 429:
            resp.close()
            return False
        assert resp.status_code == 200, resp.text
        admitted.append(Follower(resp))
        return True

    wait_until(admits, timeout=5)
    refused = connect(live.fleet.url, key)
    assert refused.status_code == 429
    refused.close()
    for follower in (second, *admitted):
        follower.stop()


# --- webhooks: both replicas deliver, each change once ---------------------------------------


def test_a_webhook_on_both_replicas_is_delivered_once_per_change(
    live: EventsFleet, sandbox: SandboxServer
) -> None:
    receiver = live.receiver
    item = new_track(sandbox, "Fleet Webhook", seconds=1)

    def completion_received() -> bool:
        return any(p["type"] == "track.completed" and p["data"]["track"]["id"] == item
                   for p in receiver.verified())  # fmt: skip

    wait_until(completion_received, timeout=30)
    store = Store.open(live.database)
    try:
        log = store.changes(None, [ALIAS], 10_000).changes

        def written() -> list[Delivery]:  # for the changes read above
            return [d for d in store.outbox.find(WEBHOOK) if d.seq <= log[-1].seq]

        wait_until(lambda: all(d.status == DELIVERED for d in written()))
        deliveries = written()
    finally:
        store.close()
    # One delivery per change of the alias (the backfill's and every test's tracks)...
    assert sorted(d.seq for d in deliveries) == [c.seq for c in log]
    # ...each attempted once, by one process of one replica, and received once, verified.
    assert {d.attempts for d in deliveries} == {1}
    assert all(r.payload is not None for r in receiver.received)
    received = Counter(receiver.ids())
    assert received == Counter(d.id for d in deliveries)
    by_id = {d.id: d for d in deliveries}
    for r in receiver.received:
        assert r.id is not None
        assert r.payload["type"] == by_id[r.id].event
    print(f"webhook: {len(deliveries)} deliveries, each received once")


# --- a replica stopped: its streams end, clients resume through nginx ------------------------


def test_a_stopped_replicas_streams_end_and_resume_through_nginx_exactly_once(
    live: EventsFleet, sandbox: SandboxServer
) -> None:
    victim, survivor = live.fleet.replicas
    # One stream pinned to the replica that stops, one through nginx (on either replica).
    clients = {"direct": ("resume-1", victim.url), "nginx": ("resume-2", live.fleet.url)}
    since = version(live.database)
    first = {name: follow(url, live.keys[key]) for name, (key, url) in clients.items()}
    item = new_track(sandbox, "Fleet Rollout", seconds=3)
    for follower in first.values():
        wait_until(partial(saw, follower, item, "track.progress"), timeout=15)
    assert victim.proc is not None
    victim.proc.terminate()  # SIGTERM: streams end, in-flight requests finish, exit
    # The test holds a copy of the replica's listening socket: close it, as a real replica's
    # closes with its process.
    victim.sock.close()
    assert first["direct"].ended.wait(5), "the stream outlived the replica's shutdown"
    assert first["direct"].error is None  # ended with the answer's end, not a cut
    assert victim.proc.wait(timeout=20) == 0
    streams: dict[str, list[Event]] = {}
    for name, follower in first.items():
        events = [e for _, e in follower.events()]
        if follower.ended.is_set():
            assert follower.error is None
            key = live.keys[clients[name][0]]
            resumed = follow(live.fleet.url, key, **{"Last-Event-ID": str(events[-1].id)})
            wait_until(partial(saw, resumed, item, "track.completed"), timeout=20)
            resumed.stop()
            events += [e for _, e in resumed.events()]
            print(f"{name}: ended with the replica, resumed through nginx after id {events[-1].id}")
        else:
            wait_until(partial(saw, follower, item, "track.completed"), timeout=20)
            events = [e for _, e in follower.events()]
            print(f"{name}: on the surviving replica, never interrupted")
        follower.stop()
        streams[name] = events
    log = logged(live.database, since)
    for name, events in streams.items():
        # Exactly the log from the stream's first event to its last: no gap, no duplicate.
        first_seq, last_seq = int(events[0].id or 0), int(events[-1].id or 0)
        expected = [(c.seq, c.event) for c in log if first_seq <= c.seq <= last_seq]
        assert [(int(e.id or 0), e.event) for e in events] == expected, name
        assert [e.event for e in events if about(e, item)][-1] == "track.completed"
    assert survivor.proc is not None
    assert survivor.proc.poll() is None  # serving on
    # (The last test of the module: the fleet keeps one replica from here on.)
