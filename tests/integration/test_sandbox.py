"""The sandbox upstream, over real HTTP: contract, accounts, faults, call log and control API."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from music_facade.sandbox import SANDBOX_TOKEN, SandboxServer, SandboxState
from music_facade.sandbox.cdn import with_local_cover
from music_facade.sandbox.data import ACCOUNTS, RECORD_FIELDS

AUTH = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
EXAMPLE_KEYS = set(RECORD_FIELDS)
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "boolean": (bool,),
}


def get(
    sandbox: SandboxServer,
    params: dict[str, str] | None = None,
    *,
    headers: dict[str, str] | None = None,
    fault: dict[str, Any] | None = None,
    path: str = "/music/",
    timeout: float | tuple[float, float] = 5,
    stream: bool = False,
) -> requests.Response:
    """GET the music endpoint, authorized unless headers say otherwise."""
    sent = dict(AUTH if headers is None else headers)
    if fault is not None:
        sent["X-Sandbox-Fault"] = json.dumps(fault)
    url = sandbox.base_url + path
    return requests.get(url, params=params, headers=sent, timeout=timeout, stream=stream)


def walk(sandbox: SandboxServer, user_id: str, music_type: str) -> list[dict[str, Any]]:
    """Every page of one account and type, following cursors."""
    pages: list[dict[str, Any]] = []
    params = {"user_id": user_id, "type": music_type}
    while True:
        resp = get(sandbox, params)
        assert resp.status_code == 200
        page = resp.json()
        pages.append(page)
        if not page["hasNext"]:
            return pages
        params["cursor"] = page["cursor"]


def is_json_type(value: Any, kind: Any) -> bool:
    """Whether a value has the model's JSON type (bool is not a number)."""
    if isinstance(kind, dict):
        return isinstance(value, dict)
    if kind == "number" and isinstance(value, bool):
        return False
    return isinstance(value, JSON_TYPES[kind])


# --- the contract --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": SANDBOX_TOKEN},
        {"Authorization": f"bearer {SANDBOX_TOKEN}"},
        {"Authorization": f"Bearer {SANDBOX_TOKEN} "},
    ],
)
def test_unauthorized(sandbox: SandboxServer, headers: dict[str, str]) -> None:
    resp = get(sandbox, {"user_id": "1001"}, headers=headers)
    assert resp.status_code == 401
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.text == '{"error": "Unauthorized", "code": 401}'


def test_auth_comes_before_validation(sandbox: SandboxServer) -> None:
    resp = get(sandbox, {"type": "nope"}, headers={})
    assert resp.status_code == 401


@pytest.mark.parametrize("music_type", ["songs", "SONG", "", "all"])
def test_bad_type(sandbox: SandboxServer, music_type: str) -> None:
    resp = get(sandbox, {"user_id": "1001", "type": music_type})
    assert resp.status_code == 400
    assert resp.json() == {
        "error": "Invalid type parameter. Must be 'song' or 'instrumental'",
        "code": 400,
    }


def test_type_is_checked_before_user_id(sandbox: SandboxServer) -> None:
    assert get(sandbox, {"type": "nope"}).status_code == 400
    assert "type" in get(sandbox, {"type": "nope"}).json()["error"]


@pytest.mark.parametrize("params", [{}, {"user_id": ""}, {"type": "song"}])
def test_missing_user_id(sandbox: SandboxServer, params: dict[str, str]) -> None:
    resp = get(sandbox, params)
    assert resp.status_code == 400
    assert resp.json() == {
        "error": "user_id is required when multiple accounts are configured",
        "code": 400,
    }


def test_unknown_user_id(sandbox: SandboxServer) -> None:
    resp = get(sandbox, {"user_id": "9999"})
    assert resp.status_code == 404
    assert resp.json() == {"error": "TemPolor account 9999 is not configured", "code": 404}


def test_songs_paginate_across_three_pages(sandbox: SandboxServer) -> None:
    pages = walk(sandbox, "1001", "song")
    assert [len(p["records"]) for p in pages] == [10, 10, 3]
    assert [p["hasNext"] for p in pages] == [True, True, False]
    assert all(p["cursor"] for p in pages[:-1])
    assert pages[-1]["cursor"] == ""
    assert all(set(p) == {"records", "hasNext", "cursor"} for p in pages)
    records = [r for p in pages for r in p["records"]]
    ids = [r["itemId"] for r in records]
    assert len(set(ids)) == 23
    times = [r["createTime"] for r in records]
    assert times == sorted(times, reverse=True)


