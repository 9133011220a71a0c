"""The configuration is read once, by gunicorn's master, and handed to every worker it forks:
SIGHUP with a broken file keeps the last good one, with a good file it reaches every worker."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from music_facade.launch import GunicornProcess
from music_facade.sandbox import SandboxServer
from tests.support.helpers import LIVE_CONFIG, get_on_each_worker, live_service
from tests.support.metrics import scrape, worker_gauges

# The visible change: an alias the first configuration lacks (the sandbox's empty account).
EMPTY = "/music?user=empty"


def wait_until(
    server: GunicornProcess, what: str, done: Callable[[], bool], timeout: float = 30
) -> None:
    """Poll done() until it is true; fail naming what did not happen, or that gunicorn's
    master exited meanwhile."""
    assert server.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"gunicorn's master exited (rc {server.proc.returncode}) before {what}")
        if done():
            return
        time.sleep(0.05)  # poll interval
    pytest.fail(f"{what} within {timeout} s")


def replaced(server: GunicornProcess, old: list[int]) -> Callable[[], bool]:
    """Whether all the workers are new ones (none of old), as many as configured."""

    def check() -> bool:
        now = server.worker_pids()
        return len(now) == server.workers and not set(now) & set(old)

    return check


def log_has(path: Path, text: str, count: int = 1) -> Callable[[], bool]:
    return lambda: path.read_text().count(text) >= count


def test_sighup_keeps_the_last_good_configuration_and_applies_a_good_one(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    log = tmp_path / "gunicorn.log"
    config = tmp_path / "music.toml"
    with live_service(sandbox, tmp_path, workers=2) as server:
        assert server.proc is not None
        assert get_on_each_worker(server, [EMPTY, EMPTY]) == [400, 400]  # unknown_user

        # A bad edit of the mounted file, then a reload: the master stays, and the new
        # workers it forks serve the configuration it validated before.
        config.write_text("[users\n")
        before = server.worker_pids()
        os.kill(server.proc.pid, signal.SIGHUP)
        failed = "configuration reload failed, still serving the previous configuration"
        wait_until(server, "the failed reload was logged", log_has(log, failed))
        wait_until(server, "the workers were replaced", replaced(server, before))
        assert server.proc.poll() is None
        assert "is not valid TOML" in log.read_text()
        assert get_on_each_worker(server, ["/music?user=studio"] * 2) == [200, 200]

        # A worker that crashes is respawned by the master with the same configuration: it
        # does not read the (still broken) file.
        crashed = server.worker_pids()[0]
        os.kill(crashed, signal.SIGKILL)
        wait_until(
            server,
            "the crashed worker was replaced",
            lambda: crashed not in server.worker_pids() and len(server.worker_pids()) == 2,
        )
        assert get_on_each_worker(server, ["/music?user=studio"] * 2) == [200, 200]
        assert get_on_each_worker(server, [EMPTY, EMPTY]) == [400, 400]
        assert server.proc.poll() is None
        # The master still knows its metrics directory after the reload re-ran
        # deploy/gunicorn.conf.py: the crashed worker's live gauges leave /metrics.
        wait_until(
            server,
            "the crashed worker's gauges left /metrics",
            lambda: (
                str(crashed) not in worker_gauges(scrape(server.url), "music_facade_cache_entries")
            ),
        )

        # A good edit with a visible change: every worker forked after the reload serves it.
        text = LIVE_CONFIG.format(base_url=sandbox.base_url)
        config.write_text(text + 'empty = "1003"\n')
        before = server.worker_pids()
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_until(server, "the reload was logged", log_has(log, "configuration reloaded"))
        wait_until(server, "the workers were replaced", replaced(server, before))
        assert get_on_each_worker(server, [EMPTY, EMPTY]) == [200, 200]
        assert server.proc.poll() is None
