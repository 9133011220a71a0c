"""Benchmark: requests per second through gunicorn, as ratios to /healthz measured in the same run.

    ./run bench [--seconds 2] [--rounds 3] [--clients 8]

Starts the sandbox upstream and three services under gunicorn (cache on; cache off; cache on
with a client key and a rate limit that is never reached), then
measures each scenario in alternating rounds with keep-alive clients on loopback. The machines
are shared and noisy, so the numbers that mean something are the ratios to /healthz, the
cheapest request the same stack can answer, measured in the same rounds.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from service.clients import mint_key
from service.launch import GunicornProcess
from service.sandbox import SandboxServer

CONFIG = """
[upstream]
base_url = "{base_url}"
retries = 0
[users]
studio = "1001"
[cache]
ttl = {ttl}
{extra}"""

CLIENT = """
[[clients]]
name = "bench"
key_sha256 = "{digest}"
users = ["studio"]
rate_limit = "1000000/minute"
"""


def load(url: str, path: str, headers: dict[str, str], seconds: float, clients: int) -> float:
    """Requests per second that `clients` keep-alive connections get for `path` in `seconds`."""
    parts = urlsplit(url)
    counts = [0] * clients
    deadline = time.monotonic() + seconds
    failures: list[str] = []

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        try:
            while time.monotonic() < deadline:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status not in (200, 304):
                    failures.append(f"{path}: {resp.status}")
                    return
                counts[i] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(failures[0])
    return sum(counts) / (time.monotonic() - started)


def main() -> None:
    """Run every scenario and print a table of ratios to the /healthz baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    with SandboxServer() as sandbox, tempfile.TemporaryDirectory() as tmp:
        key, digest = mint_key()
        services = {}
        for name, ttl, extra in (
            ("cached", 3600, ""),
            ("uncached", 0, ""),
            ("keyed", 3600, CLIENT.format(digest=digest)),
        ):
            config = Path(tmp) / f"{name}.toml"
            config.write_text(CONFIG.format(base_url=sandbox.base_url, ttl=ttl, extra=extra))
            env = {"MUSIC_CONFIG": str(config), "USEAPI_TOKEN": sandbox.token}
            services[name] = GunicornProcess(env, workers=1).start()
        try:
            cached, uncached = services["cached"].url, services["uncached"].url
            keyed = services["keyed"].url
            auth = {"Authorization": f"Bearer {key}"}
            page = "/music?user=studio&type=song"
            etag = _etag(cached, page)
            scenarios: dict[str, Callable[[], float]] = {
                "GET /healthz (baseline)": lambda: load(
                    cached, "/healthz", {}, args.seconds, args.clients
                ),
                "GET /music, cache hit": lambda: load(cached, page, {}, args.seconds, args.clients),
                "GET /music, cache hit, client key + rate limit": lambda: load(
                    keyed, page, auth, args.seconds, args.clients
                ),
                "GET /music, If-None-Match → 304": lambda: load(
                    cached, page, {"If-None-Match": etag}, args.seconds, args.clients
                ),
                "GET /music, cache off (upstream + reshape)": lambda: load(
                    uncached, page, {}, args.seconds, args.clients
                ),
            }
            results: dict[str, list[float]] = {name: [] for name in scenarios}
            for _ in range(args.rounds):
                for name, run in scenarios.items():
                    results[name].append(run())
        finally:
            for service in services.values():
                service.stop()

    base = statistics.median(results["GET /healthz (baseline)"])
    print(
        f"{args.rounds} rounds x {args.seconds:g} s, {args.clients} keep-alive clients, "
        "1 gunicorn gthread worker x 8 threads, loopback"
    )
    print(f"{'scenario':<45} {'median req/s':>12} {'ratio to /healthz':>18}")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:<45} {median:>12.0f} {median / base:>18.2f}")


def _etag(url: str, path: str) -> str:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.headers["ETag"]
    finally:
        conn.close()


if __name__ == "__main__":
    main()