def test_type_defaults_to_song_and_path_needs_no_slash(sandbox: SandboxServer) -> None:
    default = get(sandbox, {"user_id": "1001"}, path="/music")
    explicit = get(sandbox, {"user_id": "1001", "type": "song"})
    assert default.status_code == 200
    assert default.json() == explicit.json()


def test_instrumentals(sandbox: SandboxServer) -> None:
    pages = walk(sandbox, "1001", "instrumental")
    assert [len(p["records"]) for p in pages] == [10, 2]
    records = [r for p in pages for r in p["records"]]
    assert all(r["ltmMaterialExtendDto"]["lyricsPrompt"] == "" for r in records)
    assert all(r["childType"] != "lyric_to_material" for r in records)
    songs = [r for p in walk(sandbox, "1001", "song") for r in p["records"]]
    ids = {r["itemId"] for r in records} | {r["itemId"] for r in songs}
    assert len(ids) == 35


def test_complete_account_records(sandbox: SandboxServer) -> None:
    records = [
        r for t in ("song", "instrumental") for p in walk(sandbox, "1001", t) for r in p["records"]
    ]
    bands = set()
    for record in records:
        assert set(record) == EXAMPLE_KEYS
        for name, kind in RECORD_FIELDS.items():
            assert is_json_type(record[name], kind), name
            if isinstance(kind, dict):
                assert set(record[name]) == set(kind)
        assert record["userId"] == "1001"
        assert record["job_id"] == f"user:12345-tempolor:1001-job:{record['itemId']}"
        assert record["updateTime"] >= record["createTime"] > 1_600_000_000_000
        status, name = record["status"], record["status_name"]
        if status < 10:
            assert (name, record["status_final"]) == ("GENERATING", False)
            assert record["progress"] < 100
        elif status < 30:
            assert (name, record["status_final"]) == ("FAILED", True)
        else:
            assert (name, record["status_final"]) == ("COMPLETED", True)
            assert record["progress"] == 100
            assert record["mp3OssId"].endswith(".mp3")
        bands.add(name)
    assert bands == {"GENERATING", "FAILED", "COMPLETED"}
    assert all(r["ltmMaterialExtendDto"]["lyricsPrompt"] for r in records if r["canEditLyrics"])


def test_records_are_the_same_every_time(sandbox: SandboxServer) -> None:
    first = get(sandbox, {"user_id": "1001"}).json()
    assert get(sandbox, {"user_id": "1001"}).json() == first
    # As built, but for the covers: served from the sandbox's own origin.
    songs = ACCOUNTS["1001"].songs[:10]
    assert first["records"] == [with_local_cover(song, sandbox.origin) for song in songs]


def test_invalid_cursor(sandbox: SandboxServer) -> None:
    for cursor in ["garbage!", "bm9wZQ", "MTAwMTpzb25nOjA", "MTAwMTpzb25nOjIz", "MTAwMTpzb25nOng"]:
        # bm9wZQ = "nope"; then 1001:song:0, 1001:song:23 (past the end), 1001:song:x
        resp = get(sandbox, {"user_id": "1001", "cursor": cursor})
        assert resp.status_code == 400, cursor
        assert resp.json() == {"error": "Invalid cursor", "code": 400}


def test_cursor_of_another_user_or_type(sandbox: SandboxServer) -> None:
    cursor = get(sandbox, {"user_id": "1001"}).json()["cursor"]
    assert get(sandbox, {"user_id": "1001", "cursor": cursor}).status_code == 200
    for params in [
        {"user_id": "1001", "type": "instrumental", "cursor": cursor},
        {"user_id": "1002", "cursor": cursor},
        {"user_id": "1003", "cursor": cursor},
    ]:
        resp = get(sandbox, params)
        assert resp.status_code == 400
        assert resp.json() == {"error": "Invalid cursor", "code": 400}


