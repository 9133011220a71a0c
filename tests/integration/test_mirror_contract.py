"""/tracks, /changes and /library from the mirror, as the contract describes them.

Every request goes through CheckedClient, so each answer (pages, 304s, HEADs and every problem)
is validated against openapi.yaml. The mirror is SQLite in the test's directory, filled by the
syncer stepping against the live sandbox (no background thread).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from music_facade import create_app
from music_facade.auth import mint_key
from music_facade.config import ClientSettings, MirrorSettings, Secret
from music_facade.mirror import Entry, Store
from music_facade.sandbox import SandboxServer
from tests.support.helpers import CheckedClient, sandbox_settings

# Two accounts with tracks, one without: enough for lists of aliases and empty answers.
USERS = {"studio": "1001", "edge": "1002", "empty": "1003"}
MirrorApp = Callable[..., Flask]


@pytest.fixture
def mirror_app(sandbox: SandboxServer, tmp_path: Path) -> Iterator[MirrorApp]:
    """Build apps with [mirror] on SQLite in tmp_path; keyword arguments change MirrorSettings
    (clients=... goes to the settings)."""
    apps: list[Flask] = []

    def factory(clients: tuple[ClientSettings, ...] = (), **mirror: Any) -> Flask:
        database = Secret(f"sqlite:///{tmp_path / f'mirror-{len(apps)}.db'}")
        settings = sandbox_settings(
            sandbox,
            users=USERS,
            clients=clients,
            mirror=MirrorSettings(database=database, max_calls_per_minute=1000, **mirror),
        )
        app = create_app(settings, sync=False)
        app.test_client_class = CheckedClient
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["music"].client.close()
        app.extensions["mirror"].client.close()
        app.extensions["mirror"].store.close()


def store_of(app: Flask) -> Store:
    store: Store = app.extensions["mirror"].store
    return store


def sync(app: Flask) -> None:
    """Step the syncer until every alias's both types are read to the end once."""
    mirror = app.extensions["mirror"]
    for _ in range(200):
        mirror.syncer.step()
        states = [mirror.store.state(a, t) for a in USERS for t in ("song", "instrumental")]
        if all(state.backfilled for state in states):
            return
    raise AssertionError("the backfill did not finish")


def get_json(client: FlaskClient, url: str, status: int = 200, **kwargs: Any) -> Any:
    resp = client.get(url, **kwargs)
    assert resp.status_code == status, (url, resp.status_code, resp.data[:300])
    return resp.get_json()


def walk(client: FlaskClient, query: str) -> tuple[list[dict[str, Any]], int]:
    """Every item of a /tracks query, page by page; and the total the first page gave."""
    page = get_json(client, f"/tracks?{query}")
    total, items = page["total"], list(page["items"])
    while page["has_more"]:
        page = get_json(client, f"/tracks?{query}&cursor={page['next_cursor']}")
        assert page["total"] == total
        items += page["items"]
    return items, total


def test_library_streams_from_the_mirror_and_says_when_it_is_not_whole(
    mirror_app: MirrorApp,
) -> None:
    app = mirror_app()
    client = app.test_client()
    before = client.get("/library?user=studio")
    assert before.status_code == 200
    lines = before.get_data(as_text=True).splitlines()
    summary = json.loads(lines[-1])["summary"]
    assert summary["complete"] is False
    assert summary["problem"]["code"] == "mirror_syncing"
    sync(app)
    after = client.get("/library?user=studio&type=instrumental")
    lines = after.get_data(as_text=True).splitlines()
    assert json.loads(lines[-1]) == {"summary": {"count": 12, "complete": True}}
    ready = get_json(client, "/readyz")
    assert ready["checks"]["mirror"] == "ok"


