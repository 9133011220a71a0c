"""GET /events in process: the change log's event names, the refusals before the stream, and
the stream itself (replay, then live) from the app served on a loopback port.

The mirror is SQLite in the test's directory, written through its Store as the syncer writes
it. Streams are read with requests from a real threaded WSGI server (werkzeug's); the live
test under gunicorn is tests/live/test_events_live.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import text

from music_facade import create_app
from music_facade.auth import mint_key
from music_facade.config import ClientSettings, EventsSettings, MirrorSettings, Secret
from music_facade.core.tracks import dump_track
from music_facade.mirror import Entry, Store
from music_facade.sandbox import SandboxServer
from music_facade.sandbox.data import full_record
from tests.support import problem_codes
from tests.support.clock import Clock
from tests.support.helpers import CheckedClient, sandbox_settings
from tests.support.serving import served
from tests.support.sse import Event, events, items
from tests.support.waiting import wait_until

USERS = {"studio": "1001", "edge": "1002"}
MirrorApp = Callable[..., Flask]


def track(alias: str, type_: str, index: int, status: tuple[int, int], **changes: Any) -> Entry:
    """The Entry the syncer would write for a record in that status band (code, progress)."""
    record = full_record(USERS[alias], type_, index, status=status)
    shown = {**dump_track(record), **changes}
    return Entry(record["itemId"], record["job_id"], shown, record.get("updateTime"))


# --- event names in the change log ---------------------------------------------------------


@pytest.fixture
def store(mirror_database: str) -> Iterator[Store]:
    opened = Store.open(mirror_database, clock=Clock(), changes_retention=100.0)
    yield opened
    opened.close()


def test_each_write_is_named_for_the_transition_it_made(store: Store) -> None:
    def names(made: list[Any]) -> list[str]:
        return [change.event for change in made]

    a = ("studio", "song", 0)
    assert names(store.write("studio", "song", [track(*a, (5, 10))])) == ["track.created"]
    assert names(store.write("studio", "song", [track(*a, (5, 40))])) == ["track.progress"]
    # Still generating at the same progress, something else changed.
    renamed = track(*a, (5, 40), title="Renamed")
    assert names(store.write("studio", "song", [renamed])) == ["track.updated"]
    assert names(store.write("studio", "song", [track(*a, (30, 100))])) == ["track.completed"]
    again = track(*a, (30, 100), title="Renamed Again")
    assert names(store.write("studio", "song", [again])) == ["track.updated"]
    assert store.write("studio", "song", [again]) == []  # nothing changed: nothing logged
    b = ("studio", "song", 1)
    assert names(store.write("studio", "song", [track(*b, (5, 0))])) == ["track.created"]
    assert names(store.write("studio", "song", [track(*b, (20, 0))])) == ["track.failed"]
    # Straight to completed from nothing is a creation; failed to completed completes.
    c = ("studio", "song", 2)
    assert names(store.write("studio", "song", [track(*c, (30, 100))])) == ["track.created"]
    assert names(store.write("studio", "song", [track(*b, (30, 100))])) == ["track.completed"]
    gone = store.delete("studio", "song", [track(*a, (30, 100)).id])
    assert names(gone) == ["track.deleted"]

    logged = store.changes(None, ["studio"], 100).changes
    assert [c.event for c in logged] == [
        "track.created", "track.progress", "track.updated", "track.completed",
        "track.updated", "track.created", "track.failed", "track.created",
        "track.completed", "track.deleted",
    ]  # fmt: skip
    # Rows logged before the log named its changes read as updated or deleted.
    with store._db.write() as conn:
        conn.execute(text("UPDATE changes SET event = NULL"))
    old = store.changes(None, ["studio"], 100).changes
    assert {c.event for c in old if c.op == "upsert"} == {"track.updated"}
    assert {c.event for c in old if c.op == "delete"} == {"track.deleted"}


# --- the app ---------------------------------------------------------------------------------


@pytest.fixture
def mirror_app(sandbox: SandboxServer, tmp_path: Path) -> Iterator[MirrorApp]:
    """Apps with [mirror] on SQLite in tmp_path and fast heartbeats; keyword arguments change
    EventsSettings (clients=... and changes_retention=... go to the settings)."""
    apps: list[Flask] = []

    def factory(
        clients: tuple[ClientSettings, ...] = (),
        changes_retention: float = 604800.0,
        **events: Any,
    ) -> Flask:
        database = Secret(f"sqlite:///{tmp_path / f'mirror-{len(apps)}.db'}")
        settings = sandbox_settings(
            sandbox,
            users=USERS,
            clients=clients,
            mirror=MirrorSettings(database=database, changes_retention=changes_retention),
            events=EventsSettings(**{"heartbeat": 0.2, **events}),
        )
        app = create_app(settings, sync=False)
        app.test_client_class = CheckedClient
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["lifecycle"].begin_shutdown()  # ends any stream still open
        app.extensions["music"].client.close()
        app.extensions["mirror"].client.close()
        app.extensions["mirror"].store.close()


def store_of(app: Flask) -> Store:
    store: Store = app.extensions["mirror"].store
    return store


def open_stream(url: str, **kwargs: Any) -> requests.Response:
    resp = requests.get(url + "/events", stream=True, timeout=(2, 5), **kwargs)
    assert resp.status_code == 200, resp.text
    return resp


def get_json(client: FlaskClient, url: str, status: int, **kwargs: Any) -> Any:
    resp = client.get(url, **kwargs)
    assert resp.status_code == status, (url, resp.status_code, resp.data[:300])
    return resp.get_json()


def test_parameters_are_checked_before_the_stream_listing_every_bad_one(
    mirror_app: MirrorApp,
) -> None:
    client = mirror_app().test_client()
    doc = get_json(client, "/events?type=video&since=-1&page=2&user=studio&user=edge", 400)
    assert doc["code"] == "invalid_query"
    assert set(doc["errors"]) == {"type", "since", "page", "user"}
    doc = get_json(client, "/events?since=1", 400, headers={"Last-Event-ID": "abc"})
    assert list(doc["errors"]) == ["Last-Event-ID"]
    assert get_json(client, "/events?user=nobody", 400)["code"] == "unknown_user"
    assert client.head("/events?type=video").status_code == 400


def test_an_alias_outside_the_callers_scope_is_403(mirror_app: MirrorApp) -> None:
    key, digest = mint_key()
    only_studio = ClientSettings(name="app", key_sha256=(digest,), users=frozenset({"studio"}))
    app = mirror_app(clients=(only_studio,), max_streams=1)
    client = app.test_client()
    assert get_json(client, "/events", 401)["code"] == "credential_missing"
    bearer = {"Authorization": f"Bearer {key}"}
    for url in ("/events?user=edge", "/events?user=studio,edge"):
        assert get_json(client, url, 403, headers=bearer)["code"] == "user_not_allowed"
    # A HEAD begins no stream: it holds no slot (the only one) and wakes no poller.
    for _ in range(2):
        assert client.head("/events?user=studio", headers=bearer).status_code == 200
    assert app.extensions["events"].wakeups.waiting() == 0


def test_a_position_older_than_the_log_is_410_before_the_stream(mirror_app: MirrorApp) -> None:
    app = mirror_app(changes_retention=0.01)
    client = app.test_client()
    store = store_of(app)
    store.write("studio", "song", [track("studio", "song", 0, (5, 10))])
    store.write("studio", "song", [track("studio", "song", 0, (30, 100))])  # supersedes it
    time.sleep(0.05)
    assert store.prune() == 1
    assert get_json(client, "/events?since=0", 410)["code"] == "changes_expired"
    doc = get_json(client, "/events", 410, headers={"Last-Event-ID": "0"})
    assert doc["code"] == "changes_expired"


def test_replay_then_live_in_order_once_each_then_resume_after_the_last_id(
    mirror_app: MirrorApp,
) -> None:
    app = mirror_app()
    store = store_of(app)
    store.write("studio", "song", [track("studio", "song", 0, (30, 100))])
    since = store.version()
    # More than a page of the log (500) to replay, and changes the filter leaves out.
    store.write("studio", "song", [track("studio", "song", i, (5, 10)) for i in range(1, 1201)])
    store.write("edge", "song", [track("edge", "song", 0, (5, 10))])
    store.write("studio", "instrumental", [track("studio", "instrumental", 0, (5, 10))])
    store.write("studio", "song", [track("studio", "song", 1, (5, 60))])
    with served(app) as url:
        resp = open_stream(url, params={"user": "studio", "type": "song", "since": str(since)})
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["X-Accel-Buffering"] == "no"
        stream = items(resp)
        assert next(stream).retry == "3000"
        got = [next(stream) for _ in range(1201)]
        assert [e.event for e in got] == ["track.created"] * 1200 + ["track.progress"]
        ids = [int(e.id or 0) for e in got]
        assert ids == sorted(set(ids))
        assert {(e.json()["user"], e.json()["type"]) for e in got} == {("studio", "song")}
        assert got[-1].json()["track"]["progress"] == 60

        # Live: a write shows within a second; heartbeats while nothing happens.
        assert next(stream).comment == "keep-alive"
        written = time.monotonic()
        store.write("studio", "song", [track("studio", "song", 1, (30, 100))])
        store.delete("studio", "song", [track("studio", "song", 2, (5, 10)).id])
        live = next(e for e in stream if e.data)
        assert time.monotonic() - written < 1.5
        assert live.event == "track.completed"
        deleted = next(e for e in stream if e.data)
        assert deleted.event == "track.deleted"
        assert deleted.json() == {"user": "studio", "type": "song", "id": track(
            "studio", "song", 2, (5, 10)).id}  # fmt: skip
        resp.close()

        # A reconnection with Last-Event-ID (winning over since) gets exactly what followed.
        middle = got[600].id
        again = open_stream(
            url, params={"user": "studio", "since": "0"}, headers={"Last-Event-ID": str(middle)}
        )
        after = events(again)
        resumed = [next(after) for _ in range(600 + 1 + 2)]  # song 600.., instrumental, 2 live
        again.close()
    expected = [e.id for e in got[601:]] + [live.id, deleted.id]
    resumed_song = [e.id for e in resumed if e.json()["type"] == "song"]
    assert resumed_song == expected
    assert [e.json()["type"] for e in resumed].count("instrumental") == 1


def test_without_a_position_the_stream_is_live_only(mirror_app: MirrorApp) -> None:
    app = mirror_app()
    store = store_of(app)
    store.write("studio", "song", [track("studio", "song", 0, (30, 100))])
    with served(app) as url:
        resp = open_stream(url)
        stream = items(resp)
        assert next(stream).retry == "3000"  # the stream is open: what follows is live
        store.write("edge", "instrumental", [track("edge", "instrumental", 3, (5, 0))])
        first = next(e for e in stream if e.data)
        resp.close()
    assert (first.event, first.json()["user"], first.json()["type"]) == (
        "track.created", "edge", "instrumental",
    )  # fmt: skip


def test_a_full_worker_refuses_with_503_and_a_hang_up_frees_the_slot(
    mirror_app: MirrorApp,
) -> None:
    app = mirror_app(max_streams=1)
    wakeups = app.extensions["events"].wakeups
    with served(app) as url:
        first = open_stream(url)
        assert next(items(first)).retry == "3000"
        busy = requests.get(url + "/events", timeout=5)
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "10"
        assert busy.json()["code"] == "events_busy"
        problem_codes.record(busy.json(), "GET /events past the worker's cap")  # not via Flask
        first.close()
        # The next heartbeat's write fails: the slot and the waiter are given back.
        wait_until(lambda: wakeups.waiting() == 0, timeout=5)
        second = open_stream(url)
        assert next(items(second)).retry == "3000"
        second.close()


def test_a_process_shutting_down_ends_its_streams(mirror_app: MirrorApp) -> None:
    app = mirror_app(heartbeat=60)
    with served(app) as url:
        resp = open_stream(url)
        stream = items(resp)
        assert next(stream).retry == "3000"
        app.extensions["lifecycle"].begin_shutdown()
        began = time.monotonic()
        rest: list[Event] = list(stream)  # the stream ends cleanly: no error, nothing more
        assert rest == []
        assert time.monotonic() - began < 2


def test_changes_name_their_events(mirror_app: MirrorApp) -> None:
    app = mirror_app()
    store = store_of(app)
    store.write("studio", "song", [track("studio", "song", 0, (5, 10))])
    store.write("studio", "song", [track("studio", "song", 0, (30, 100))])
    store.delete("studio", "song", [track("studio", "song", 0, (30, 100)).id])
    changes = get_json(app.test_client(), "/changes", 200)["changes"]
    assert [c["event"] for c in changes] == ["track.created", "track.completed", "track.deleted"]


# --- the change tail: one read of the log per change for every stream ------------------------


@contextmanager
def log_reads(store: Store) -> Iterator[list[str]]:
    """Every read of the change log's rows (not its version) on the store's engine, as it runs:
    the database's own account of who read what."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM changes" in statement and "ORDER BY changes.seq" in statement:
            seen.append(statement)

    engine = store._db.engine
    sqlalchemy_event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", record)


