"""Misses one at a time, the service's and the floor's interleaved request by request.

wrk measures the service's misses and then the floor's, seconds apart: the machine's drift
between the two runs (a fifth over minutes on a shared VM) is as large as what the service
adds. Here each service miss is followed by one pass-through of the floor's, on kept-alive
connections from one client, and the row is the median of the per-pair differences: what
the service adds to a miss, with the drift cancelled pair by pair. The client's own cost is
the same on both sides of each difference.
"""

from __future__ import annotations

import http.client
import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Paired:
    """Medians in ms: the service's miss, the floor's pass-through, and their paired difference."""

    service: float
    floor: float
    difference: float
    pairs: int


def connect(base: str) -> http.client.HTTPConnection:
    host, port = base.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=10)


def timed(conn: http.client.HTTPConnection, path: str) -> float:
    """One GET on a kept-alive connection: its milliseconds, once its whole body is read."""
    started = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    took = time.perf_counter() - started
    if resp.status != 200:
        raise RuntimeError(f"{path}: {resp.status}")
    return took * 1000


def paired(service: str, miss_prefix: str, floor: str, seconds: float) -> Paired:
    """Alternate a distinct miss (miss_prefix + a counter) on the service with floor's GET
    for about `seconds`, after one warm-up pair."""
    own, base = connect(service), connect(floor)
    try:
        timed(own, f"{miss_prefix}w")
        timed(base, "/proxy")
        services: list[float] = []
        floors: list[float] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline or len(services) < 5:
            services.append(timed(own, f"{miss_prefix}{len(services)}"))
            floors.append(timed(base, "/proxy"))
    finally:
        own.close()
        base.close()
    differences = [s - f for s, f in zip(services, floors, strict=True)]
    return Paired(
        statistics.median(services),
        statistics.median(floors),
        statistics.median(differences),
        len(differences),
    )