def test_tracks_pages_filters_and_sorts_as_documented(mirror_app: MirrorApp) -> None:
    app = mirror_app()
    client = app.test_client()
    sync(app)
    first = get_json(client, "/tracks")
    assert first["synced_at"] is not None
    assert len(first["items"]) == 20  # the default limit
    everything, total = walk(client, "limit=7")
    assert total == first["total"] == len(everything)
    keys = [(t["user"], t["type"], t["id"]) for t in everything]
    assert len(set(keys)) == len(keys)
    assert {t["user"] for t in everything} == {"studio", "edge"}

    songs, count = walk(client, "user=studio&type=song&limit=5")
    assert count == len(songs) == 23
    created = [t["created_at"] for t in songs if t["created_at"] is not None]
    assert created == sorted(created, reverse=True)  # -created_at by default

    done, _ = walk(client, "user=studio,edge&status=completed,failed&sort=-bpm&limit=9")
    assert {t["status"] for t in done} <= {"completed", "failed"}
    bpms = [t["bpm"] for t in done]
    known = [b for b in bpms if b is not None]
    assert known == sorted(known, reverse=True)
    assert bpms == known + [None] * (len(bpms) - len(known))  # nulls last

    sample = next(t for t in songs if t["style"] and t["title"] and t["bpm"] is not None)
    word = sample["title"].split()[0][:3]
    found, _ = walk(client, f"q={word.upper()}&user=studio")
    assert sample["id"] in {t["id"] for t in found}
    styled, _ = walk(client, f"style={sample['style'].lower()}&type=song")
    assert styled
    assert all(t["style"].casefold() == sample["style"].casefold() for t in styled)
    bpm = sample["bpm"]
    ranged, _ = walk(client, f"bpm_min={bpm}&bpm_max={bpm}&user=studio")
    assert sample["id"] in {t["id"] for t in ranged}
    assert all(t["bpm"] == bpm for t in ranged)
    at = sample["created_at"]
    window, _ = walk(client, f"user=studio&type=song&created_after={at}&created_before={at}")
    assert window == []  # created_before is exclusive, created_after inclusive
    since, _ = walk(client, f"user=studio&type=song&created_after={at}&sort=created_at")
    assert since[0]["created_at"] == at

    empty = get_json(client, "/tracks?user=empty")
    assert empty == {
        "items": [], "next_cursor": None, "has_more": False, "total": 0,
        "synced_at": empty["synced_at"],
    }  # fmt: skip


