"""A worker holding as many /events streams as it allows still answers everything else at once,
under gunicorn's gevent worker: its caps must fit in `worker_connections` with room to spare
(music_facade.connection_budget), and the master refuses to start when they do not.

Small numbers prove the same rule as production's: 5 streams and a worker_connections of
exactly what the caps need (5 + 1 + 4 + 256 = 266).
"""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from music_facade.connection_budget import HEADROOM
from music_facade.launch import GunicornProcess
from music_facade.sandbox import SandboxServer

from ..support.sse import items
from ..support.waiting import wait_until

STREAMS = 5
NEEDED = STREAMS + 1 + 4 + HEADROOM
CONFIG = """
[upstream]
base_url = "{base_url}"
retries = 0
max_concurrent_calls = 4

[users]
studio = "1001"

[mirror]
database = "sqlite:///{database}"
interval = 3600
reconcile_every = 864000

[library]
max_streams = 1

[events]
max_streams = {streams}
max_streams_per_client = {streams_per_client}
heartbeat = 60
"""
PROMPT = 1.0  # seconds an ordinary request may take while the streams are open


def write_config(sandbox: SandboxServer, tmp: Path) -> Path:
    config = tmp / "music.toml"
    config.write_text(
        CONFIG.format(
            base_url=sandbox.base_url,
            database=tmp / "mirror.db",
            streams=STREAMS,
            streams_per_client=STREAMS + 5,
        )
    )
    return config


def service(sandbox: SandboxServer, tmp: Path, connections: int) -> GunicornProcess:
    env = {
        "MUSIC_CONFIG": str(write_config(sandbox, tmp)),
        "USEAPI_TOKEN": sandbox.token,
        "MUSIC_WORKER_CONNECTIONS": str(connections),
    }
    return GunicornProcess(env, workers=1, log_path=tmp / "gunicorn.log")


def timed_get(url: str, **kwargs: object) -> tuple[requests.Response, float]:
    started = time.monotonic()
    resp = requests.get(url, timeout=10, **kwargs)  # type: ignore[arg-type]
    return resp, time.monotonic() - started


def test_a_worker_full_of_streams_still_answers_health_checks_and_cached_pages(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    with service(sandbox, tmp_path, NEEDED) as server, ExitStack() as streams:
        wait_until(
            lambda: (
                requests.get(server.url + "/readyz", timeout=5).json()["checks"]["mirror"] == "ok"
            ),
            timeout=30,
        )
        page = server.url + "/music?user=studio"
        assert requests.get(page, timeout=10).status_code == 200  # now cached
        readers = []  # held: a reader collected early would close its connection
        for _ in range(STREAMS):
            resp = requests.get(server.url + "/events", stream=True, timeout=(5, 30))
            streams.callback(resp.close)
            assert resp.status_code == 200, resp.text
            readers.append(items(resp))
            assert next(readers[-1]).retry == "3000"

        refused, took = timed_get(server.url + "/events")
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "events_busy"
        assert took < PROMPT, took
        health, took = timed_get(server.url + "/healthz")
        assert health.status_code == 200
        assert took < PROMPT, took
        hit, took = timed_get(page)
        assert hit.status_code == 200
        assert "hit" in hit.headers["Cache-Status"], hit.headers["Cache-Status"]
        assert took < PROMPT, took


def test_caps_that_do_not_fit_in_worker_connections_refuse_to_start(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="exited with status"):
        service(sandbox, tmp_path, NEEDED - 1).start()
    said = (tmp_path / "gunicorn.log").read_text()
    assert f"worker_connections ({NEEDED - 1}) must be at least {NEEDED}" in said
    assert "[events] max_streams (5) + [library] max_streams (1)" in said

    checked = subprocess.run(
        [sys.executable, "-m", "music_facade", "check-config", str(tmp_path / "music.toml")],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "USEAPI_TOKEN": "t0ken",
            "MUSIC_WORKER_CONNECTIONS": str(NEEDED - 1),
        },
        check=False,
        timeout=30,
    )
    assert checked.returncode == 2
    assert f"must be at least {NEEDED}" in checked.stderr
