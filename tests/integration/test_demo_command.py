"""`music-facade demo`'s command line as a newcomer meets it: --help names every flag, a busy
port or a bad --config is one line naming what to change (exit 2, no traceback), with a good
--config the merged configuration is what the service runs with, and SIGHUP reloads it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support.demo import Demo, running_demo
from tests.support.waiting import wait_until


def demo_command(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "music_facade", "demo", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_lists_every_flag() -> None:
    done = demo_command("--help")
    assert done.returncode == 0, done.stderr
    for flag in ("--port", "--app-port", "--cors-origin", "--config"):
        assert flag in done.stdout


@pytest.mark.parametrize("flag", ["--port", "--app-port"])
def test_a_busy_port_is_one_line_naming_the_flag(flag: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = demo_command(flag, str(port))
    assert done.returncode == 2
    assert done.stderr == (f"music-facade demo: port {port} is in use; pick another with {flag}\n")
    assert done.stdout == ""


def test_a_config_that_is_not_toml_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "mine.toml"
    bad.write_text("[limits\n")
    done = demo_command("--port", "0", "--app-port", "0", "--config", str(bad))
    assert done.returncode == 2
    assert done.stderr.startswith(f"music-facade demo: --config {bad}: not valid TOML: ")
    assert done.stderr.count("\n") == 1


def test_a_config_error_names_the_key_and_starts_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "mine.toml"
    bad.write_text('[limits]\ndefault = "lots"\n')
    done = demo_command("--port", "0", "--app-port", "0", "--config", str(bad))
    assert done.returncode == 2
    assert done.stderr.startswith("music-facade demo: configuration error: ")
    assert "limits" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.live
def test_a_merged_config_and_extra_origins_are_what_the_service_runs(tmp_path: Path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text('[limits]\ndefault = "1000/minute"\n')
    extra = "http://localhost:5173"
    argv = ["--port", "0", "--app-port", "0", "--config", str(mine), "--cors-origin", extra]
    with running_demo(argv, tmp_path) as demo:
        for origin in (demo.app_url, extra):
            answer = requests.get(
                demo.url + "/music?user=studio", headers={**demo.auth, "Origin": origin}, timeout=10
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["Access-Control-Allow-Origin"] == origin
            assert answer.headers["RateLimit-Policy"] == '"music";q=1000;w=60'
        stranger = requests.get(
            demo.url + "/healthz", headers={"Origin": "http://127.0.0.1:1"}, timeout=10
        )
        assert "Access-Control-Allow-Origin" not in stranger.headers
        # The key is required: the demo is not open mode.
        assert requests.get(demo.url + "/music?user=studio", timeout=10).status_code == 401


@pytest.mark.live
def test_a_reload_applies_a_good_config_and_keeps_serving_through_a_bad_one(
    tmp_path: Path,
) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text('[limits]\ndefault = "1000/minute"\n')
    argv = ["--port", "0", "--app-port", "0", "--config", str(mine)]

    def policy(demo: Demo) -> str:
        answer = requests.get(demo.url + "/music?user=studio", headers=demo.auth, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.headers["RateLimit-Policy"]

    with running_demo(argv, tmp_path) as demo:
        assert f"kill -HUP {demo.proc.pid}" in "".join(demo.lines)  # the banner says how
        mine.write_text('[limits]\ndefault = "999/minute"\n')
        os.kill(demo.proc.pid, signal.SIGHUP)
        wait_until(lambda: policy(demo) == '"music";q=999;w=60', 20)  # the same key still works
        mine.write_text('[limits]\ndefault = "lots"\n')
        os.kill(demo.proc.pid, signal.SIGHUP)
        wait_until(lambda: "still serving the previous configuration" in demo.log.read_text(), 10)
        assert policy(demo) == '"music";q=999;w=60'
    said = demo.log.read_text()
    assert "music-facade demo: reload: configuration error: limits.default: " in said
