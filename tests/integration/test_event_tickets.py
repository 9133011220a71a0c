"""Event-stream tickets in process: POST /events/tickets, then GET /events?ticket=… once.

The app is served on a loopback port (werkzeug's threaded server) with the mirror on SQLite in
the test's directory and the change log written through its Store; the ticket's clock is the
test's own, so expiry is tested without waiting.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from music_facade import create_app
from music_facade.auth import mint_key
from music_facade.config import ClientSettings, EventsSettings, MirrorSettings, Secret
from music_facade.core.tracks import dump_track
from music_facade.logs import JsonLines, RedactSecrets
from music_facade.mirror import Entry, Store
from music_facade.sandbox import SandboxServer
from music_facade.sandbox.data import full_record
from music_facade.tickets import TTL
from tests.support.clock import Clock
from tests.support.helpers import CheckedClient, sandbox_settings
from tests.support.serving import served
from tests.support.sse import items

USERS = {"studio": "1001", "edge": "1002"}


def track(alias: str, type_: str, index: int, status: tuple[int, int]) -> Entry:
    record = full_record(USERS[alias], type_, index, status=status)
    return Entry(record["itemId"], record["job_id"], dump_track(record), record.get("updateTime"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keys() -> dict[str, str]:
    """Client keys: "both" reads every alias, "studio" only studio."""
    return {}


@pytest.fixture
def app(
    sandbox: SandboxServer, tmp_path: Path, clock: Clock, keys: dict[str, str]
) -> Iterator[Flask]:
    clients = []
    for name, users in (("both", {"studio", "edge"}), ("studio", {"studio"})):
        key, digest = mint_key()
        keys[name] = key
        clients.append(ClientSettings(name=name, key_sha256=(digest,), users=frozenset(users)))
    settings = sandbox_settings(
        sandbox,
        users=USERS,
        clients=tuple(clients),
        mirror=MirrorSettings(database=Secret(f"sqlite:///{tmp_path / 'mirror.db'}")),
        events=EventsSettings(heartbeat=0.2),
    )
    made = create_app(settings, sync=False, clock=clock)
    made.test_client_class = CheckedClient
    yield made
    made.extensions["lifecycle"].begin_shutdown()
    made.extensions["music"].client.close()
    made.extensions["mirror"].client.close()
    made.extensions["mirror"].store.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def issue(app: Flask, key: str, body: Any = None, status: int = 201) -> Any:
    resp = app.test_client().post("/events/tickets", json=body, headers=bearer(key))
    assert resp.status_code == status, resp.get_data()[:300]
    return resp


def test_a_ticket_opens_one_stream_as_its_caller_and_only_once(
    app: Flask, keys: dict[str, str]
) -> None:
    resp = issue(app, keys["both"], {"user": "studio", "type": "song"})
    assert resp.headers["Cache-Control"] == "no-store"
    doc = resp.get_json()
    assert doc["expires_in"] == TTL == 60
    assert len(doc["ticket"]) >= 43  # 32 random bytes, URL-safe base64
    assert doc["url"] == f"/events?ticket={doc['ticket']}&user=studio&type=song"
    store: Store = app.extensions["mirror"].store
    with served(app) as url:
        stream_resp = requests.get(url + doc["url"], stream=True, timeout=(2, 5))
        assert stream_resp.status_code == 200, stream_resp.text
        stream = items(stream_resp)
        assert next(stream).retry == "3000"
        # Outside the ticket's type and alias: left out; inside: sent.
        store.write("edge", "song", [track("edge", "song", 0, (5, 10))])
        store.write("studio", "instrumental", [track("studio", "instrumental", 0, (5, 10))])
        store.write("studio", "song", [track("studio", "song", 0, (5, 10))])
        first = next(e for e in stream if e.data)
        assert (first.json()["user"], first.json()["type"]) == ("studio", "song")
        stream_resp.close()

        again = requests.get(url + doc["url"], timeout=5)
    assert again.status_code == 401
    assert again.json()["code"] == "invalid_ticket"
    assert again.headers["WWW-Authenticate"].startswith('Bearer realm="music"')


def test_a_ticket_past_its_time_or_unknown_or_with_a_header_is_refused(
    app: Flask, clock: Clock, keys: dict[str, str]
) -> None:
    client = app.test_client()
    late = issue(app, keys["both"]).get_json()
    clock.now += TTL
    refused = client.get(late["url"])
    assert refused.status_code == 401
    assert refused.get_json()["code"] == "invalid_ticket"

    unknown = client.get("/events?ticket=" + "A" * 43)
    assert unknown.get_json()["code"] == "invalid_ticket"
    malformed = client.get("/events?ticket=short")
    assert malformed.get_json()["code"] == "invalid_ticket"
    # A ticket with a credential as well is refused, and not spent: it still opens a stream.
    both = issue(app, keys["both"]).get_json()
    doubled = client.get(both["url"], headers=bearer(keys["both"]))
    assert doubled.get_json()["code"] == "invalid_ticket"
    assert client.head(both["url"]).status_code == 200
    # Without a ticket or a credential: the usual 401.
    assert client.get("/events").get_json()["code"] == "credential_missing"


def test_a_ticket_reads_only_what_its_caller_could_narrowed_to_what_it_named(
    app: Flask, keys: dict[str, str]
) -> None:
    client = app.test_client()
    # Asking for an alias outside the caller's scope: no ticket.
    denied = issue(app, keys["studio"], {"user": "edge"}, status=403)
    assert denied.get_json()["code"] == "user_not_allowed"
    # A studio-only caller's ticket cannot read edge, whatever the URL says.
    ticket = issue(app, keys["studio"]).get_json()["ticket"]
    resp = client.get(f"/events?ticket={ticket}&user=edge")
    assert resp.status_code == 403
    assert resp.get_json()["code"] == "user_not_allowed"
    # A ticket narrowed to studio by a caller who may read both cannot read edge either.
    ticket = issue(app, keys["both"], {"user": "studio"}).get_json()["ticket"]
    assert client.get(f"/events?ticket={ticket}&user=edge").status_code == 403
    # Nor another type than the ticket's.
    ticket = issue(app, keys["both"], {"type": "song"}).get_json()["ticket"]
    wrong = client.get(f"/events?ticket={ticket}&type=instrumental")
    assert wrong.status_code == 400
    assert list(wrong.get_json()["errors"]) == ["type"]


def test_a_ticket_request_is_checked_and_needs_a_credential(
    app: Flask, keys: dict[str, str]
) -> None:
    client = app.test_client()
    assert client.post("/events/tickets").get_json()["code"] == "credential_missing"
    for body, fields in (
        ({"user": "studio", "type": "video", "page": 2}, {"type", "page"}),
        ({"user": 3}, {"user"}),
        ([1], {"body"}),
    ):
        doc = issue(app, keys["both"], body, status=400).get_json()
        assert doc["code"] == "invalid_query"
        assert set(doc["errors"]) == fields
    # The scope before the alias's existence, as on every route: no list of aliases leaks.
    unknown = issue(app, keys["both"], {"user": "nobody"}, status=403)
    assert unknown.get_json()["code"] == "user_not_allowed"
    # No body at all is every alias the caller may read, both types.
    resp = client.post("/events/tickets", headers=bearer(keys["both"]))
    assert resp.status_code == 201
    assert "&" not in resp.get_json()["url"]
    # The other methods are Flask's: 405 with what is allowed.
    wrong = client.get("/events/tickets", headers=bearer(keys["both"]))
    assert wrong.status_code == 405
    assert "POST" in wrong.headers["Allow"]


def test_no_log_line_shows_a_ticket(app: Flask, keys: dict[str, str]) -> None:
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonLines())
    handler.addFilter(RedactSecrets([]))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        client = app.test_client()
        doc = issue(app, keys["both"]).get_json()
        assert client.head(doc["url"]).status_code == 200
        assert client.get(doc["url"]).get_json()["code"] == "invalid_ticket"
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    logged = lines.getvalue()
    assert '"path": "/events"' in logged or '"path":"/events"' in logged  # the access lines
    assert doc["ticket"] not in logged