def test_awkward_account(sandbox: SandboxServer) -> None:
    page = get(sandbox, {"user_id": "1002"}).json()
    assert page["hasNext"] is False
    assert page["cursor"] == ""
    records = page["records"]
    assert records[-4:] == ["oops", 42, None, []]
    objects = [r for r in records if isinstance(r, dict)]
    by_id = {r["itemId"]: r for r in objects}
    assert len(by_id) == len(objects) == 9
    assert by_id["odd-only-itemid"] == {"itemId": "odd-only-itemid"}
    empty = by_id[""]
    assert empty["musicMaterial"] == {}
    assert empty["ltmMaterialExtendDto"] == {}
    assert all(v == "" for k, v in empty.items() if not isinstance(v, dict))
    assert set(by_id[None].values()) == {None}
    assert set(by_id[None]) == EXAMPLE_KEYS
    assert "musicMaterial" not in by_id["odd-no-nested"]
    assert "ltmMaterialExtendDto" not in by_id["odd-no-nested"]
    no_prompt = by_id["odd-no-prompt"]["ltmMaterialExtendDto"]
    assert "prompt" not in no_prompt
    assert no_prompt["description"]
    empty_prompt = by_id["odd-empty-prompt"]["ltmMaterialExtendDto"]
    assert empty_prompt["prompt"] == ""
    assert empty_prompt["description"]
    assert by_id["odd-failed"]["status"] == 15
    assert (by_id["odd-generating"]["status"], by_id["odd-generating"]["progress"]) == (5, 40)
    assert by_id["odd-negative-status"]["status"] == -1
    instrumentals = get(sandbox, {"user_id": "1002", "type": "instrumental"}).json()
    assert instrumentals == {"records": [], "hasNext": False, "cursor": ""}


@pytest.mark.parametrize("music_type", ["song", "instrumental"])
def test_empty_account(sandbox: SandboxServer, music_type: str) -> None:
    resp = get(sandbox, {"user_id": "1003", "type": music_type})
    assert resp.status_code == 200
    assert resp.json() == {"records": [], "hasNext": False, "cursor": ""}


@pytest.mark.parametrize("music_type", ["song", "instrumental"])
def test_account_without_records_key(sandbox: SandboxServer, music_type: str) -> None:
    resp = get(sandbox, {"user_id": "1004", "type": music_type})
    assert resp.status_code == 200
    assert resp.json() == {"hasNext": False}


def test_unknown_route_answers_json(sandbox: SandboxServer) -> None:
    resp = requests.get(sandbox.origin + "/v1/tempolor/nothing", timeout=5)
    assert resp.status_code == 404
    assert resp.json() == {"error": "Not Found", "code": 404}


# --- faults --------------------------------------------------------------------------------------


def test_latency(sandbox: SandboxServer) -> None:
    started = time.monotonic()
    resp = get(sandbox, {"user_id": "1001"}, fault={"kind": "latency", "seconds": 0.3})
    assert time.monotonic() - started >= 0.25
    assert resp.status_code == 200
    assert len(resp.json()["records"]) == 10


def test_latency_then_auth(sandbox: SandboxServer) -> None:
    resp = get(sandbox, {"user_id": "1001"}, headers={}, fault={"kind": "latency", "seconds": 0})
    assert resp.status_code == 401


def test_status_default_body_and_headers(sandbox: SandboxServer) -> None:
    fault = {"kind": "status", "status": 429, "headers": {"Retry-After": "7"}}
    resp = get(sandbox, {"user_id": "1001"}, fault=fault)
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "7"
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json() == {"error": "Too Many Requests", "code": 429}


def test_status_comes_before_auth(sandbox: SandboxServer) -> None:
    resp = get(sandbox, {}, headers={}, fault={"kind": "status", "status": 503})
    assert resp.status_code == 503
    assert resp.json() == {"error": "Service Unavailable", "code": 503}


def test_status_596_pending_error(sandbox: SandboxServer) -> None:
    resp = get(sandbox, {"user_id": "1001"}, fault={"kind": "status", "status": 596})
    assert resp.status_code == 596
    assert resp.reason == "PENDING ERROR"
    assert resp.json() == {"error": "pending error", "code": 596}


