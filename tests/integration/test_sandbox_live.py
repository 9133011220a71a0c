"""The sandbox as a live library, over real HTTP: tracks added, generating, edited, deleted,
large synthetic accounts, and reset back to the deterministic accounts."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from music_facade.sandbox import SandboxServer, SandboxState
from music_facade.sandbox.cdn import with_local_cover
from music_facade.sandbox.data import ACCOUNTS, RECORD_FIELDS

from ..support.clock import Clock
from ..support.waiting import wait_until

NOW = 1_750_000_000.0


@pytest.fixture
def clock() -> Clock:
    """A clock the test moves; starts at NOW."""
    moved = Clock()
    moved.now = NOW
    return moved


@pytest.fixture
def live(clock: Clock) -> Iterator[SandboxServer]:
    """A sandbox of its own whose generating tracks follow `clock`."""
    with SandboxServer(SandboxState(clock=clock)) as server:
        yield server


def control(server: SandboxServer, method: str, path: str, body: Any = None) -> requests.Response:
    """A /_sandbox/accounts call with a JSON body."""
    url = f"{server.origin}/_sandbox/accounts/{path}"
    return requests.request(method, url, json=body, timeout=10)


def add(server: SandboxServer, user_id: str = "1001", **body: Any) -> dict[str, Any]:
    """Add a track (a song called New unless body says otherwise); the 201 answer's body."""
    resp = control(server, "POST", f"{user_id}/tracks", {"type": "song", "title": "New", **body})
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


