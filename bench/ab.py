"""A miss on this tree against a miss on another, interleaved in one run.

    ./run python -m bench.ab OTHER_TREE [--redis] [--pairs 500]

Two runs of the bench minutes apart differ by as much as a change to the miss path does (the
machine's speed drifts). This starts the service from both trees (OTHER_TREE: a checkout with
its own `.venv`, e.g. `git worktree add` of the commit to compare and `./run` once there), and
the floor's pass-through (bench/baseline.py), all on the stub upstream at 50 ms, and alternates
one miss on each tree (which goes first alternates too) with one floor request, one at a time.
It prints each tree's median difference to the floor, and the median of the paired
differences between the trees.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from music_facade.launch import GunicornProcess

from .__main__ import CONFIG, shared_store, stub_upstream
from .paired import connect, timed

DIRECT_PATH = "/v1/tempolor/music/?user_id=d50&type=song"


def main() -> None:
    """Start both trees' services and the floor, alternate the misses, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other tree (a checkout with a .venv)")
    parser.add_argument("--redis", action="store_true", help="both services on one redis-server")
    parser.add_argument("--pairs", type=int, default=500)
    args = parser.parse_args()
    this = Path(__file__).resolve().parent.parent
    trees = {"other": args.other.resolve(), "this": this}
    started: list[GunicornProcess] = []
    with (
        stub_upstream() as upstream,
        tempfile.TemporaryDirectory() as tmp,
        shared_store(args.redis) as redis_toml,
    ):
        try:
            urls: dict[str, str] = {}
            for name, tree in trees.items():
                config = Path(tmp) / f"{name}.toml"
                config.write_text(
                    CONFIG.format(base_url=upstream + "/v1/tempolor", extra=redis_toml)
                )
                command = [
                    str(tree / ".venv/bin/python"), "-m", "gunicorn",
                    "-c", str(tree / "music_facade/gunicorn_conf.py"), "music_facade:create_app()",
                ]  # fmt: skip
                env = {"MUSIC_CONFIG": str(config), "USEAPI_TOKEN": "bench-token"}
                log = Path(tmp) / f"{name}.log"
                started.append(
                    GunicornProcess(env, workers=2, log_path=log, command=command, cwd=tree).start()
                )
                urls[name] = started[-1].url
            floor_config = Path(tmp) / "floor.toml"
            floor_config.write_text(CONFIG.format(base_url=upstream + "/v1/tempolor", extra=""))
            body, headers = Path(tmp) / "page.json", Path(tmp) / "headers.json"
            body.write_bytes(b"{}")
            headers.write_text(json.dumps({"/music": [], "/keyed": []}))
            floor_env = {
                "MUSIC_CONFIG": str(floor_config),
                "USEAPI_TOKEN": "bench-token",
                "BENCH_BODY_FILE": str(body),
                "BENCH_HEADERS_FILE": str(headers),
                "BENCH_UPSTREAM_URL": upstream + DIRECT_PATH,
            }
            log = Path(tmp) / "floor.log"
            started.append(
                GunicornProcess(
                    floor_env, workers=2, log_path=log, app="bench.baseline:create_app()"
                ).start()
            )
            conns = {name: connect(url) for name, url in urls.items()}
            floor = connect(started[-1].url)
            took: dict[str, list[float]] = {"other": [], "this": [], "floor": []}
            tag = time.time_ns()
            for i in range(args.pairs):
                for name in ("other", "this") if i % 2 else ("this", "other"):
                    # Each tree its own pages: with Redis, neither finds the other's.
                    path = f"/music?user=fast&cursor=ab{tag}{name}x{i}"
                    took[name].append(timed(conns[name], path))
                took["floor"].append(timed(floor, "/proxy"))
        finally:
            for proc in started:
                proc.stop()

    def over(a: list[float], b: list[float]) -> float:
        return statistics.median(x - y for x, y in zip(a, b, strict=True))

    print(f"{args.pairs} misses each, 50 ms upstream, {'Redis' if args.redis else 'no Redis'}")
    print(f"other tree ({trees['other']}) - floor: {over(took['other'], took['floor']):.3f} ms")
    print(f"this tree - floor: {over(took['this'], took['floor']):.3f} ms")
    print(f"this - other, paired: {over(took['this'], took['other']):.3f} ms")


if __name__ == "__main__":
    main()