@pytest.mark.parametrize(
    ("body", "content_type", "text"),
    [
        ({"error": "Subscription required"}, None, '{"error": "Subscription required"}'),
        ([1, 2], None, "[1, 2]"),
        ("<html>Bad gateway</html>", "text/html", "<html>Bad gateway</html>"),
        ("", "text/plain", ""),
    ],
)
def test_status_custom_body(
    sandbox: SandboxServer, body: Any, content_type: str | None, text: str
) -> None:
    fault: dict[str, Any] = {"kind": "status", "status": 402, "body": body}
    if content_type is not None:
        fault["content_type"] = content_type
    resp = get(sandbox, {"user_id": "1001"}, fault=fault)
    assert resp.status_code == 402
    assert resp.headers["Content-Type"] == (content_type or "application/json")
    assert resp.text == text


def test_malformed(sandbox: SandboxServer) -> None:
    resp = get(sandbox, {"user_id": "1001"}, fault={"kind": "malformed"})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.text == '{"records": [{"itemId": "x"'
    with pytest.raises(ValueError, match="Expecting"):
        json.loads(resp.text)


def test_hang_times_out_and_reset_releases_it(sandbox: SandboxServer) -> None:
    fault = {"kind": "hang", "seconds": 30}
    with pytest.raises(requests.exceptions.ReadTimeout):
        get(sandbox, {"user_id": "1001"}, fault=fault, timeout=(2, 0.2))
    sandbox.state.set_fault("1001", fault)
    done: list[requests.Response] = []
    client = threading.Thread(target=lambda: done.append(get(sandbox, {"user_id": "1001"})))
    client.start()
    deadline = time.monotonic() + 5
    while sandbox.state.call_count() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    requests.post(sandbox.origin + "/_sandbox/reset", timeout=5).raise_for_status()
    client.join(5)
    assert time.monotonic() - started < 2
    # Released by the reset, the hung call then answers normally.
    assert done[0].status_code == 200
    assert len(done[0].json()["records"]) == 10


def test_hang_ends_after_its_seconds(sandbox: SandboxServer) -> None:
    resp = get(sandbox, {"user_id": "1003"}, fault={"kind": "hang", "seconds": 0.1})
    assert resp.json() == {"records": [], "hasNext": False, "cursor": ""}


def test_oversized(sandbox: SandboxServer) -> None:
    resp = get(sandbox, {"user_id": "1001"}, fault={"kind": "oversized", "bytes": 6_000_000})
    assert resp.status_code == 200
    assert "Content-Length" not in resp.headers
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert abs(len(resp.content) - 6_000_000) < 1000
    page = resp.json()
    assert page["hasNext"] is False
    assert len(page["records"][0]["titleEn"]) > 5_900_000


def test_drip_sends_headers_then_trickles(sandbox: SandboxServer) -> None:
    fault = {"kind": "drip", "interval": 1, "seconds": 30}
    params = {"user_id": "1001"}
    # The read timeout covers the headers too: they must come at once, the body must not.
    with get(sandbox, params, fault=fault, timeout=(2, 0.3), stream=True) as resp:
        assert resp.status_code == 200
        assert resp.headers["Transfer-Encoding"] == "chunked"
        with pytest.raises(requests.exceptions.ConnectionError, match="Read timed out"):
            resp.content  # noqa: B018 - reading the body is the point


def test_drip_completes_as_the_normal_page(sandbox: SandboxServer) -> None:
    fault = {"kind": "drip", "interval": 0.01, "seconds": 0.2}
    started = time.monotonic()
    resp = get(sandbox, {"user_id": "1001"}, fault=fault)
    assert time.monotonic() - started >= 0.15
    assert resp.json() == get(sandbox, {"user_id": "1001"}).json()


def test_drip_of_a_failing_request_is_an_empty_page(sandbox: SandboxServer) -> None:
    fault = {"kind": "drip", "interval": 0.01, "seconds": 0}
    resp = get(sandbox, {"user_id": "1001"}, headers={}, fault=fault)
    assert resp.status_code == 200
    assert resp.json() == {"records": [], "hasNext": False, "cursor": ""}


