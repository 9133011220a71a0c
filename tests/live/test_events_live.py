"""GET /events end to end: the service under gunicorn's gevent worker (two workers: the one
syncing is not necessarily the one streaming), the sandbox as a live account, and a real
database (SQLite in a temporary directory, or a real PostgreSQL)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from music_facade.launch import GunicornProcess
from music_facade.sandbox import SandboxServer

from ..support.helpers import LIVE_CONFIG
from ..support.metrics import wait_for_workers
from ..support.sse import Event, items
from ..support.waiting import wait_until

CONFIG = """
[mirror]
database = "{database}"
interval = 1
active_interval = 0.5
reconcile_every = 86400
max_calls_per_minute = 1000

[events]
heartbeat = 0.3
"""


def service(sandbox: SandboxServer, tmp: Path, database: str) -> GunicornProcess:
    config = tmp / "music.toml"
    config.write_text(LIVE_CONFIG.format(base_url=sandbox.base_url) + CONFIG.format(
        database=database))  # fmt: skip
    env = {"MUSIC_CONFIG": str(config), "USEAPI_TOKEN": sandbox.token}
    return GunicornProcess(env, workers=2, log_path=tmp / "gunicorn.log")


def synced(url: str) -> bool:
    checks = requests.get(url + "/readyz", timeout=5).json()["checks"]
    return bool(checks["mirror"] == "ok")


def open_stream(url: str, **kwargs: Any) -> tuple[requests.Response, Iterator[Event]]:
    resp = requests.get(url + "/events", stream=True, timeout=(5, 10), **kwargs)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"] == "text/event-stream"
    stream = items(resp)
    assert next(stream).retry == "3000"  # open: everything after this is live
    return resp, stream


def test_a_generating_track_is_followed_live_and_a_reconnection_misses_nothing(
    sandbox: SandboxServer, tmp_path: Path, mirror_database: str
) -> None:
    with service(sandbox, tmp_path, mirror_database) as server:
        wait_until(lambda: synced(server.url), timeout=30)
        resp, stream = open_stream(server.url, params={"user": "studio"})
        made = requests.post(
            sandbox.origin + "/_sandbox/accounts/1001/tracks",
            json={"type": "song", "title": "Harbour Lights Live", "seconds": 4},
            timeout=5,
        )
        assert made.status_code == 201, made.text
        item = made.json()["id"]
        heartbeats = 0
        seen: list[Event] = []
        # Until the first progress: then hang up, and pick up again from its id.
        for found in stream:
            if found.comment == "keep-alive":
                heartbeats += 1
            elif found.data:
                seen.append(found)
                if found.event == "track.progress":
                    break
        resp.close()
        assert heartbeats >= 1
        mine = [e for e in seen if e.json().get("track", {}).get("id") == item]
        assert mine[0].event == "track.created"
        assert mine[-1].event == "track.progress"
        assert mine[0].json()["track"]["status"] == "generating"
        last = seen[-1].id
        assert last is not None

        again, resumed = open_stream(server.url, params={"user": "studio"},
                                     headers={"Last-Event-ID": last})  # fmt: skip
        after: list[Event] = []
        for found in resumed:
            if found.data:
                after.append(found)
                if found.event == "track.completed":
                    break
        again.close()
        names = [e.event for e in after if e.json().get("track", {}).get("id") == item]
        assert names[-1] == "track.completed"
        assert set(names[:-1]) <= {"track.progress"}
        progress = [e.json()["track"]["progress"] for e in [*mine, *after]
                    if e.json().get("track", {}).get("id") == item]  # fmt: skip
        assert progress == sorted(progress)
        # Exactly the log after the last id received: no change twice, none missing.
        logged = requests.get(
            server.url + "/changes", params={"user": "studio", "since": last}, timeout=5
        ).json()["changes"]
        upto = [c for c in logged if int(c["seq"]) <= int(after[-1].id or 0)]
        assert [(e.id, e.event) for e in after] == [(c["seq"], c["event"]) for c in upto]
        assert int(after[0].id or 0) > int(last)


def test_sigterm_ends_an_open_stream_promptly(
    sandbox: SandboxServer, tmp_path: Path, mirror_database: str
) -> None:
    with service(sandbox, tmp_path, mirror_database) as server:
        wait_for_workers(server)  # a worker still booting would exit as a failed boot
        resp, stream = open_stream(server.url)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        # The backfill may still be writing: the stream may pass on changes until it ends,
        # and ends without an error.
        for _ in stream:
            assert time.monotonic() - began < 3, "the stream outlived the shutdown"
        assert time.monotonic() - began < 3
        resp.close()
        server.proc.wait(timeout=15)  # and gunicorn exits: no stream holds a worker