def test_many_streams_share_one_read_of_the_log_per_change(mirror_app: MirrorApp) -> None:
    app = mirror_app(max_streams_per_client=24)
    store = store_of(app)
    tail = app.extensions["events"].tail
    filters: list[dict[str, str]] = [{}, {"user": "studio"}, {"user": "edge"}, {"type": "song"}]
    with served(app) as url:
        opened = [open_stream(url, params=filters[i % 4]) for i in range(24)]
        streams = [events(resp) for resp in opened]
        wait_until(lambda: tail.subscribed() == 24)
        # Once every stream has one live change, each is in step with the tail.
        store.write("studio", "song", [track("studio", "song", 0, (5, 10))])
        for i, stream in enumerate(streams):
            if i % 4 != 2:  # edge's streams do not see studio's change
                assert next(stream).event == "track.created"
        written = [
            ("edge", "song", track("edge", "song", 0, (5, 10))),
            ("studio", "instrumental", track("studio", "instrumental", 0, (5, 10))),
            ("studio", "song", track("studio", "song", 0, (30, 100))),
        ]
        with log_reads(store) as reads:
            for alias, type_, entry in written:
                store.write(alias, type_, [entry])
                # Each change reaches every stream it concerns before the next is written.
                for i, stream in enumerate(streams):
                    shown = filters[i % 4]
                    if shown.get("user", alias) == alias and shown.get("type", type_) == type_:
                        got = next(stream)
                        assert (got.json()["user"], got.json()["type"]) == (alias, type_)
                        assert int(got.id or 0) == store.version()
        # 24 streams, 3 changes: the tail's reads, one per change (not 24 per change).
        assert len(reads) == 3
        for resp in opened:
            resp.close()
        wait_until(lambda: tail.subscribed() == 0, timeout=5)  # a hang-up unsubscribes


