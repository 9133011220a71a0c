"""Start-up says what runs: the caller mode, the shared state, what a rate limit means, who may
read /metrics, and a warning where a limit multiplies or /metrics is open; check-config says
the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from music_facade.auth import mint_key
from music_facade.sandbox import SandboxServer
from tests.support.helpers import live_service

KEY, DIGEST = mint_key()
# The case: a client limited to 5/minute, two workers, no Redis.
KEYED = f'[[clients]]\nname = "web"\nkey_sha256 = "{DIGEST}"\nusers = ["*"]\n'
KEYED += 'rate_limit = "5/minute"\n'
PER_WORKER = (
    "rate limits are counted per worker: without [redis] each of the 2 workers counts alone, so "
    "a limit of 5/minute lets up to 10/minute through"
)


def check_config(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "music_facade", "check-config", str(path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "USEAPI_TOKEN": "t0ken", **env},
        check=False,
        timeout=30,
    )


def startup_lines(log: Path) -> list[dict[str, Any]]:
    """The JSON log lines of music_facade.startup."""
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    return [x for x in lines if x["logger"] == "music_facade.startup"]


def test_two_workers_without_redis_say_the_limit_is_per_worker(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    with live_service(sandbox, tmp_path, KEYED, workers=2) as server:
        auth = {"Authorization": f"Bearer {KEY}"}
        assert requests.get(server.url + "/music?user=studio", headers=auth, timeout=5).ok
        # Keys are configured and [metrics] says nobody: closed, even to a key holder.
        scrape = requests.get(server.url + "/metrics", headers=auth, timeout=5)
        assert scrape.status_code == 403
        assert scrape.headers["Content-Type"] == "application/problem+json"
        assert scrape.json()["code"] == "metrics_forbidden"
    found = startup_lines(tmp_path / "gunicorn.log")
    # Said once, by the master, for both workers: one INFO line, then the warning.
    assert [x["level"] for x in found] == ["INFO", "WARNING"], found
    info, warning = found
    assert (info["mode"], info["shared_state"], info["workers"]) == ("keyed", "memory", 2)
    assert info["metrics_access"] == "closed"
    assert "counted per worker (2 workers)" in info["rate_limits"]
    assert info["message"].startswith("music-facade runs: mode: keyed; shared state: memory;")
    assert warning["message"].startswith(PER_WORKER)

    # check-config says the same facts and the same warning, for MUSIC_WORKERS's workers.
    done = check_config(tmp_path / "music.toml", MUSIC_WORKERS="2")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "music-facade: runs: " + info["message"].removeprefix("music-facade runs: "),
        "music-facade: warning: " + warning["message"],
    ]
    assert json.loads(done.stdout)["metrics"]["access"] == "closed"


def test_open_mode_warns_that_music_and_metrics_are_open(tmp_path: Path) -> None:
    config = tmp_path / "music.toml"
    config.write_text('[users]\nstudio = "1"\n')
    done = check_config(config)  # MUSIC_WORKERS unset: gunicorn.conf.py's default, 2
    assert done.returncode == 0, done.stderr
    runs, *warnings = done.stderr.splitlines()
    assert runs == (
        "music-facade: runs: mode: open; shared state: memory; rate limits: none (open mode "
        "without [limits] per_address); /metrics: open to anyone"
    )
    assert warnings == [
        "music-facade: warning: no [[clients]] or [oidc] configured: /music is open to anyone",
        "music-facade: warning: /metrics is open to anyone: it names every alias and client; "
        "restrict it with [metrics] allow or token_sha256",
    ]


def test_redis_counts_once_and_one_worker_does_not_multiply(tmp_path: Path) -> None:
    config = tmp_path / "music.toml"
    config.write_text('[users]\nstudio = "1"\n' + KEYED + '[metrics]\nallow = ["10.0.0.0/8"]\n')
    shared = check_config(config, MUSIC_REDIS_URL="redis://127.0.0.1:1/0")
    assert shared.returncode == 0, shared.stderr
    [runs] = shared.stderr.splitlines()  # no warning
    assert "shared state: Redis (shared by every worker and replica)" in runs
    assert "counted in Redis, once for every worker and replica" in runs
    assert "/metrics: restricted by [metrics] allow / token_sha256" in runs
    alone = check_config(config, MUSIC_WORKERS="1")
    assert alone.returncode == 0, alone.stderr
    assert [line.split(":")[1] for line in alone.stderr.splitlines()] == [" runs"]
    assert "counted per worker (1 worker)" in alone.stderr


def test_check_config_refuses_a_worker_count_gunicorn_would(tmp_path: Path) -> None:
    config = tmp_path / "music.toml"
    config.write_text('[users]\nstudio = "1"\n')
    done = check_config(config, MUSIC_WORKERS="two")
    assert done.returncode == 2
    assert done.stderr == (
        "music-facade: configuration error: MUSIC_WORKERS: 'two' is not a positive number of "
        "workers\n"
    )
