"""/library and /music/{id}/audio under gunicorn: chunked streaming, and the walk over pages
bounded against an upstream's hostile paging."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from music_facade.sandbox import SandboxServer
from music_facade.sandbox.data import USEAPI_ACCOUNT
from tests.support import contract
from tests.support.helpers import live_service
from tests.support.sandbox_calls import calls

DONE = "6dc9a08fa3e7d6a"  # account 1001's third song: completed
ACCOUNT_MARK = f"user:{USEAPI_ACCOUNT}"


def test_under_gunicorn_the_library_streams_chunked(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    sandbox_server.state.reset()
    with (
        live_service(sandbox_server, tmp_path) as server,
        requests.get(f"{server.url}/library?user=studio", stream=True, timeout=10) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in resp.headers
        got = [json.loads(line) for line in resp.iter_lines()]
        audio = requests.get(
            f"{server.url}/music/{DONE}/audio?user=studio", allow_redirects=False, timeout=10
        )
    assert got[-1] == {"summary": {"count": 23, "complete": True}}
    assert [t["id"] for t in got[:3]][2] == DONE
    assert audio.status_code == 302
    # The sandbox's own file, passed on under allow_http_links.
    assert audio.headers["Location"].startswith(f"{sandbox_server.origin}/cdn/tempolor/mp3/{DONE}")
    log = (tmp_path / "gunicorn.log").read_text()
    assert ACCOUNT_MARK not in log


# --- the walk over pages, bounded (against the upstream's hostile paging) ------------------------

# Bounds far from the ones a test is about, so only that one can end the walk.
LOOSE = """
[library]
max_pages = 100000
max_seconds = 600
pages_per_address = "100000/minute"
"""


def summary_of(resp: requests.Response) -> dict[str, Any]:
    """The summary line of a /library answer read whole (it must be the last line)."""
    contract.check_response("GET", "/library", resp.status_code, resp.headers, resp.content)
    last: dict[str, Any] = json.loads(resp.text.splitlines()[-1])
    return last["summary"]  # type: ignore[no-any-return]


def test_a_cursor_cycle_ends_the_walk_while_healthz_stays_responsive(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    # 200 empty pages, the last one's cursor leading back to the second. Once they are cached
    # the walk used to spin on them forever without I/O: no summary, the worker deaf.
    sandbox.state.set_fault("1001", {"kind": "cursor_cycle", "pages": 200})
    with live_service(sandbox, tmp_path, extra=LOOSE) as server:
        latencies: list[float] = []
        reading = threading.Event()

        def poll_healthz() -> None:
            while not reading.is_set():
                started = time.monotonic()
                assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
                latencies.append(time.monotonic() - started)

        with ThreadPoolExecutor(1) as pool:
            polling = pool.submit(poll_healthz)
            try:
                first = requests.get(f"{server.url}/library?user=studio", timeout=30)
                again = requests.get(f"{server.url}/library?user=studio", timeout=30)
            finally:
                reading.set()
            polling.result()
    for resp in (first, again):
        assert resp.status_code == 200
        summary = summary_of(resp)
        assert (summary["count"], summary["complete"]) == (0, False)
        assert summary["problem"]["code"] == "upstream_cursor_cycle"
        assert summary["problem"]["status"] == 502
    # The first page, 199 cursors, then cycle-0 (the first page again, by a cursor): 201 calls;
    # the second walk read them all from the cache.
    assert calls(sandbox, "list") == 201
    assert len(latencies) >= 5
    assert max(latencies) < 1, latencies


def test_a_cycle_of_tracks_is_read_once_not_up_to_the_limit(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    # One page of 15 tracks whose cursor names itself: 5000 lines before, 4985 duplicates.
    sandbox.state.set_fault("1001", {"kind": "cursor_cycle", "pages": 1, "records": 15})
    with live_service(sandbox, tmp_path, extra=LOOSE) as server:
        resp = requests.get(f"{server.url}/library?user=studio", timeout=30)
    summary = summary_of(resp)
    # The page without a cursor, then the same page by its cursor, whose cursor is its own.
    assert (summary["count"], summary["complete"]) == (30, False)
    assert summary["problem"]["code"] == "upstream_cursor_cycle"
    assert calls(sandbox, "list") == 2


def test_endless_pages_stop_at_max_pages(sandbox: SandboxServer, tmp_path: Path) -> None:
    sandbox.state.set_fault("1001", {"kind": "endless", "records": 1})
    extra = LOOSE.replace("max_pages = 100000", "max_pages = 30")
    with live_service(sandbox, tmp_path, extra=extra) as server:
        resp = requests.get(f"{server.url}/library?user=studio", timeout=30)
    summary = summary_of(resp)
    assert (summary["count"], summary["complete"]) == (30, False)
    assert summary["problem"]["code"] == "page_limit_reached"
    assert calls(sandbox, "list") == 30


def test_endless_pages_stop_at_max_seconds(sandbox: SandboxServer, tmp_path: Path) -> None:
    sandbox.state.set_fault("1001", {"kind": "endless"})
    extra = LOOSE.replace("max_seconds = 600", "max_seconds = 1")
    with live_service(sandbox, tmp_path, extra=extra) as server:
        started = time.monotonic()
        resp = requests.get(f"{server.url}/library?user=studio", timeout=30)
        took = time.monotonic() - started
    summary = summary_of(resp)
    assert summary["problem"]["code"] == "time_limit_reached"
    assert 1 <= took < 1 + 2.5  # the deadline, then at most one upstream exchange
    assert calls(sandbox, "list") > 1


def test_open_mode_counts_every_upstream_page_per_address(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    # Empty pages with a new cursor every time: in open mode they used to be fetched as fast
    # as the upstream answered (2,400 a second), uncounted, for as long as the walk lasted.
    sandbox.state.set_fault("1001", {"kind": "endless"})
    extra = LOOSE.replace('"100000/minute"', '"25/minute"')
    with live_service(sandbox, tmp_path, extra=extra) as server:
        first = requests.get(f"{server.url}/library?user=studio", timeout=30)
        # The 26 pages read are cached and free; the next one fetched is over the budget.
        again = requests.get(f"{server.url}/library?user=studio", timeout=30)
        music = requests.get(f"{server.url}/music?user=studio", timeout=30)
    for resp in (first, again):
        summary = summary_of(resp)
        assert summary["complete"] is False
        assert summary["problem"]["code"] == "rate_limited"
    # 25 counted, the 26th fetched and refused; then one more fetched and refused.
    assert calls(sandbox, "list") == 27
    assert music.status_code == 200  # the budget is the walk's: /music stays unlimited here
