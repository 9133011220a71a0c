"""What each part of a miss costs: the service with one part made a no-op, CPU time per miss.

    ./run python -m bench.parts [--misses 780] [--rounds 9]

Starts, on the stub upstream at 0 ms (so one worker's caches stay warm), the service as it is,
one service per part with that part made a no-op, one with all of them off, and the floor's
pass-through (bench/baseline.py), one gevent worker each, all at once. In each round every one
of them answers `--misses` sequential misses (distinct pages) on one kept-alive connection, and
the worker's CPU time (utime + stime from /proc/<pid>/stat) is divided by the misses; the table
is each one's median over the rounds, and what it saves against the service as it is. The
variants are this module's app factory, `bench.parts:create_app()`, told the parts to turn off
in BENCH_PARTS (a measuring device, never a way to run the service).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from flask import Flask

from music_facade.launch import GunicornProcess

from .__main__ import CONFIG, stub_upstream
from .paired import connect, timed

PARTS = {
    "parse": "the upstream page's JSON parse (a parsed page handed over)",
    "reshape": "reshaping and serialising the page's tracks",
    "metrics": "the metrics (a miss's sample writes)",
    "watchdog": "the upstream exchange's deadline watchdog",
    "access": "the access line",
}


def create_app() -> Flask:
    """The service, with the parts BENCH_PARTS names (comma-separated) made no-ops."""
    import music_facade.access as access
    import music_facade.core.music as core_music
    import music_facade.metrics as metrics
    import music_facade.upstream as upstream
    import music_facade.watchdog as watchdog
    from music_facade import create_app as service

    off = set(filter(None, os.environ.get("BENCH_PARTS", "").split(",")))
    if "parse" in off:
        import orjson

        from .upstream import sandbox_page

        parsed = orjson.loads(sandbox_page())
        setattr(upstream, "_parse_page", lambda body: parsed)  # noqa: B010
    if "reshape" in off:
        empty: dict[str, Any] = {"items": [], "next_cursor": None, "has_more": False}
        setattr(core_music, "reshape_page", lambda raw: empty)  # noqa: B010
    if "metrics" in off:
        for name in ("request", "upstream_call", "cache_size", "in_flight"):
            setattr(metrics.Metrics, name, _nothing)
        setattr(metrics.Metrics, "page", lambda self, status: metrics.cache_outcome(status))  # noqa: B010
    if "watchdog" in off:
        setattr(watchdog.Watchdog, "exchange", lambda self, seconds: _Unwatched())  # noqa: B010
    if "access" in off:
        setattr(access, "log_access", _nothing)  # noqa: B010
    return service()


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class _Unwatched:
    """An exchange no watchdog bounds."""

    expired = False

    def __enter__(self) -> _Unwatched:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def remaining(self) -> float:
        return 30.0

    def attach(self, sock: object) -> None:
        return None


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_miss(base: str, pid: int, paths: list[str]) -> float:
    """ms of the worker's CPU per request, after 20 unmeasured ones."""
    conn = connect(base)
    try:
        for path in paths[:20]:
            timed(conn, path)
        before = _cpu_seconds(pid)
        for path in paths[20:]:
            timed(conn, path)
        return (_cpu_seconds(pid) - before) / (len(paths) - 20) * 1000
    finally:
        conn.close()


def main() -> None:
    """Start every variant and the floor, measure the rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", type=int, default=780)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    variants = {"the service as it is": "", **{desc: part for part, desc in PARTS.items()}}
    variants["none of these parts"] = ",".join(PARTS)
    started: list[GunicornProcess] = []
    with stub_upstream() as upstream, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "service.toml"
        config.write_text(CONFIG.format(base_url=upstream + "/v1/tempolor", extra=""))
        env = {"MUSIC_CONFIG": str(config), "USEAPI_TOKEN": "bench-token"}
        body, headers = Path(tmp) / "page.json", Path(tmp) / "headers.json"
        body.write_bytes(b"{}")
        headers.write_text(json.dumps({"/music": [], "/keyed": []}))
        floor_env = {
            **env,
            "BENCH_BODY_FILE": str(body),
            "BENCH_HEADERS_FILE": str(headers),
            "BENCH_UPSTREAM_URL": upstream + "/v1/tempolor/music/?user_id=d0&type=song",
        }
        try:
            servers: dict[str, GunicornProcess] = {}
            for name, parts in variants.items():
                log = Path(tmp) / f"{len(servers)}.log"
                servers[name] = GunicornProcess(
                    {**env, "BENCH_PARTS": parts}, log_path=log, app="bench.parts:create_app()"
                ).start()
                started.append(servers[name])
            floor_name = "the floor (plain WSGI + urllib3 pass-through)"
            servers[floor_name] = GunicornProcess(
                floor_env, log_path=Path(tmp) / "floor.log", app="bench.baseline:create_app()"
            ).start()
            started.append(servers[floor_name])
            cpu: dict[str, list[float]] = {name: [] for name in servers}
            for rnd in range(args.rounds):
                for tag, (name, proc) in enumerate(servers.items()):
                    page = f"/music?user=page&cursor=v{tag}r{rnd}x"
                    paths = [
                        "/proxy" if name == floor_name else f"{page}{i}" for i in range(args.misses)
                    ]
                    cpu[name].append(_per_miss(proc.url, proc.worker_pids()[0], paths))
        finally:
            for proc in started:
                proc.stop()
    whole = statistics.median(cpu["the service as it is"])
    print(f"one gevent worker each, {args.misses} misses a round, median of {args.rounds} rounds")
    print("| variant | CPU per miss | saves |")
    print("|---|---|---|")
    for name, values in cpu.items():
        med = statistics.median(values)
        saves = "" if name.startswith(("the service", "the floor")) else f"{whole - med:.3f} ms"
        label = name if name.startswith(("the service", "none", "the floor")) else f"without {name}"
        print(f"| {label} | {med:.3f} ms | {saves} |")


if __name__ == "__main__":
    main()