def page(
    server: SandboxServer, user_id: str = "1001", music_type: str = "song", cursor: str = ""
) -> dict[str, Any]:
    """One page of the list endpoint."""
    params = {"user_id": user_id, "type": music_type, "cursor": cursor}
    resp = requests.get(
        server.base_url + "/music/", params=params, headers=_auth(server), timeout=10
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def one(server: SandboxServer, job_id: str, *, kind: str = "") -> requests.Response:
    """The one-record endpoint (kind "download/": the download endpoint) for a job_id."""
    url = f"{server.base_url}/music/{kind}{job_id}"
    return requests.get(url, headers=_auth(server), timeout=10)


def titles(server: SandboxServer, user_id: str = "1001", music_type: str = "song") -> list[str]:
    """Every title of one account's list, walking its cursors."""
    found: list[str] = []
    cursor = ""
    while True:
        body = page(server, user_id, music_type, cursor)
        found += [record["titleEn"] for record in body["records"]]
        if not body["hasNext"]:
            return found
        cursor = body["cursor"]


def _auth(server: SandboxServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def test_added_track_generates_then_completes(live: SandboxServer, clock: Clock) -> None:
    created = add(live, seconds=2)
    item, job_id = created["id"], created["job_id"]
    assert len(item) == 15
    assert job_id == f"user:12345-tempolor:1001-job:{item}"

    first = page(live)["records"][0]
    assert first["itemId"] == item
    assert first["titleEn"] == "New"
    assert (first["status"], first["status_name"], first["status_final"]) == (
        0,
        "GENERATING",
        False,
    )
    assert first["progress"] == 0
    assert first["createTime"] == first["updateTime"] == NOW * 1000
    assert first["mp3OssId"] == ""
    assert one(live, job_id, kind="download/").status_code == 400

    seen = [first]
    for now, progress in ((0.5, 25), (1.0, 50), (1.9, 95)):
        clock.now = NOW + now
        record = page(live)["records"][0]
        assert one(live, job_id).json() == record
        assert record["status"] < 10
        assert record["progress"] == progress
        assert record["updateTime"] == NOW * 1000 + now * 1000
        assert record["updateTime"] > seen[-1]["updateTime"]
        seen.append(record)

    clock.now = NOW + 2
    done = one(live, job_id).json()
    assert (done["status"], done["status_name"], done["status_final"]) == (30, "COMPLETED", True)
    assert done["progress"] == 100
    assert done["updateTime"] == NOW * 1000 + 2000
    assert done["mp3OssId"].endswith(f"{item}.mp3")
    clock.now = NOW + 600
    assert page(live)["records"][0] == done
    assert one(live, job_id, kind="download/").status_code == 200


def test_failing_track_fails(live: SandboxServer, clock: Clock) -> None:
    job_id = add(live, type="instrumental", title="Doomed", seconds=0.5, outcome="failed")["job_id"]
    assert one(live, job_id).json()["status_name"] == "GENERATING"
    assert page(live, music_type="instrumental")["records"][0]["titleEn"] == "Doomed"
    clock.now = NOW + 0.5
    failed = one(live, job_id).json()
    assert (failed["status"], failed["status_name"], failed["status_final"]) == (10, "FAILED", True)
    assert failed["updateTime"] == NOW * 1000 + 500
    assert page(live, music_type="instrumental")["records"][0] == failed


def test_generates_on_the_real_clock(sandbox: SandboxServer) -> None:
    job_id = add(sandbox, seconds=1)["job_id"]
    started = one(sandbox, job_id).json()
    assert 0 <= started["progress"] < 100
    assert started["status_name"] == "GENERATING"
    wait_until(lambda: one(sandbox, job_id).json()["progress"] > started["progress"], timeout=5)
    wait_until(lambda: one(sandbox, job_id).json()["status"] == 30, timeout=5)


def test_added_record_has_every_field_and_the_given_ones(live: SandboxServer) -> None:
    fields: dict[str, Any] = {
        "style": "Jazz",
        "mood": "Calm",
        "key": "C:major",
        "bpm": 92.5,
        "duration": 201,
    }
    text = {"prompt": "brushed drums at dawn", "lyrics": "[Verse]\nla la"}
    job_id = add(live, title="Dawn", seconds=0, **fields, **text)["job_id"]
    record = one(live, job_id).json()
    assert set(record) == set(RECORD_FIELDS)
    for name, kind in RECORD_FIELDS.items():
        if isinstance(kind, dict):
            assert set(record[name]) == set(kind), name
    material, extra = record["musicMaterial"], record["ltmMaterialExtendDto"]
    assert (material["style"], material["mood"], material["key"]) == ("Jazz", "Calm", "C:major")
    assert (material["bpm"], material["dur"]) == (92.5, 201)
    assert (extra["prompt"], extra["lyricsPrompt"]) == (text["prompt"], text["lyrics"])
    assert record["status_name"] == "COMPLETED"


def test_edit_changes_fields_and_update_time(live: SandboxServer, clock: Clock) -> None:
    original = ACCOUNTS["1001"].songs[3]
    clock.now = NOW + 10
    resp = control(
        live, "PATCH", f"1001/tracks/{original['itemId']}", {"title": "Renamed", "bpm": 99}
    )
    assert resp.status_code == 200
    record = resp.json()
    assert (record["titleEn"], record["musicMaterial"]["bpm"]) == ("Renamed", 99)
    assert record["updateTime"] == (NOW + 10) * 1000
    assert record["musicMaterial"]["style"] == original["musicMaterial"]["style"]
    assert page(live)["records"][3] == record
    assert one(live, original["job_id"]).json() == record
    # The deterministic account itself is untouched.
    assert ACCOUNTS["1001"].songs[3]["titleEn"] != "Renamed"


def test_edit_a_generating_track(live: SandboxServer, clock: Clock) -> None:
    created = add(live, seconds=10)
    clock.now = NOW + 1
    resp = control(live, "PATCH", f"1001/tracks/{created['id']}", {"title": "Retitled"})
    assert resp.json()["titleEn"] == "Retitled"
    assert resp.json()["updateTime"] == (NOW + 1) * 1000
    clock.now = NOW + 10
    done = one(live, created["job_id"]).json()
    assert (done["titleEn"], done["status"]) == ("Retitled", 30)
    assert done["updateTime"] == (NOW + 10) * 1000


def test_delete_removes_the_track_everywhere(live: SandboxServer) -> None:
    gone = ACCOUNTS["1001"].songs[12]
    added = add(live)
    for item in (gone["itemId"], added["id"]):
        resp = control(live, "DELETE", f"1001/tracks/{item}")
        assert resp.status_code == 204
        assert resp.content == b""
    expected = [r["titleEn"] for r in ACCOUNTS["1001"].songs if r is not gone]
    assert titles(live) == expected
    for job_id in (gone["job_id"], added["job_id"]):
        resp = one(live, job_id)
        assert resp.status_code == 404
        assert resp.json() == {"error": f"No record found for {job_id}", "code": 404}
        assert one(live, job_id, kind="download/").status_code == 404
    assert control(live, "DELETE", f"1001/tracks/{added['id']}").status_code == 404


def test_added_tracks_stale_offset_cursors_as_upstream(live: SandboxServer) -> None:
    first = page(live)
    add(live)
    second = page(live, cursor=first["cursor"])
    # Offsets shift when tracks arrive at the top: the last record of page 1 is served again.
    assert second["records"][0] == first["records"][-1]


def test_generate_a_large_account_fast(live: SandboxServer) -> None:
    started = time.monotonic()
    resp = control(live, "POST", "bench/generate", {"songs": 50_000, "instrumentals": 50_000})
    assert time.monotonic() - started < 5
    assert resp.status_code == 200
    assert resp.json() == {"user_id": "bench", "songs": 50_000, "instrumentals": 50_000}
    for music_type in ("song", "instrumental"):
        first = page(live, "bench", music_type)
        second = page(live, "bench", music_type, first["cursor"])
        records = first["records"] + second["records"]
        assert len(first["records"]) == len(second["records"]) == 10
        assert second["hasNext"]
        assert len({r["itemId"] for r in records}) == 20
        times = [r["createTime"] for r in records]
        assert times == sorted(times, reverse=True)
        assert all(set(r) == set(RECORD_FIELDS) and r["userId"] == "bench" for r in records)
        assert all(len(r["titleEn"].split()) == 2 for r in records)
        found = one(live, records[13]["job_id"])
        assert found.status_code == 200
        assert found.json() == records[13]


def test_generated_account_pages_to_its_end(live: SandboxServer) -> None:
    assert control(live, "POST", "1001/generate", {"songs": 25}).status_code == 200
    pages = []
    cursor = ""
    while True:
        body = page(live, "1001", "song", cursor)
        pages.append(len(body["records"]))
        if not body["hasNext"]:
            break
        cursor = body["cursor"]
    assert pages == [10, 10, 5]
    assert body["cursor"] == ""
    assert page(live, "1001", "instrumental") == {"records": [], "hasNext": False, "cursor": ""}
    # Generated records are edited and deleted like any other.
    item = page(live, "1001")["records"][4]["itemId"]
    assert control(live, "PATCH", f"1001/tracks/{item}", {"title": "Edited"}).status_code == 200
    assert titles(live)[4] == "Edited"
    assert control(live, "DELETE", f"1001/tracks/{item}").status_code == 204
    assert len(titles(live)) == 24
    assert control(live, "PATCH", f"1001/tracks/{item}", {"title": "Again"}).status_code == 404


def test_reset_restores_the_original_accounts(live: SandboxServer) -> None:
    add(live)
    control(live, "PATCH", f"1001/tracks/{ACCOUNTS['1001'].songs[0]['itemId']}", {"title": "X"})
    control(live, "DELETE", f"1001/tracks/{ACCOUNTS['1001'].songs[1]['itemId']}")
    control(live, "POST", "1003/generate", {"instrumentals": 3})
    control(live, "POST", "fresh/generate", {"songs": 3})
    assert requests.post(live.origin + "/_sandbox/reset", timeout=5).status_code == 200
    for music_type in ("song", "instrumental"):
        pages = [page(live, "1001", music_type)]
        while pages[-1]["hasNext"]:
            pages.append(page(live, "1001", music_type, pages[-1]["cursor"]))
        records = [r for p in pages for r in p["records"]]
        built = ACCOUNTS["1001"].records(music_type)
        assert records == [with_local_cover(record, live.origin) for record in built]
    assert page(live, "1003", "instrumental")["records"] == []
    resp = requests.get(
        live.base_url + "/music/", params={"user_id": "fresh"}, headers=_auth(live), timeout=5
    )
    assert resp.status_code == 404


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("not json", "JSON object"),
        (["a list"], "JSON object"),
        ({"title": "x"}, "type"),
        ({"type": "podcast", "title": "x"}, "type"),
        ({"type": "song"}, "title"),
        ({"type": "song", "title": 7}, "title"),
        ({"type": "song", "title": "x", "seconds": -1}, "seconds"),
        ({"type": "song", "title": "x", "seconds": "soon"}, "seconds"),
        ({"type": "song", "title": "x", "seconds": True}, "seconds"),
        ({"type": "song", "title": "x", "outcome": "maybe"}, "outcome"),
        ({"type": "song", "title": "x", "bpm": "fast"}, "bpm"),
        ({"type": "song", "title": "x", "style": 3}, "style"),
        ({"type": "song", "title": "x", "status": 30}, "status"),
    ],
)
def test_bad_add_bodies(live: SandboxServer, body: Any, named: str) -> None:
    url = f"{live.origin}/_sandbox/accounts/1001/tracks"
    if isinstance(body, str):
        resp = requests.post(url, data=body, timeout=5)
    else:
        resp = requests.post(url, json=body, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["code"] == 400
    assert named in resp.json()["error"]


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("tracks/{item}", {}, "at least one of"),
        ("tracks/{item}", {"duration": -3}, "duration"),
        ("tracks/{item}", {"lyrics": None}, "lyrics"),
        ("tracks/{item}", {"status": 10}, "status"),
        ("generate", {}, "songs"),
        ("generate", {"songs": -1}, "songs"),
        ("generate", {"songs": 1.5}, "songs"),
        ("generate", {"instrumentals": True}, "instrumentals"),
        ("generate", {"songs": 2_000_000}, "at most"),
        ("generate", {"albums": 3}, "albums"),
    ],
)
def test_bad_edit_and_generate_bodies(
    live: SandboxServer, path: str, body: Any, named: str
) -> None:
    item = ACCOUNTS["1001"].songs[0]["itemId"]
    method = "POST" if path == "generate" else "PATCH"
    resp = control(live, method, f"1001/{path.format(item=item)}", body)
    assert resp.status_code == 400
    assert named in resp.json()["error"]


