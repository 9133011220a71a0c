"""Benchmark: each figure of docs/performance.md as a ratio to a baseline measured in the same run.

    ./run bench [--seconds 3] [--rounds 5] [--redis] [--only hits|miss|mirror|events]

Starts a stub upstream (bench/upstream.py: any page, after the delay its user id names), the
service under deploy/gunicorn.conf.py (production worker class and settings, 2 workers), the
same with a client key and rate limit, and bare Flask under the same configuration replaying
the service's hit answers: the same headers and body, captured from the service at start, and
the body alone (bench/baseline.py). Then, in alternating rounds, each row with its baseline next
to it; the table shows each row's median and its spread (min-max) over rounds. Then the three
hostile-client probes. The mirror's rows (bench/mirror.py: 100,000 tracks on SQLite and on
PostgreSQL) run first, or alone with --only mirror; then the change stream's (bench/events.py:
1,000 /events streams on one worker, webhook deliveries), or alone with --only events. Load
comes from wrk (see bench/wrk.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from music_facade.auth import mint_key
from music_facade.launch import GunicornProcess

from . import probes
from .paired import paired
from .wrk import WrkResult, wrk

CONFIG = """
[upstream]
base_url = "{base_url}"
retries = 0
[users]
page = "d0"
fast = "d50"
mid = "d200"
slow = "d2000"
[cache]
ttl = 3600
{extra}"""

CLIENT = """
[[clients]]
name = "bench"
key_sha256 = "{digest}"
users = ["*"]
rate_limit = "1000000/minute"
"""
# With Redis the keyed service leases its budget (docs/configuration.md [limits]); the exact
# mode, a Redis round trip per request, is measured beside it.
LEASED = """
[limits]
sync_interval = 1
"""

PAGE = "/music?user=page"
DIRECT_PATH = "/v1/tempolor/music/?user_id=d50&type=song"  # the stub, 50 ms
SLOW_CALLERS = 64
MID_CALLERS = 64
MID_DELAY = 0.2


@contextmanager
def stub_upstream() -> Iterator[str]:
    """bench/upstream.py in a child process; yields its base URL."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=2048)
    # Accepted sockets inherit it: gevent's server writes headers and body separately, and
    # with Nagle the body would wait for the client's delayed ACK (40 ms on Linux).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    host, port = sock.getsockname()[:2]
    cmd = [sys.executable, "-m", "bench.upstream", "--fd", str(sock.fileno())]
    proc = subprocess.Popen(cmd, pass_fds=(sock.fileno(),))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get(f"http://{host}:{port}", "/v1/tempolor/music/?user_id=d0")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield f"http://{host}:{port}"
    finally:
        proc.terminate()
        proc.wait()
        sock.close()


@contextmanager
def shared_store(wanted: bool) -> Iterator[str]:
    """A redis-server on loopback when wanted; yields the [redis] TOML for the service."""
    if not wanted:
        yield ""
        return
    from tests.support.redis_server import RedisServer

    with RedisServer() as server:
        yield f'\n[redis]\nurl = "{server.url}"\nprefix = "bench"\n'


