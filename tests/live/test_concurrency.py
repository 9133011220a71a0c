"""The production worker under load that used to starve it: a hung upstream, slow clients.

Functional, not timed: each test holds many connections in the bad state, then checks that a
cached page and /healthz still answer before the bad state ends. Under a thread-per-request
worker these requests queued behind the stuck ones and never answered in time.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from music_facade.launch import GunicornProcess
from music_facade.sandbox import SandboxServer
from tests.support.helpers import live_service

CACHED = "/music?user=edge"


@pytest.fixture
def live(sandbox: SandboxServer, tmp_path: Path) -> Iterator[GunicornProcess]:
    # One worker: everything below competes for the same process.
    # Calls are held open on purpose (hung upstreams): a deadline longer than a busy machine
    # needs to start 64 callers.
    extra = "\n[cache]\nttl = 600\n"
    with live_service(sandbox, tmp_path, extra=extra, read_timeout=20) as server:
        assert requests.get(server.url + CACHED, timeout=10).status_code == 200
        yield server


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll until condition() holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def still_serving(live: GunicornProcess) -> None:
    """A cached page and /healthz answer (the timeout only stops a broken run from hanging)."""
    page = requests.get(live.url + CACHED, timeout=10)
    assert page.status_code == 200
    assert "hit" in page.headers["Cache-Status"]
    assert requests.get(live.url + "/healthz", timeout=10).status_code == 200


def test_cached_page_answers_while_callers_wait_on_a_hung_upstream(
    live: GunicornProcess, sandbox: SandboxServer
) -> None:
    callers = 64
    sandbox.state.set_fault("1001", {"kind": "hang", "seconds": 60})
    statuses: list[int] = []

    def miss(i: int) -> None:
        # Distinct pages: every caller is a flight's leader holding an upstream call.
        url = f"{live.url}/music?user=studio&cursor=c{i}"
        statuses.append(requests.get(url, timeout=30).status_code)

    threads = [threading.Thread(target=miss, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: sandbox.state.call_count("1001") == callers)
        still_serving(live)
        assert statuses == []  # every caller is still waiting
    finally:
        sandbox.state.reset()
        for t in threads:
            t.join()
    # Released: the sandbox then refuses the made-up cursors, answered as upstream_rejected.
    assert sorted(set(statuses)) == [400]


@contextlib.contextmanager
def sockets(live: GunicornProcess, count: int, first: bytes) -> Iterator[list[socket.socket]]:
    """`count` connections to the service, each having sent `first`."""
    host, port = live.sock.getsockname()[:2]
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            conn = socket.create_connection((host, port), timeout=5)
            # A small receive buffer, so a never-reading client stops the server's writes soon.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            if first:
                conn.sendall(first)
            opened.append(conn)
        yield opened
    finally:
        for conn in opened:
            conn.close()


def test_slow_header_clients_do_not_block_others(live: GunicornProcess) -> None:
    with sockets(live, 128, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") as slow:
        for conn in slow:
            conn.sendall(b"X-Slow: 1\r\n")  # still no end of headers
        still_serving(live)


def test_idle_connections_do_not_block_others(live: GunicornProcess) -> None:
    with sockets(live, 512, b""):
        still_serving(live)


def test_clients_that_never_read_do_not_block_others(live: GunicornProcess) -> None:
    pipelined = f"GET {CACHED} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 32
    with sockets(live, 64, b"") as stuck:
        for conn in stuck:
            with contextlib.suppress(OSError):  # the server may stop reading first
                conn.settimeout(0.5)
                conn.sendall(pipelined)
        still_serving(live)


def test_single_flight_under_the_gevent_worker(
    live: GunicornProcess, sandbox: SandboxServer
) -> None:
    # The cache's threading.Lock and concurrent.futures.Future, monkey-patched: followers of a
    # flight wait on the leader's future without blocking the worker, and get its page.
    sandbox.state.set_fault("1001", {"kind": "hang", "seconds": 60})
    results: list[requests.Response] = []

    def same_page() -> None:
        results.append(requests.get(f"{live.url}/music?user=studio", timeout=30))

    threads = [threading.Thread(target=same_page) for _ in range(32)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: sandbox.state.call_count("1001") == 1)
        still_serving(live)
    finally:
        sandbox.state.release()
        for t in threads:
            t.join()
    assert [r.status_code for r in results] == [200] * 32
    assert len({r.content for r in results}) == 1
    assert sandbox.state.call_count("1001") == 1
    assert any("collapsed" in r.headers["Cache-Status"] for r in results)
