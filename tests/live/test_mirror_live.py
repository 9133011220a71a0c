"""The mirror end to end: the service under gunicorn's gevent worker, the sandbox as a live
account, and a real database (SQLite in a temporary directory, or a real PostgreSQL)."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from music_facade.launch import GunicornProcess
from music_facade.sandbox import SandboxServer

from ..support.helpers import LIVE_CONFIG
from ..support.metrics import scrape, total
from ..support.postgres_server import PostgresServer
from ..support.redis_server import RedisServer
from ..support.waiting import wait_until

MIRROR = """
[mirror]
database = "{database}"
interval = {interval}
active_interval = 0.5
reconcile_every = {reconcile}
max_calls_per_minute = 1000
"""


def service(
    sandbox: SandboxServer,
    tmp: Path,
    database: str,
    *,
    interval: float = 1,
    reconcile: float = 86400,
    extra: str = "",
    name: str = "music",
) -> GunicornProcess:
    config = tmp / f"{name}.toml"
    text = LIVE_CONFIG.format(base_url=sandbox.base_url)
    config.write_text(
        text + MIRROR.format(database=database, interval=interval, reconcile=reconcile) + extra
    )
    env = {"MUSIC_CONFIG": str(config), "USEAPI_TOKEN": sandbox.token}
    return GunicornProcess(env, workers=2, log_path=tmp / f"{name}.log")


def get(url: str, **params: Any) -> dict[str, Any]:
    resp = requests.get(url, params=params, timeout=10)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def records(sandbox: SandboxServer, user_id: str, type_: str) -> int:
    """How many records the sandbox lists for an account and type (walked like a client)."""
    count, cursor = 0, ""
    headers = {"Authorization": f"Bearer {sandbox.token}"}
    while True:
        params = {"user_id": user_id, "type": type_, "cursor": cursor}
        page = requests.get(sandbox.base_url + "/music/", params=params, headers=headers, timeout=5)
        doc = page.json()
        count += len(doc.get("records") or [])
        if not doc.get("hasNext"):
            return count
        cursor = doc["cursor"]


def synced(url: str) -> bool:
    checks = requests.get(url + "/readyz", timeout=5).json()["checks"]
    return bool(checks["mirror"] == "ok")


def test_the_mirror_answers_the_whole_library_with_no_upstream_call(
    sandbox: SandboxServer, tmp_path: Path, mirror_database: str
) -> None:
    with service(sandbox, tmp_path, mirror_database) as server:
        wait_until(lambda: synced(server.url), timeout=30)
        expected = sum(records(sandbox, "1001", t) for t in ("song", "instrumental"))
        first = get(server.url + "/tracks", user="studio", limit=100)
        assert first["total"] == expected
        assert first["synced_at"] is not None
        assert {t["user"] for t in first["items"]} == {"studio"}
        # Every page, keyset-ordered, each track once.
        seen, cursor = [], None
        while True:
            page = get(
                server.url + "/tracks",
                user="studio",
                limit=7,
                **({"cursor": cursor} if cursor else {}),
            )
            seen += [t["id"] for t in page["items"]]
            cursor = page["next_cursor"]
            if not page["has_more"]:
                break
        assert len(seen) == len(set(seen)) == expected
        library = requests.get(server.url + "/library", params={"user": "studio"}, timeout=10)
        lines = [json.loads(line) for line in library.text.splitlines()]
        assert lines[-1]["summary"] == {"count": records(sandbox, "1001", "song"), "complete": True}
        changes = get(server.url + "/changes", user="studio", limit=1000)
        assert {c["op"] for c in changes["changes"]} == {"upsert"}
        found = scrape(server.url)
        # What callers asked was answered from the mirror; only the sync called the upstream.
        assert total(found, "music_facade_upstream_calls_total", source="request") == 0
        assert total(found, "music_facade_upstream_calls_total", source="mirror") > 0
        assert total(found, "music_facade_mirror_tracks", account="studio") == expected


def test_a_generating_track_shows_its_progress_then_completes_and_a_deletion_is_recorded(
    sandbox: SandboxServer, tmp_path: Path, mirror_database: str
) -> None:
    with service(sandbox, tmp_path, mirror_database, reconcile=2) as server:
        wait_until(lambda: synced(server.url), timeout=30)
        start = get(server.url + "/changes", limit=1000)["next"]
        made = requests.post(
            sandbox.origin + "/_sandbox/accounts/1001/tracks",
            json={"type": "song", "title": "Mirror Lake Anthem", "seconds": 3},
            timeout=5,
        )
        assert made.status_code == 201, made.text
        item = made.json()["id"]

        def status() -> str | None:
            found = get(server.url + "/tracks", q="mirror lake", user="studio")["items"]
            return found[0]["status"] if found else None

        wait_until(lambda: status() == "generating", timeout=10)
        wait_until(lambda: status() == "completed", timeout=15)
        changes = get(server.url + "/changes", since=start, limit=1000)["changes"]
        mine = [c for c in changes if c["id"] == item]
        assert mine[0]["track"]["status"] == "generating"
        assert mine[-1]["track"]["status"] == "completed"
        progress = [c["track"]["progress"] for c in mine]
        assert progress == sorted(progress)
        gone = requests.delete(sandbox.origin + f"/_sandbox/accounts/1001/tracks/{item}", timeout=5)
        assert gone.status_code == 204
        wait_until(lambda: status() is None, timeout=15)
        last = get(server.url + "/changes", since=start, limit=1000)["changes"][-1]
        assert (last["op"], last["id"], last["track"]) == ("delete", item, None)


def test_one_replica_syncs_and_another_takes_over_when_it_dies(
    sandbox: SandboxServer, tmp_path: Path, postgres: PostgresServer
) -> None:
    database = postgres.database("fleet" + uuid.uuid4().hex[:8])
    with RedisServer() as redis_server:
        extra = f'\n[redis]\nurl = "{redis_server.url}"\n'
        a = service(sandbox, tmp_path, database, extra=extra, name="a").start()
        b = service(sandbox, tmp_path, database, extra=extra, name="b").start()
        try:
            wait_until(lambda: synced(a.url), timeout=30)

            def mirror_calls(server: GunicornProcess) -> float:
                found = scrape(server.url)
                return total(found, "music_facade_upstream_calls_total", source="mirror")

            # Over a few intervals, only one replica calls the upstream for the mirror.
            before = mirror_calls(a), mirror_calls(b)
            time.sleep(3)  # three sync intervals
            after = mirror_calls(a), mirror_calls(b)
            grew = [x > y for x, y in zip(after, before, strict=True)]
            assert grew.count(True) == 1, (before, after)
            holder, other = (a, b) if grew[0] else (b, a)
            assert holder.proc is not None
            # A crash: master and workers killed at once, no lease given up.
            for pid in [*holder.worker_pids(), holder.proc.pid]:
                os.kill(pid, signal.SIGKILL)
            taken = mirror_calls(other)
            # The lease lasts 1.5 intervals: the other replica syncs within two.
            wait_until(lambda: mirror_calls(other) > taken, timeout=2 * 1 + 1)
        finally:
            a.stop()
            b.stop()