def test_unknown_account_or_track_is_404(live: SandboxServer) -> None:
    title = {"title": "x"}
    for method, path, body in [
        ("POST", "nobody/tracks", {"type": "song", "title": "x"}),
        ("PATCH", "nobody/tracks/abc", title),
        ("DELETE", "nobody/tracks/abc", None),
        ("PATCH", "1001/tracks/abc", title),
        ("DELETE", "1001/tracks/abc", None),
    ]:
        resp = control(live, method, path, body)
        assert resp.status_code == 404, (method, path)
        assert resp.json()["code"] == 404


def test_command_line_generates_an_account() -> None:
    command = [sys.executable, "-m", "music_facade.sandbox", "--port", "0", "--generate", "big=31"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            base_url = proc.stdout.readline().split(": ", 1)[1].strip()
            counts = {}
            for music_type in ("song", "instrumental"):
                params = {"user_id": "big", "type": music_type}
                counts[music_type] = 0
                while True:
                    resp = requests.get(
                        base_url + "/music/",
                        params=params,
                        headers={"Authorization": "Bearer sandbox-token"},
                        timeout=5,
                    )
                    counts[music_type] += len(resp.json()["records"])
                    if not resp.json()["hasNext"]:
                        break
                    params["cursor"] = resp.json()["cursor"]
            # N/2 each; the odd one is a song.
            assert counts == {"song": 16, "instrumental": 15}
        finally:
            proc.terminate()
            proc.wait(timeout=10)
