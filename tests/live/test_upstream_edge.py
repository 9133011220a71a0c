"""A gzip bomb from the upstream under gunicorn: a worker's time and memory stay bounded."""

from __future__ import annotations

import time
from pathlib import Path

import requests

from music_facade.sandbox import SandboxServer
from tests.support import contract
from tests.support.helpers import live_service


def _worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1
    return int(children[0])


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_gzip_bomb_bounds_a_workers_time_and_memory(sandbox: SandboxServer, tmp_path: Path) -> None:
    with live_service(sandbox, tmp_path) as server:
        assert server.proc is not None
        warm = requests.get(server.url + "/music?user=edge", timeout=10)
        assert warm.status_code == 200
        worker = _worker_pid(server.proc.pid)
        before = _kib(worker, "VmRSS")
        sandbox.state.set_fault("*", {"kind": "gzip_bomb", "decoded_bytes": 1 << 30})
        started = time.monotonic()
        resp = requests.get(server.url + "/music?user=studio", timeout=30)
        elapsed = time.monotonic() - started
        peak = _kib(worker, "VmHWM")  # the worker's peak RSS so far: an upper bound
        contract.check_response("GET", "/music", resp.status_code, resp.headers, resp.content)
        assert resp.status_code == 502
        assert resp.json()["code"] == "upstream_error"
        print(f"gzip bomb: {elapsed:.3f} s, worker RSS peak - before = {peak - before} KiB")
        assert elapsed < 2.0
        assert (peak - before) < 50 * 1024