def get(base: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    """One GET on a new connection; the body of a 200, else an error."""
    return answer(base, path, headers)[1]


# Headers the server adds or computes itself: not replayed by the baseline.
_SERVER_HEADERS = frozenset({"server", "date", "connection", "content-length", "transfer-encoding"})


def answer(
    base: str, path: str, headers: dict[str, str] | None = None
) -> tuple[list[tuple[str, str]], bytes]:
    """One GET on a new connection: a 200's headers (the app's own) and body, else an error."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: {resp.status}")
        own = [(k, v) for k, v in resp.getheaders() if k.lower() not in _SERVER_HEADERS]
        return own, body
    finally:
        conn.close()


def rss_mb(pid: int) -> float:
    """A process's resident set size in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Table:
    """Rows of per-round values and their baselines, printed as medians with spread."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str, list[float], list[float]]] = {}

    def add(self, name: str, value: float, ratio: float, unit: str, target: str) -> None:
        self.rows.setdefault(name, (unit, target, [], []))
        self.rows[name][2].append(value)
        self.rows[name][3].append(ratio)

    def print(self) -> None:
        print("| figure | median (min-max) | ratio: median (min-max) | target |")
        print("|---|---|---|---|")
        for name, (unit, target, values, ratios) in self.rows.items():
            v, r = _spread(values, unit), _spread(ratios, "")
            print(f"| {name} | {v} | {r} | {target} |")


def _spread(values: list[float], unit: str) -> str:
    fmt = "{:.0f}" if unit in ("req/s", "MB") or statistics.median(values) >= 100 else "{:.2f}"
    med, lo, hi = (fmt.format(x) for x in (statistics.median(values), min(values), max(values)))
    return f"{med} {unit} ({lo}-{hi})".replace("  ", " ").strip()


def main() -> None:
    """Start everything, run the rounds and the probes, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--redis",
        action="store_true",
        help="configure the service with a real redis-server (the fleet's shared state)",
    )
    parser.add_argument(
        "--only",
        choices=["hits", "miss", "mirror", "events"],
        help="just the hit rows, the miss row, the mirror's or the change stream's rows (for "
        "iterating on one path)",
    )
    args = parser.parse_args()
    secs = args.seconds
    if args.only in (None, "mirror"):
        # The mirror's rows need no stub upstream: they run first, on their own servers.
        from .mirror import run as mirror_rows

        mirror_rows(args.rounds, secs, args.workers)
        if args.only == "mirror":
            return
    if args.only in (None, "events"):
        # /events and webhooks: their own service (1 worker) on the sandbox and a mirror.
        from .events import run as event_rows

        event_rows(args.rounds)
        if args.only == "events":
            return

    with (
        stub_upstream() as upstream,
        tempfile.TemporaryDirectory() as tmp,
        shared_store(args.redis) as redis_toml,
    ):
        key, digest = mint_key()
        base_url = upstream + "/v1/tempolor"
        envs = {}
        client = CLIENT.format(digest=digest)
        services = [("service", ""), ("keyed", client + LEASED)]
        if args.redis:
            services.append(("exact", client))
        for name, extra in services:
            extra += redis_toml
            config = Path(tmp) / f"{name}.toml"
            config.write_text(CONFIG.format(base_url=base_url, extra=extra))
            envs[name] = {"MUSIC_CONFIG": str(config), "USEAPI_TOKEN": "bench-token"}
        started: list[GunicornProcess] = []

        def start(env: dict[str, str], workers: int, app: str) -> GunicornProcess:
            log = Path(tmp) / f"gunicorn-{len(started)}.log"
            started.append(GunicornProcess(env, workers=workers, log_path=log, app=app).start())
            return started[-1]

        try:
            svc = start(envs["service"], args.workers, "music_facade:create_app()")
            keyed = start(envs["keyed"], args.workers, "music_facade:create_app()")
            exact = (
                start(envs["exact"], args.workers, "music_facade:create_app()").url
                if args.redis
                else None
            )
            auth = {"Authorization": f"Bearer {key}"}
            get(svc.url, PAGE)  # a miss: the page is cached from now on
            get(keyed.url, PAGE, auth)
            if exact is not None:
                get(exact, PAGE, auth)
            # The baseline replays a real hit's answers: the same headers and body.
            hit_headers, page = answer(svc.url, PAGE)
            keyed_headers, keyed_page = answer(keyed.url, PAGE, auth)
            assert page == keyed_page
            body, header_file = Path(tmp) / "page.json", Path(tmp) / "headers.json"
            body.write_bytes(page)
            header_file.write_text(json.dumps({"/music": hit_headers, "/keyed": keyed_headers}))
            bare_env = {
                **envs["service"],
                "BENCH_BODY_FILE": str(body),
                "BENCH_HEADERS_FILE": str(header_file),
                "BENCH_UPSTREAM_URL": upstream + DIRECT_PATH,
            }
            bare = start(bare_env, args.workers, "bench.baseline:create_app()")
            for route, headers in (("/music", hit_headers), ("/keyed", keyed_headers)):
                replayed, replayed_body = answer(bare.url, route)
                assert replayed_body == page
                assert sorted(replayed) == sorted(headers), (replayed, headers)
            table = Table()
            for rnd in range(args.rounds):
                run_round(
                    rnd, secs, table, svc.url, keyed.url, bare.url, upstream, auth, args.only, exact
                )
                print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
            if args.only is None:
                rss_row(table, envs["service"], bare, start)
            print(
                f"\n{args.rounds} rounds x {secs:g} s per measurement, wrk -t1, loopback; "
                f"gunicorn -c deploy/gunicorn.conf.py, {args.workers} workers "
                f"(music_facade.worker.ProblemWorker, gevent); {os.cpu_count()} CPUs; "
                f"{'Redis: a local redis-server' if args.redis else 'no Redis'}\n"
            )
            table.print()
            print()
            if args.only is None:
                probe_rows(svc.url)
        finally:
            for proc in started:
                proc.stop()


