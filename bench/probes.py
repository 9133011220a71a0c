"""Hostile-client probes: while many sockets misbehave, how slow is a normal request?

Each probe opens its sockets to the service on loopback, brings them into their bad state,
then times a sample of ordinary requests (each on a new connection, like a load balancer's
health check) to /healthz and to a cached page, and closes everything. Bounded in time: the
sockets are held for the few seconds the sample takes.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

SAMPLE = 40


@dataclass(frozen=True)
class ProbeResult:
    """The worst and the median latency (ms) of the sample, and whether all answered 200."""

    worst: float
    median: float
    ok: bool


def timed_get(host: str, port: int, path: str, timeout: float = 10.0) -> tuple[float, int]:
    """One request on a new connection: (milliseconds, status); status 0 when it failed."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        status = resp.status
    except OSError:
        status = 0
    finally:
        conn.close()
    return (time.perf_counter() - started) * 1000, status


def sample(host: str, port: int, paths: list[str]) -> ProbeResult:
    """Time SAMPLE requests spread over paths."""
    times, ok = [], True
    for i in range(SAMPLE):
        ms, status = timed_get(host, port, paths[i % len(paths)])
        times.append(ms)
        ok = ok and status == 200
    times.sort()
    return ProbeResult(times[-1], times[len(times) // 2], ok)


@contextlib.contextmanager
def _open(host: str, port: int, count: int) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            conn = socket.create_connection((host, port), timeout=5)
            opened.append(conn)
        yield opened
    finally:
        for conn in opened:
            conn.close()


def slow_headers(host: str, port: int, paths: list[str], count: int = 256) -> ProbeResult:
    """`count` connections that have sent part of a request's headers and go quiet."""
    with _open(host, port, count) as conns:
        for conn in conns:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nX-Slow: ")
        return sample(host, port, paths)


def never_read(
    host: str, port: int, paths: list[str], pipelined: str, count: int = 256, depth: int = 64
) -> ProbeResult:
    """`count` connections that pipeline `depth` requests for `pipelined` and never read."""
    request = f"GET {pipelined} HTTP/1.1\r\nHost: probe\r\n\r\n".encode() * depth
    with _open(host, port, count) as conns:
        for conn in conns:
            conn.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                conn.send(request)
        return sample(host, port, paths)


def idle(host: str, port: int, paths: list[str], count: int = 1000) -> ProbeResult:
    """`count` connections that connect and send nothing."""
    with _open(host, port, count):
        return sample(host, port, paths)
