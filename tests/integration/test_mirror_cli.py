"""`music-facade mirror status` as an operator runs it: a subprocess reading a real SQLite mirror
(filled through the store as the syncer fills it), in a table or as JSON, and failing in one
line when the mirror is off or its database cannot be read."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from music_facade.mirror import Entry, Store
from tests.support.config_files import TOKEN, write
from tests.support.demo import running_demo

CONFIG = """\
[users]
studio = "1001"
edge = "1002"

[mirror]
database = "{url}"
interval = 30
"""


def run_status(
    tmp_path: Path, config: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {"MUSIC_CONFIG": write(tmp_path, config), "USEAPI_TOKEN": TOKEN}
    environ["PATH"] = "/usr/bin:/bin"
    return subprocess.run(
        [sys.executable, "-m", "music_facade", "mirror", "status", *args],
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def entry(id_: str, status: str) -> Entry:
    track = {"id": id_, "title": f"Track {id_}", "status": status}
    return Entry(id=id_, job_id=f"job-secret-{id_}", track=track, updated_ms=None)


def fill(url: str, now: float) -> None:
    """studio: both types backfilled, songs synced 12 s ago with one still generating and a
    failure noted; edge: a backfill under way, nothing complete yet."""
    store = Store.open(url)
    try:
        store.write("studio", "song", [entry("s1", "completed"), entry("s2", "generating")])
        store.write("studio", "song", [entry("s3", "failed")])
        store.save_state(
            "studio",
            "song",
            backfilled=True,
            last_complete=now - 12,
            last_attempt=now - 2,
            last_error="upstream_timeout",
        )
        store.write("studio", "instrumental", [entry("i1", "completed")])
        store.save_state("studio", "instrumental", backfilled=True, last_complete=now - 400)
        store.write("edge", "song", [entry("e1", "completed")])
        store.save_state("edge", "song", backfill_cursor="abc", last_attempt=now - 1)
    finally:
        store.close()


def test_status_as_json_reports_every_alias_and_type(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mirror.db'}"
    now = time.time()
    fill(url, now)
    done = run_status(tmp_path, CONFIG.format(url=url), "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["database"] == url
    assert shown["interval_seconds"] == 30
    accounts = {(a["user"], a["type"]): a for a in shown["accounts"]}
    assert list(accounts) == [
        ("edge", "song"),
        ("edge", "instrumental"),
        ("studio", "song"),
        ("studio", "instrumental"),
    ]
    song = accounts["studio", "song"]
    assert (song["state"], song["tracks"], song["generating"]) == ("ok", 3, 1)
    assert song["last_error"] == "upstream_timeout"
    assert 12 <= song["lag_seconds"] < 12 + 30  # the subprocess's own start-up adds a little
    synced = datetime.fromisoformat(song["last_complete"])
    assert song["last_complete"].endswith("Z")
    assert abs(synced.timestamp() - (now - 12)) < 1
    # 400 s behind with a 30 s interval: past five intervals, as /readyz calls it.
    assert accounts["studio", "instrumental"]["state"] == "stale"
    edge = accounts["edge", "song"]
    assert (edge["state"], edge["tracks"], edge["last_complete"], edge["lag_seconds"]) == (
        "syncing",
        1,
        None,
        None,
    )
    assert accounts["edge", "instrumental"]["tracks"] == 0
    assert "job-secret" not in done.stdout + done.stderr


def test_status_as_a_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mirror.db'}"
    fill(url, time.time())
    done = run_status(tmp_path, CONFIG.format(url=url))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"mirror database {url} (sync every 30 s)"
    assert lines[1].split()[:5] == ["USER", "TYPE", "STATE", "TRACKS", "GENERATING"]
    rows = {tuple(line.split()[:2]): line.split() for line in lines[2:]}
    assert len(rows) == 4
    studio = rows["studio", "song"]
    assert studio[2:5] == ["ok", "3", "1"]
    assert studio[-1] == "upstream_timeout"
    assert rows["edge", "song"][2:7] == ["syncing", "1", "0", "never", "-"]


def test_status_makes_no_file_where_none_is(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "mirror.db"
    done = run_status(tmp_path, CONFIG.format(url=f"sqlite:///{path}"))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"music-facade: mirror database sqlite:///{path}: no such file "
        "(the service creates it when it starts)\n"
    )
    assert not path.exists()


def test_status_refuses_a_file_that_is_no_mirror(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    path.write_bytes(b"")  # an empty file is a valid, empty SQLite database
    done = run_status(tmp_path, CONFIG.format(url=f"sqlite:///{path}"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "no mirror schema in it" in done.stderr
    with closing(sqlite3.connect(path)) as conn:  # no table was made in it
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_status_with_the_mirror_off(tmp_path: Path) -> None:
    done = run_status(tmp_path, '[users]\nstudio = "1001"\n')
    assert done.returncode == 2
    assert done.stderr == (
        "music-facade: the mirror is off: the configuration has no [mirror] section\n"
    )


def test_status_masks_the_password_of_a_database_it_cannot_reach(tmp_path: Path) -> None:
    # Nothing listens on port 1: the connection is refused at once.
    url = "postgresql://music:pw-SECRET-42@127.0.0.1:1/music"
    done = run_status(tmp_path, CONFIG.format(url=url))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(
        "music-facade: mirror database postgresql://music:********@127.0.0.1:1/music: "
    )
    assert done.stderr.count("\n") == 1
    assert "SECRET" not in done.stderr


def test_status_masks_the_password_file_too(tmp_path: Path) -> None:
    secret = tmp_path / "mirror-password"
    secret.write_text("pw-FILE-SECRET-7\n")
    url = "postgresql://music@127.0.0.1:1/music"
    done = run_status(
        tmp_path, CONFIG.format(url=url), env={"MUSIC_MIRROR_PASSWORD_FILE": str(secret)}
    )
    assert done.returncode == 2
    assert "SECRET" not in done.stdout + done.stderr


# How the banner's curl commands send the demo's key.
CURL_AUTH = '-H "Authorization: Bearer $MUSIC_KEY"'


def poll(condition: Callable[[], bool], timeout: float) -> None:
    """Poll an HTTP condition a few times a second until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)  # poll interval: each check is a request to the demo


@pytest.mark.live
def test_the_demo_mirrors_the_sandbox_and_follows_a_new_track(tmp_path: Path) -> None:
    """What the demo's banner offers works: /tracks answers from the mirror, and a track added
    to the sandbox through the printed command appears there and in /changes."""
    argv = ["--port", "0", "--app-port", "0"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    with running_demo(argv, tmp_path, env=env) as demo:
        url = demo.url
        assert f"  curl -s {CURL_AUTH} '{url}/tracks?q=neon&sort=-created_at'\n" in demo.lines
        control, body = demo.add_track

        def tracks(query: str) -> list[dict[str, Any]]:
            found = requests.get(f"{url}/tracks?{query}", headers=demo.auth, timeout=10)
            assert found.status_code == 200, found.text
            items: list[dict[str, Any]] = found.json()["items"]
            return items

        poll(lambda: bool(tracks("q=neon")), timeout=30)  # the first backfill
        added = requests.post(
            control, data=body, headers={"Content-Type": "application/json"}, timeout=10
        )
        assert added.status_code == 201, added.text
        new_id = added.json()["id"]
        # Synced every 10 s: it shows up within an interval or two, however it stands by then.
        poll(lambda: [t["id"] for t in tracks("q=hello+mirror")] == [new_id], timeout=40)
        changes = requests.get(f"{url}/changes", headers=demo.auth, timeout=10).json()["changes"]
        assert new_id in {c["id"] for c in changes}
