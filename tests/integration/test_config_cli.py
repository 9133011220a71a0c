"""The configuration on the command line: check-config shows it masked or fails in one line,
and --help shows no secret."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.config_files import MINIMAL, TOKEN, write


def run_cli(
    tmp_path: Path, text: str, token: str | None = TOKEN
) -> subprocess.CompletedProcess[str]:
    env = {"MUSIC_CONFIG": write(tmp_path, text), "PATH": "/usr/bin:/bin"}
    if token is not None:
        env["USEAPI_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "music_facade", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_check_config_prints_masked_configuration(tmp_path: Path) -> None:
    done = run_cli(tmp_path, MINIMAL)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["users"] == {"studio": "1234567"}
    assert shown["upstream"]["token"] == "******** (from USEAPI_TOKEN)"
    assert TOKEN not in done.stdout + done.stderr


def test_check_config_fails_with_one_line(tmp_path: Path) -> None:
    done = run_cli(tmp_path, MINIMAL + "[cache]\nttl = 'soon'\n")
    assert done.returncode == 2
    assert done.stderr == "music-facade: configuration error: cache.ttl: Not a valid number.\n"
    assert TOKEN not in done.stdout + done.stderr


def test_help_shows_no_secret(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "music_facade", "--help"],
        env={"USEAPI_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert "check-config" in done.stdout
    assert TOKEN not in done.stdout + done.stderr


def test_check_config_shows_allow_http_links_or_why_it_is_refused(tmp_path: Path) -> None:
    local = '[upstream]\nbase_url = "http://127.0.0.1:8081/v1/tempolor"\nallow_http_links = true\n'
    done = run_cli(tmp_path, local + MINIMAL)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["upstream"]["allow_http_links"] is True
    remote = local.replace("http://127.0.0.1:8081", "https://api.useapi.net")
    done = run_cli(tmp_path, remote + MINIMAL)
    assert done.returncode == 2
    assert done.stderr == (
        "music-facade: configuration error: upstream.allow_http_links: may be true only when "
        "[upstream] base_url is on loopback (localhost, 127.0.0.0/8 or ::1): plain http links "
        "are for a local sandbox\n"
    )