def test_drip_released_by_reset_is_truncated(sandbox: SandboxServer) -> None:
    fault = {"kind": "drip", "interval": 0.05, "seconds": 30}
    with get(sandbox, {"user_id": "1001"}, fault=fault, stream=True) as resp:
        assert resp.raw.read(4)
        sandbox.state.reset()
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            resp.content  # noqa: B018 - reading the body is the point


def test_deep(sandbox: SandboxServer) -> None:
    resp = get(sandbox, {"user_id": "1001"}, fault={"kind": "deep", "depth": 100_000})
    assert resp.status_code == 200
    assert resp.text.count("[") == 100_001
    with pytest.raises(RecursionError):
        json.loads(resp.text)
    shallow = get(sandbox, {"user_id": "1001"}, fault={"kind": "deep", "depth": 3}).json()
    assert shallow["records"][0]["titleEn"] == [[[]]]


def test_wrong_types(sandbox: SandboxServer) -> None:
    resp = get(sandbox, {"user_id": "1001"}, fault={"kind": "wrong_types"})
    assert resp.status_code == 200
    page = resp.json()
    assert page["hasNext"] is False
    assert page["cursor"] == ""
    long_strings = 0
    nested_objects = 0
    for record in page["records"]:
        assert set(record) == EXAMPLE_KEYS
        for name, kind in RECORD_FIELDS.items():
            value = record[name]
            if isinstance(kind, dict) and isinstance(value, dict):
                nested_objects += 1
                for sub, sub_kind in kind.items():
                    assert not is_json_type(value[sub], sub_kind), (name, sub)
            else:
                assert not is_json_type(value, kind), name
            long_strings += isinstance(value, str) and len(value) >= 100_000
    assert nested_objects >= 2
    assert long_strings >= 3


# --- choosing faults -----------------------------------------------------------------------------


def test_times_counts_down(sandbox: SandboxServer) -> None:
    sandbox.state.set_fault("1001", {"kind": "status", "status": 503}, times=2)
    statuses = [get(sandbox, {"user_id": "1001"}).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]


def test_fault_applies_to_its_account_only(sandbox: SandboxServer) -> None:
    sandbox.state.set_fault("1001", {"kind": "status", "status": 500})
    assert get(sandbox, {"user_id": "1003"}).status_code == 200
    assert get(sandbox, {"user_id": "1001"}).status_code == 500
    assert get(sandbox, {"user_id": "1001"}).status_code == 500
    sandbox.state.clear_fault("1001")
    assert get(sandbox, {"user_id": "1001"}).status_code == 200


def test_star_applies_to_every_call_and_yields_to_an_own_fault(sandbox: SandboxServer) -> None:
    sandbox.state.set_fault("*", {"kind": "status", "status": 502})
    sandbox.state.set_fault("1003", {"kind": "status", "status": 429})
    assert get(sandbox, {}).status_code == 502
    assert get(sandbox, {"user_id": "1001"}).status_code == 502
    assert get(sandbox, {"user_id": "1003"}).status_code == 429


def test_header_fault_takes_precedence_and_spares_the_account_fault(
    sandbox: SandboxServer,
) -> None:
    sandbox.state.set_fault("1001", {"kind": "status", "status": 503}, times=1)
    resp = get(sandbox, {"user_id": "1001"}, fault={"kind": "status", "status": 418})
    assert resp.status_code == 418
    assert get(sandbox, {"user_id": "1001"}).status_code == 503
    assert get(sandbox, {"user_id": "1001"}).status_code == 200


def test_bad_header_fault(sandbox: SandboxServer) -> None:
    resp = get(sandbox, {"user_id": "1001"}, headers={**AUTH, "X-Sandbox-Fault": "{nope"})
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("X-Sandbox-Fault:")