def test_a_stream_too_far_behind_the_tail_reads_the_log_itself_and_misses_nothing(
    mirror_app: MirrorApp,
) -> None:
    app = mirror_app(heartbeat=60)
    store = store_of(app)
    tail = app.extensions["events"].tail
    # Fewer changes than one write may wait: every batch overflows a stream's queue whether or
    # not its writes block (loopback's send buffers can take all 1,200 changes at once, so a
    # slow reader alone does not make a stream fall behind reliably).
    tail.queue_limit = 50
    with served(app) as url:
        fast = open_stream(url, params={"user": "studio"})
        fast_events = events(fast)
        host, port = url.removeprefix("http://").split(":")
        slow = socket.socket()
        # A caller that reads nothing for a while, with room for little: the server's writes
        # to it block, and what the tail hands its stream meanwhile piles up past the bound.
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect((host, int(port)))
        slow.sendall(f"GET /events?user=studio HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        wait_until(lambda: tail.subscribed() == 2)
        written: list[int] = []
        tail_reads = tail.reads
        with log_reads(store) as reads:
            for batch in range(12):  # 1,200 changes, 100 at a time, each its own batch
                made = store.write("studio", "song", [
                    track("studio", "song", 100 * batch + i, (5, 10)) for i in range(100)
                ])  # fmt: skip
                written += [change.seq for change in made]
                fast_ids = [int(next(fast_events).id or 0) for _ in range(100)]
                assert fast_ids == written[-100:]
            slow.settimeout(10)
            body = b""
            while body.count(b"\nid: ") < len(written):
                chunk = slow.recv(65536)
                assert chunk, "the slow stream ended early"
                body += chunk
        slow.close()
        fast.close()
    ids = [int(line[4:]) for line in body.split(b"\n") if line.startswith(b"id: ")]
    assert ids == written  # every change once, in order, though it fell behind
    # Besides the tail's reads, the slow stream read the log itself to catch up.
    assert len(reads) > tail.reads - tail_reads >= 12