def run_round(
    rnd: int,
    secs: float,
    table: Table,
    svc: str,
    keyed: str,
    bare: str,
    upstream: str,
    auth: dict[str, str],
    only: str | None = None,
    exact: str | None = None,
) -> None:
    """One round of every row; odd rounds run each baseline first. exact: the keyed service
    counting every request in Redis, when the run has Redis."""

    def pair(row: Callable[[], WrkResult], base: Callable[[], WrkResult]) -> tuple[WrkResult, ...]:
        if rnd % 2:
            b = base()
            return row(), b
        r = row()
        return r, base()

    if only == "hits":
        hit_rows(rnd, secs, table, svc, keyed, bare, auth, pair, exact)
        return
    if only == "miss":
        miss_row(rnd, secs, table, svc, upstream, bare, pair)
        return

    # 1. A cached page while SLOW_CALLERS callers wait on a 2 s upstream (distinct pages).
    def loaded() -> WrkResult:
        load = subprocess.Popen(
            [
                "wrk", "-t1", f"-c{SLOW_CALLERS}", f"-d{secs + 3:g}s", "--timeout=10s",
                "-s", _lua(), svc, f"/music?user=slow&cursor=r{rnd}s{time.time_ns()}x",
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(2.5)  # the first 2 s calls are in flight, the next ones queued behind
            return wrk(svc + PAGE, secs, 1)
        finally:
            load.wait()

    hot, quiet = pair(loaded, lambda: wrk(svc + PAGE, secs, 1))
    table.add(
        "cached page p99 while 64 callers wait on a 2 s upstream (ratio: to p99 without them)",
        hot.p99,
        hot.p99 / quiet.p99,
        "ms",
        "p99 < 20 ms",
    )
    table.add(
        "  … its max",
        hot.max,
        hot.max / quiet.max,
        "ms",
        "",
    )
    # 2. MID_CALLERS concurrent distinct misses on a 200 ms upstream: throughput ÷ ideal.
    # Throughput by Little's law (callers ÷ mean latency): wrk's own count leaves out the
    # wave of requests still in flight when it stops, up to a tenth of a 2 s run.
    ideal = MID_CALLERS / MID_DELAY
    mid = wrk(svc, secs, MID_CALLERS, distinct_prefix=f"/music?user=mid&cursor=r{rnd}m")
    if mid.bad:
        raise RuntimeError(f"failed responses in the slow-upstream run: {mid}")
    mid_rps = MID_CALLERS / (mid.avg / 1000)
    table.add(
        f"64 concurrent distinct pages, 200 ms upstream: req/s (ratio: to ideal {ideal:.0f})",
        mid_rps,
        mid_rps / ideal,
        "req/s",
        ">= 0.9",
    )
    hit_rows(rnd, secs, table, svc, keyed, bare, auth, pair, exact)
    miss_row(rnd, secs, table, svc, upstream, bare, pair)


Pair = Callable[[Callable[[], WrkResult], Callable[[], WrkResult]], tuple[WrkResult, ...]]


def miss_row(
    rnd: int, secs: float, table: Table, svc: str, upstream: str, bare: str, pair: Pair
) -> None:
    """Row 5: a miss on a 50 ms upstream, one at a time, against calling the upstream directly;
    and what a plain WSGI proxy adds passing the same answer through with urllib3, under the same
    gunicorn settings (the stack's floor)."""
    direct_url = upstream + DIRECT_PATH
    miss, direct = pair(
        lambda: wrk(svc, secs, 1, distinct_prefix=f"/music?user=fast&cursor=r{rnd}f"),
        lambda: wrk(direct_url, secs, 1, headers={"Authorization": "Bearer bench-token"}),
    )
    floor = wrk(bare + "/proxy", secs, 1)
    for result in (miss, direct, floor):
        if result.bad:
            raise RuntimeError(f"failed responses in a miss run: {result}")
    rows = (
        ("miss, 50 ms upstream: added p50 ms (ratio: service p50 ÷ direct p50)", miss, "<= 1 ms"),
        ("  plain WSGI + urllib3 passing the answer through: added p50 ms", floor, ""),
    )
    for name, result, target in rows:
        table.add(name, result.p50 - direct.p50, result.p50 / direct.p50, "ms", target)
    # What the service itself costs a miss: each miss paired with a pass-through of the floor's
    # made right after it (bench/paired.py), so the machine's drift cancels pair by pair.
    both = paired(svc, f"/music?user=fast&cursor=r{rnd}p{time.time_ns()}x", bare, 2 * secs)
    table.add(
        "miss: service − floor, median of paired differences, ms (ratio: service ÷ floor p50)",  # noqa: RUF001
        both.difference,
        both.service / both.floor,
        "ms",
        "<= 0.4 ms (no Redis), <= 0.8 ms (Redis)",
    )


def hit_rows(
    rnd: int,
    secs: float,
    table: Table,
    svc: str,
    keyed: str,
    bare: str,
    auth: dict[str, str],
    pair: Pair,
    exact: str | None = None,
) -> None:
    """Rows 3 and 4: cache hits, plain and keyed, each against bare Flask sending the same
    response in the same round; then both against bare Flask sending the body alone. With
    Redis, the keyed hit's limit is leased, and exact (a round trip per request) beside it."""
    hit, base = pair(lambda: wrk(svc + PAGE, secs, 32), lambda: wrk(bare + "/music", secs, 32))
    key_hit, key_base = pair(
        lambda: wrk(keyed + PAGE, secs, 32, headers=auth), lambda: wrk(bare + "/keyed", secs, 32)
    )
    body_only = wrk(bare + "/body", secs, 32)
    for result in (hit, base, key_hit, key_base, body_only):
        if result.bad:
            raise RuntimeError(f"failed responses in a hit run: {result}")
    table.add(
        "cache hit req/s (ratio: to bare Flask sending the same response, same gunicorn settings)",
        hit.rps,
        hit.rps / base.rps,
        "req/s",
        ">= 1.0",
    )
    table.add(
        "keyed cache hit (client key + rate limit) req/s (ratio: to bare Flask, same response)",
        key_hit.rps,
        key_hit.rps / key_base.rps,
        "req/s",
        ">= 0.9",
    )
    if exact is not None:
        exact_hit = wrk(exact + PAGE, secs, 32, headers=auth)
        if exact_hit.bad:
            raise RuntimeError(f"failed responses in a hit run: {exact_hit}")
        table.add(
            "  keyed cache hit, exact limits ([limits] sync_interval = 0; ratio: to bare Flask)",
            exact_hit.rps,
            exact_hit.rps / key_base.rps,
            "req/s",
            "",
        )
    table.add("  bare Flask, the hit's response (baseline)", base.rps, 1.0, "req/s", "")
    table.add("  bare Flask, the keyed hit's response (baseline)", key_base.rps, 1.0, "req/s", "")
    table.add(
        "  cache hit (ratio: to bare Flask sending the body alone, without the service's headers)",
        hit.rps,
        hit.rps / body_only.rps,
        "req/s",
        "",
    )
    table.add(
        "  keyed cache hit (ratio: to bare Flask sending the body alone)",
        key_hit.rps,
        key_hit.rps / body_only.rps,
        "req/s",
        "",
    )


def rss_row(
    table: Table,
    env: dict[str, str],
    bare: GunicornProcess,
    start: Callable[[dict[str, str], int, str], GunicornProcess],
) -> None:
    """RSS of one worker holding 1024 cached pages, against a bare Flask worker's."""
    one = start(env, 1, "music_facade:create_app()")
    host, port = one.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    for i in range(1024):
        conn.request("GET", f"/music?user=page&cursor=rss{i}")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    conn.close()
    worker = rss_mb(one.worker_pids()[0])
    base = max(rss_mb(pid) for pid in bare.worker_pids())
    table.add(
        "RSS per worker with 1024 cached pages, MB (ratio: to a bare Flask worker)",
        worker,
        worker / base,
        "MB",
        "<= 120 MB",
    )


def probe_rows(url: str) -> None:
    """The three hostile-client probes against the service."""
    host, port = url.removeprefix("http://").split(":")
    paths = ["/healthz", PAGE]
    print(f"hostile-client probes: worst (median) of {probes.SAMPLE} requests to {paths}")
    print("| probe | worst ms | median ms | all 200 | target |")
    print("|---|---|---|---|---|")
    runs: list[tuple[str, Callable[[], probes.ProbeResult]]] = [
        ("256 slow-header sockets", lambda: probes.slow_headers(host, int(port), paths)),
        (
            "256 sockets pipelining /openapi.yaml, never reading",
            lambda: probes.never_read(host, int(port), paths, "/openapi.yaml"),
        ),
        ("1000 idle connections", lambda: probes.idle(host, int(port), paths)),
    ]
    for name, run in runs:
        result = run()
        print(
            f"| {name} | {result.worst:.1f} | {result.median:.1f} | {result.ok} | worst < 250 ms |"
        )


_LUA_PATH: list[str] = []


def _lua() -> str:
    """A file holding wrk's distinct-paths script (written once per run)."""
    if not _LUA_PATH:
        from .wrk import DISTINCT_LUA

        fd, path = tempfile.mkstemp(suffix=".lua")
        with os.fdopen(fd, "w") as f:
            f.write(DISTINCT_LUA)
        _LUA_PATH.append(path)
    return _LUA_PATH[0]


if __name__ == "__main__":
    main()