def test_faults_over_http(sandbox: SandboxServer) -> None:
    url = sandbox.origin + "/_sandbox/faults/1001"
    spec = {"kind": "status", "status": 503, "headers": {"Retry-After": "1"}}
    resp = requests.put(url, json={"fault": spec, "times": 2}, timeout=5)
    assert resp.status_code == 200
    assert resp.json()["times"] == 2
    listed = requests.get(sandbox.origin + "/_sandbox/faults", timeout=5).json()
    assert listed["1001"]["fault"]["status"] == 503
    assert listed["1001"]["times"] == 2
    assert get(sandbox, {"user_id": "1001"}).status_code == 503
    assert requests.get(sandbox.origin + "/_sandbox/faults", timeout=5).json()["1001"]["times"] == 1
    resp = requests.delete(url, timeout=5)
    assert resp.json() == {"user_id": "1001", "cleared": True}
    assert get(sandbox, {"user_id": "1001"}).status_code == 200
    resp = requests.put(sandbox.origin + "/_sandbox/faults/*", json={"fault": spec}, timeout=5)
    assert resp.json()["times"] is None
    assert get(sandbox, {"user_id": "1002"}).status_code == 503


BAD_FAULTS: list[Any] = [
    {"kind": "explode"},
    {"seconds": 1},
    "latency",
    {"kind": "latency", "seconds": -1},
    {"kind": "latency", "seconds": "1"},
    {"kind": "latency", "secs": 1},
    {"kind": "status"},
    {"kind": "status", "status": 199},
    {"kind": "status", "status": 600},
    {"kind": "status", "status": True},
    {"kind": "status", "status": 503, "headers": {"Retry-After": 7}},
    {"kind": "status", "status": 503, "headers": {"X-Bad": "a\r\nb"}},
    {"kind": "status", "status": 503, "content_type": ""},
    {"kind": "hang", "seconds": float("inf")},
    {"kind": "oversized", "bytes": 1.5},
    {"kind": "drip", "interval": 0},
    {"kind": "deep", "depth": 0},
    {"kind": "malformed", "extra": 1},
    {"kind": "cdn", "status": 500},
    {"kind": "redirect", "status": 200},
    {"kind": "redirect", "location": "a b"},
    {"kind": "gzip_bomb", "decoded_bytes": 0},
    {"kind": "unknown_encoding", "encoding": "a\r\nb"},
    {"kind": "error_body", "code": 1000},
    {"kind": "cookies", "count": 0},
    {"kind": "huge_headers", "line_bytes": -1},
    {"kind": "rate_limited", "form": "weeks"},
    {"kind": "header_drip", "interval": 0},
    {"kind": "drift", "x": 1},
]


@pytest.mark.parametrize("spec", BAD_FAULTS)
def test_bad_fault_python_api(spec: Any) -> None:
    with pytest.raises(ValueError, match=r"."):
        SandboxState().set_fault("1001", spec)


@pytest.mark.parametrize(
    "spec", [s for s in BAD_FAULTS if s != {"kind": "hang", "seconds": float("inf")}]
)
def test_bad_fault_http(sandbox: SandboxServer, spec: Any) -> None:
    url = sandbox.origin + "/_sandbox/faults/1001"
    resp = requests.put(url, json={"fault": spec}, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["code"] == 400
    assert requests.get(sandbox.origin + "/_sandbox/faults", timeout=5).json() == {}


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"times": 1},
        {"fault": {"kind": "malformed"}, "times": 0},
        {"fault": {"kind": "malformed"}, "x": 1},
    ],
)
def test_bad_fault_request_body(sandbox: SandboxServer, body: Any) -> None:
    url = sandbox.origin + "/_sandbox/faults/1001"
    resp = requests.put(url, data=json.dumps(body), timeout=5)
    assert resp.status_code == 400


def test_bad_times_python_api() -> None:
    for times in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="times"):
            SandboxState().set_fault("1001", {"kind": "malformed"}, times=times)  # type: ignore[arg-type]


# --- call log and reset --------------------------------------------------------------------------