def test_tracks_revalidate_with_the_etag(mirror_app: MirrorApp) -> None:
    app = mirror_app()
    client = app.test_client()
    sync(app)
    resp = client.get("/tracks?user=studio&limit=3")
    assert resp.headers["Cache-Control"] == "private, no-cache"
    etag = resp.headers["ETag"]
    again = client.get("/tracks?user=studio&limit=3", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    head = client.head("/tracks?user=studio&limit=3")
    assert (head.status_code, head.headers["ETag"]) == (200, etag)
    other = client.get("/tracks?user=studio&limit=4", headers={"If-None-Match": etag})
    assert other.status_code == 200


def test_a_later_page_counts_the_mirror_it_reads(mirror_app: MirrorApp) -> None:
    # A walk's pages share their total (counted once per filter and mirror version); a write
    # shows in the total of the next page read after it, not the one counted before it.
    app = mirror_app()
    client = app.test_client()
    sync(app)
    first = get_json(client, "/tracks?user=studio&type=song&limit=2")
    url = f"/tracks?user=studio&type=song&limit=2&cursor={first['next_cursor']}"
    assert get_json(client, url)["total"] == first["total"]
    track = {**first["items"][0], "id": "mirror-only", "title": "Written Here"}
    for key in ("user", "type"):
        del track[key]
    store_of(app).write("studio", "song", [Entry("mirror-only", "job-x", track, None)])
    deadline = time.monotonic() + 5  # the version is read again within VERSION_SECONDS
    while (later := get_json(client, url))["total"] == first["total"]:
        assert time.monotonic() < deadline, "the write never showed in the total"
        time.sleep(0.05)
    assert later["total"] == first["total"] + 1


def test_tracks_refuse_bad_queries_listing_every_parameter(mirror_app: MirrorApp) -> None:
    app = mirror_app()
    client = app.test_client()
    sync(app)
    bad = "status=done&sort=bpm_desc&limit=0&bpm_min=9&bpm_max=3&created_after=yesterday&page=2"
    doc = get_json(client, f"/tracks?{bad}", 400)
    assert doc["code"] == "invalid_query"
    assert set(doc["errors"]) == {"status", "sort", "limit", "bpm_max", "created_after", "page"}
    doc = get_json(client, "/tracks?type=song&type=song&q=", 400)
    assert set(doc["errors"]) == {"type", "q"}
    page = get_json(client, "/tracks?sort=title&limit=2")
    doc = get_json(client, f"/tracks?sort=-title&limit=2&cursor={page['next_cursor']}", 400)
    assert list(doc["errors"]) == ["cursor"]
    doc = get_json(client, "/tracks?cursor=not-a-cursor", 400)
    assert list(doc["errors"]) == ["cursor"]
    assert get_json(client, "/tracks?user=studio,nobody", 400)["code"] == "unknown_user"


def test_tracks_and_changes_keep_to_the_callers_scope(mirror_app: MirrorApp) -> None:
    key, digest = mint_key()
    only_studio = ClientSettings(name="app", key_sha256=(digest,), users=frozenset({"studio"}))
    app = mirror_app(clients=(only_studio,))
    client = app.test_client()
    sync(app)
    assert get_json(client, "/tracks", 401)["code"] == "credential_missing"
    bearer = {"Authorization": f"Bearer {key}"}
    mine, _ = walk_with(client, "/tracks?limit=50", bearer)
    assert {t["user"] for t in mine} == {"studio"}
    for url in ("/tracks?user=studio,edge", "/changes?user=edge"):
        assert get_json(client, url, 403, headers=bearer)["code"] == "user_not_allowed"
    changes = get_json(client, "/changes?limit=1000", headers=bearer)["changes"]
    assert {c["user"] for c in changes} == {"studio"}


def walk_with(
    client: FlaskClient, url: str, headers: dict[str, str]
) -> tuple[list[dict[str, Any]], int]:
    page = get_json(client, url, headers=headers)
    items = list(page["items"])
    while page["has_more"]:
        page = get_json(client, f"{url}&cursor={page['next_cursor']}", headers=headers)
        items += page["items"]
    return items, len(items)


def test_changes_replay_to_the_mirror_and_follow_on(mirror_app: MirrorApp) -> None:
    app = mirror_app()
    client = app.test_client()
    sync(app)
    copy: dict[tuple[str, str, str], dict[str, Any]] = {}
    since = ""
    pages = 0
    while True:
        answer = get_json(client, f"/changes?limit=10{since}")
        pages += 1
        for change in answer["changes"]:
            key = (change["user"], change["type"], change["id"])
            if change["op"] == "delete":
                copy.pop(key, None)
            else:
                copy[key] = change["track"]
        since = f"&since={answer['next']}"
        if not answer["has_more"]:
            break
    assert pages > 1
    tracks, _ = walk(client, "limit=100")
    assert copy == {
        (t["user"], t["type"], t["id"]): {k: v for k, v in t.items() if k not in ("user", "type")}
        for t in tracks
    }
    quiet = client.get(f"/changes?{since[1:]}")
    assert quiet.get_json() == {"changes": [], "next": answer["next"], "has_more": False}
    assert (
        client.get(
            f"/changes?{since[1:]}", headers={"If-None-Match": quiet.headers["ETag"]}
        ).status_code
        == 304
    )
    doc = get_json(client, "/changes?since=-1&limit=1001&limit=2&page=1", 400)
    assert set(doc["errors"]) == {"since", "limit", "page"}


def test_a_token_older_than_the_retained_log_is_410(mirror_app: MirrorApp) -> None:
    app = mirror_app(changes_retention=0.01)
    client = app.test_client()
    sync(app)
    store = store_of(app)
    first = get_json(client, "/changes?limit=1")["changes"][0]
    # The sync writes that track again, changed: its first change is superseded.
    job_id = store.job_id(first["user"], first["id"])
    assert job_id is not None
    track = {**first["track"], "title": "Renamed"}
    written = store.write(first["user"], first["type"], [Entry(first["id"], job_id, track, None)])
    assert [c.op for c in written] == ["upsert"]
    time.sleep(0.05)
    assert store.prune() >= 1
    expired = get_json(client, "/changes?since=0", 410)
    assert expired["code"] == "changes_expired"
    assert client.head("/changes?since=0").status_code == 410
    # From the start of what is left, the renamed track comes once, as it is now.
    changes: list[dict[str, Any]] = []
    answer = {"next": None, "has_more": True}
    while answer["has_more"]:
        since = "" if answer["next"] is None else f"&since={answer['next']}"
        answer = get_json(client, f"/changes?limit=1000{since}")
        changes += answer["changes"]
    mine = [c for c in changes if (c["user"], c["type"], c["id"]) ==
            (first["user"], first["type"], first["id"])]  # fmt: skip
    assert [c["track"]["title"] for c in mine] == ["Renamed"]


def test_the_served_contract_lists_the_mirror_only_when_it_is_on(
    mirror_app: MirrorApp, sandbox: SandboxServer
) -> None:
    served = get_json(mirror_app().test_client(), "/openapi.json")
    assert {"/tracks", "/changes", "/events"} <= set(served["paths"])
    assert "example" not in served["components"]["parameters"]["MirrorUser"]
    without = create_app(sandbox_settings(sandbox, users=USERS))
    without.test_client_class = CheckedClient
    try:
        client = without.test_client()
        doc = get_json(client, "/openapi.json")
        assert not {"/tracks", "/changes", "/events"} & set(doc["paths"])
        assert "TracksPage" not in doc["components"]["schemas"]
        assert "mirror" not in {tag["name"] for tag in doc["tags"]}
        assert get_json(client, "/tracks", 404)["code"] == "not_found"
        assert get_json(client, "/changes", 404)["code"] == "not_found"
        assert get_json(client, "/events", 404)["code"] == "not_found"
    finally:
        without.extensions["music"].client.close()