def test_call_log(sandbox: SandboxServer) -> None:
    url = sandbox.base_url + "/music/?user_id=1001&x=1&x=2&type=song"
    headers = {**AUTH, "x-lower-case": "a", "X_Under_Score": "b"}
    requests.get(url, headers=headers, timeout=5)
    get(sandbox, {}, path="/music")
    calls = sandbox.state.calls()
    assert len(calls) == 2
    first = calls[0]
    assert first.path == "/v1/tempolor/music/"
    assert first.args == {"user_id": ["1001"], "x": ["1", "2"], "type": ["song"]}
    assert first.user_id == "1001"
    assert first.headers["Authorization"] == f"Bearer {SANDBOX_TOKEN}"
    assert first.headers["x-lower-case"] == "a"
    assert first.headers["X_Under_Score"] == "b"
    assert "Host" in first.headers
    assert calls[1].path == "/v1/tempolor/music"
    assert calls[1].user_id is None
    assert sandbox.state.call_count() == 2
    assert sandbox.state.call_count("1001") == 1
    assert sandbox.state.call_count("1002") == 0
    log = requests.get(sandbox.origin + "/_sandbox/calls", timeout=5).json()
    assert log["count"] == 2
    assert log["calls"][0]["args"]["x"] == ["1", "2"]
    assert log["calls"][0]["headers"]["x-lower-case"] == "a"
    assert log["calls"][1]["user_id"] is None


def test_every_outcome_is_logged(sandbox: SandboxServer) -> None:
    get(sandbox, {"user_id": "1001"}, headers={})
    get(sandbox, {"user_id": "1001"}, fault={"kind": "malformed"})
    get(sandbox, {"user_id": "nope"})
    assert sandbox.state.call_count() == 3


def test_control_calls_are_not_logged(sandbox: SandboxServer) -> None:
    requests.get(sandbox.origin + "/_sandbox/calls", timeout=5)
    requests.get(sandbox.origin + "/_sandbox/faults", timeout=5)
    assert sandbox.state.call_count() == 0


def test_reset_over_http(sandbox: SandboxServer) -> None:
    sandbox.state.set_fault("*", {"kind": "status", "status": 500})
    get(sandbox, {"user_id": "1001"})
    resp = requests.post(sandbox.origin + "/_sandbox/reset", timeout=5)
    assert resp.status_code == 200
    assert sandbox.state.calls() == []
    assert sandbox.state.faults() == {}
    assert get(sandbox, {"user_id": "1001"}).status_code == 200


# --- the server ----------------------------------------------------------------------------------


def test_base_url(sandbox: SandboxServer) -> None:
    assert sandbox.base_url.startswith("http://127.0.0.1:")
    assert sandbox.base_url.endswith("/v1/tempolor")
    assert sandbox.base_url == sandbox.origin + "/v1/tempolor"


def test_stop_is_prompt_during_hang_and_drip() -> None:
    with SandboxServer() as server:
        hang = {"kind": "hang", "seconds": 60}
        with pytest.raises(requests.exceptions.ReadTimeout):
            get(server, {"user_id": "1001"}, fault=hang, timeout=(2, 0.2))
        drip = {"kind": "drip", "interval": 0.2, "seconds": 60}
        stream = get(server, {"user_id": "1001"}, fault=drip, stream=True)
        port = int(server.origin.rsplit(":", 1)[1])
        started = time.monotonic()
    with stream:
        assert time.monotonic() - started < 2
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            stream.content  # noqa: B018 - reading the body is the point
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass


def test_own_state_token_and_page_size() -> None:
    state = SandboxState()
    with SandboxServer(state, token="other", page_size=7) as server:
        assert server.state is state
        assert server.token == "other"
        assert get(server, {"user_id": "1001"}).status_code == 401
        ok = {"Authorization": "Bearer other"}
        pages = []
        params = {"user_id": "1001"}
        while True:
            page = get(server, params, headers=ok).json()
            pages.append(len(page["records"]))
            if not page["hasNext"]:
                break
            params["cursor"] = page["cursor"]
        assert pages == [7, 7, 7, 2]
        odd = get(server, {"user_id": "1002"}, headers=ok).json()
        assert len(odd["records"]) == 13
        assert odd["hasNext"] is False
    assert state.call_count() == 6


# --- the CDN edge -----------------------------------------------------------------------------


def _get(sandbox: SandboxServer, **headers: str) -> requests.Response:
    return requests.get(
        sandbox.base_url + "/music/",
        params={"user_id": "1001"},
        headers={"Authorization": f"Bearer {sandbox.token}", **headers},
        stream=True,
        timeout=5,
        allow_redirects=False,
    )


def test_compresses_when_accepted_and_says_vary(sandbox: SandboxServer) -> None:
    with _get(sandbox, **{"Accept-Encoding": "gzip"}) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Vary"] == "Accept-Encoding"
        raw = resp.raw.read(decode_content=False)
    assert gzip.decompress(raw) == _get(sandbox, **{"Accept-Encoding": "identity"}).content
    with _get(sandbox, **{"Accept-Encoding": "identity"}) as plain:
        assert "Content-Encoding" not in plain.headers
        assert plain.headers["Transfer-Encoding"] == "chunked"  # a large page
    with _get(sandbox, **{"Accept-Encoding": "deflate"}) as deflated:
        assert deflated.headers["Content-Encoding"] == "deflate"
        assert json.loads(zlib.decompress(deflated.raw.read(decode_content=False)))["records"]


def test_small_answers_keep_content_length(sandbox: SandboxServer) -> None:
    with _get(sandbox, **{"Accept-Encoding": "gzip", "Authorization": "Bearer x"}) as resp:
        assert resp.status_code == 401
        assert resp.headers["Content-Encoding"] == "gzip"
        assert "Content-Length" in resp.headers


def test_cdn_error_page(sandbox: SandboxServer) -> None:
    sandbox.state.set_fault("*", {"kind": "cdn", "status": 522})
    resp = _get(sandbox)
    assert resp.status_code == 522
    assert resp.headers["Content-Type"].startswith("text/html")
    assert "522: Connection Timed Out" in resp.text


def test_redirect_and_error_body(sandbox: SandboxServer) -> None:
    sandbox.state.set_fault("*", {"kind": "redirect", "status": 307}, times=1)
    resp = _get(sandbox)
    assert resp.status_code == 307
    assert resp.headers["Location"] == "https://elsewhere.example/v1/tempolor/music/"
    sandbox.state.set_fault("*", {"kind": "error_body"}, times=1)
    assert _get(sandbox).json() == {"error": "Internal server error", "code": 500}


def test_gzip_bomb_is_small_on_the_wire(sandbox: SandboxServer) -> None:
    sandbox.state.set_fault("*", {"kind": "gzip_bomb", "decoded_bytes": 1 << 30})
    with _get(sandbox) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert int(resp.headers["Content-Length"]) < 1_100_000
        first = resp.raw.read(1 << 16, decode_content=True)
    assert first.strip() == b""


def test_unknown_encoding_cookies_and_huge_headers(sandbox: SandboxServer) -> None:
    sandbox.state.set_fault("*", {"kind": "unknown_encoding", "encoding": "br"}, times=1)
    with _get(sandbox, **{"Accept-Encoding": "gzip"}) as resp:
        assert resp.headers["Content-Encoding"] == "br"
    sandbox.state.set_fault("*", {"kind": "cookies", "count": 2, "bytes": 10})
    first, second = _get(sandbox), _get(sandbox)
    assert len(first.cookies) == len(second.cookies) == 2
    assert set(first.cookies.keys()).isdisjoint(second.cookies.keys())
    sandbox.state.set_fault("*", {"kind": "huge_headers", "count": 150}, times=1)
    with socket.create_connection(
        (urlsplit(sandbox.origin).hostname, urlsplit(sandbox.origin).port)
    ) as s:
        s.sendall(
            f"GET /v1/tempolor/music/?user_id=1001 HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {sandbox.token}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"\r\nX-Edge-") == 150


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_rate_limited_retry_after_forms(sandbox: SandboxServer, form: str) -> None:
    sandbox.state.set_fault("*", {"kind": "rate_limited", "seconds": 30, "form": form})
    resp = _get(sandbox)
    assert resp.status_code == 429
    value = resp.headers["Retry-After"]
    if form == "seconds":
        assert value == "30"
    else:
        assert value.endswith(" GMT")


def test_header_drip_sends_the_status_line_first(sandbox: SandboxServer) -> None:
    sandbox.state.set_fault("*", {"kind": "header_drip", "interval": 0.05, "seconds": 0.3})
    started = time.monotonic()
    resp = _get(sandbox)
    assert time.monotonic() - started >= 0.3
    assert resp.status_code == 200
    assert resp.headers["X-Edge-Drip"].startswith("...")
    assert resp.json()["records"]
