"""The mirror's rows: 100,000 tracks across 3 aliases, on SQLite and on PostgreSQL.

    ./run bench --only mirror

For each database: the mirror is filled with the sandbox's generated accounts (the same records
the sandbox serves, written straight into the store), the service runs under gunicorn's gevent
worker with it, and bare Flask under the same settings replays the service's own /tracks answer
(headers and body), so the first row's ratio is what the service adds. The last row syncs an
unchanged 100,000-track account once and counts the upstream calls it made.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from music_facade.config import MirrorSettings, Secret, UpstreamSettings
from music_facade.core.tracks import dump_track
from music_facade.launch import GunicornProcess
from music_facade.mirror import Entry, Store
from music_facade.mirror.sync import Syncer
from music_facade.sandbox import SandboxServer
from music_facade.sandbox.data import INSTRUMENTAL, SONG
from music_facade.sandbox.synthetic import SyntheticBatch
from music_facade.upstream import UpstreamClient

from .__main__ import Table, answer
from .wrk import wrk

ACCOUNTS = {"alpha": ("9001", 20_000, 14_000), "beta": ("9002", 18_000, 15_000),
            "gamma": ("9003", 17_000, 16_000)}  # fmt: skip  # alias: user_id, songs, instrumentals
BIG = ("9100", 50_000, 50_000)
CONFIG = """
[upstream]
base_url = "{base_url}"
[users]
{users}
[mirror]
database = "{database}"
interval = 3600
reconcile_every = 864000
"""
Q_PATH = "/tracks?q=neon%20har&status=completed&sort=-bpm"
# The service keeps each rendered answer for a while: a query repeated by wrk would measure that
# memo, not the database. A bound every track meets, different in each request (wrk appends a
# counter: bpm_max=9991, 9992, ...), makes every request a new query read from the database.
UNCACHED = "&bpm_max=999"


def records(sandbox: SandboxServer, user_id: str, type_: str, count: int) -> Iterator[Any]:
    """The records the sandbox serves for a generated account, newest first."""
    headers = {"Authorization": f"Bearer {sandbox.token}"}
    params = {"user_id": user_id, "type": type_}
    page = requests.get(sandbox.base_url + "/music/", params=params, headers=headers, timeout=10)
    newest = page.json()["records"][0]["createTime"]
    batch = SyntheticBatch(user_id, type_, count, newest)
    return (batch.record(i) for i in range(count))


def fill(store: Store, sandbox: SandboxServer, alias: str, account: tuple[str, int, int]) -> None:
    """Write an account's generated records into the store, marked as completely synced."""
    user_id, songs, instrumentals = account
    for type_, count in ((SONG, songs), (INSTRUMENTAL, instrumentals)):
        batch: list[Entry] = []
        for record in records(sandbox, user_id, type_, count):
            track = dump_track(record)
            batch.append(Entry(track["id"], record["job_id"], track, record["updateTime"]))
            if len(batch) == 2000:
                store.write(alias, type_, batch)
                batch = []
        if batch:
            store.write(alias, type_, batch)
        now = time.time()
        store.save_state(alias, type_, backfilled=True, last_complete=now, last_reconcile=now)


@contextmanager
def databases(tmp: Path) -> Iterator[Iterator[tuple[str, str]]]:
    """(name, URL) of an empty SQLite file, then of a real PostgreSQL's new database."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.postgres_server import PostgresServer  # the tests' own server

    with PostgresServer() as pg:

        def each() -> Iterator[tuple[str, str]]:
            yield "SQLite", f"sqlite:///{tmp / 'mirror.db'}"
            yield "PostgreSQL", pg.database("bench")

        yield each()


def run(rounds: int, secs: float, workers: int) -> None:
    """Every row on each database; prints the table."""
    with tempfile.TemporaryDirectory() as tmp_name, SandboxServer() as sandbox:
        tmp = Path(tmp_name)
        for user_id, songs, instrumentals in [*ACCOUNTS.values(), BIG]:
            body = {"songs": songs, "instrumentals": instrumentals}
            url = f"{sandbox.origin}/_sandbox/accounts/{user_id}/generate"
            requests.post(url, json=body, timeout=30).raise_for_status()
        table = Table()
        with databases(tmp) as each:
            for name, database in each:
                print(f"{name}: filling the mirror", file=sys.stderr)
                store = Store.open(database)
                for alias, account in ACCOUNTS.items():
                    fill(store, sandbox, alias, account)
                store.close()
                rows(name, database, sandbox, tmp, table, rounds, secs, workers)
                sync_row(name, database, sandbox, table)
        print(
            f"\n{rounds} rounds x {secs:g} s per measurement, wrk -t1, loopback; 100,000 tracks "
            f"in 3 aliases; gunicorn, {workers} workers (gevent); {os.cpu_count()} CPUs\n"
        )
        table.print()


def rows(
    name: str,
    database: str,
    sandbox: SandboxServer,
    tmp: Path,
    table: Table,
    rounds: int,
    secs: float,
    workers: int,
) -> None:
    """/tracks first page (ratio to bare Flask), a filtered search's p99, a 10,000-track walk."""
    users = "\n".join(f'{alias} = "{a[0]}"' for alias, a in ACCOUNTS.items())
    config = tmp / f"{name}.toml"
    config.write_text(CONFIG.format(base_url=sandbox.base_url, users=users, database=database))
    env = {"MUSIC_CONFIG": str(config), "USEAPI_TOKEN": sandbox.token}
    with GunicornProcess(env, workers=workers, log_path=tmp / f"{name}.log") as svc:
        headers, body = answer(svc.url, "/tracks")
        (tmp / "body").write_bytes(body)
        (tmp / "headers.json").write_text(json.dumps({"/music": headers, "/keyed": headers}))
        bare_env = {**env, "BENCH_BODY_FILE": str(tmp / "body"),
                    "BENCH_HEADERS_FILE": str(tmp / "headers.json")}  # fmt: skip
        with GunicornProcess(bare_env, workers=workers, app="bench.baseline:create_app()") as bare:
            for rnd in range(rounds):
                first = wrk(svc.url + "/tracks", secs, 32)
                base = wrk(bare.url + "/music", secs, 32)
                table.add(
                    f"{name}: /tracks first page req/s (ratio: to bare Flask, same response)",
                    first.rps,
                    first.rps / base.rps,
                    "req/s",
                    ">= 0.5",
                )
                settle(svc.url)
                search = wrk(svc.url, secs, 1, distinct_prefix=Q_PATH + UNCACHED)
                table.add(
                    f"{name}: /tracks q (two words) + status + sort=-bpm, p99 ms",
                    search.p99,
                    search.p99 / 25,
                    "ms",
                    "< 25 ms (ratio: to 25)",
                )
                settle(svc.url)
                walked, seconds = walk(svc.url, rnd)
                table.add(
                    f"{name}: walk every page of a {walked}-track filter, limit=100, s",
                    seconds,
                    seconds / 2,
                    "s",
                    "< 2 s (ratio: to 2)",
                )
                print(f"{name}: round {rnd + 1}/{rounds} done", file=sys.stderr)


def settle(base: str) -> None:
    """Wait until the requests a finished wrk run left queued are answered: a latency row
    measured right after a throughput row would otherwise time the backlog."""
    deadline = time.monotonic() + 30
    with requests.Session() as session:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            session.get(base + "/healthz", timeout=10)
            if time.perf_counter() - started < 0.005:
                return
            time.sleep(0.1)


def walk(base: str, rnd: int) -> tuple[int, float]:
    """Every page of about 10,000 tracks (beta's songs: 18,000; a bpm band of them), read from
    the database (a bound every track meets, new in each round, keeps earlier rounds' answers
    out of it)."""
    params: dict[str, str] = {"user": "beta", "type": "song", "bpm_min": "80", "limit": "100",
                              "duration_max": str(100_000 + rnd)}  # fmt: skip
    count = 0
    started = time.perf_counter()
    with requests.Session() as session:
        while True:
            page = session.get(base + "/tracks", params=params, timeout=10).json()
            count += len(page["items"])
            if not page["has_more"]:
                break
            params["cursor"] = page["next_cursor"]
    return count, time.perf_counter() - started


def sync_row(name: str, database: str, sandbox: SandboxServer, table: Table) -> None:
    """An incremental sync of an unchanged 100,000-track account: its upstream calls."""
    store = Store.open(database)
    fill(store, sandbox, "big", BIG)
    for type_ in (SONG, INSTRUMENTAL):  # its last sync an interval ago: the next one is due
        store.save_state("big", type_, last_complete=time.time() - 3601)
    settings = MirrorSettings(database=Secret(database))
    client = UpstreamClient(
        UpstreamSettings(token=Secret(sandbox.token), base_url=sandbox.base_url)
    )
    syncer = Syncer({"big": BIG[0]}, settings, store, client)
    before = sandbox.state.call_count(BIG[0])
    syncer.step()
    calls = sandbox.state.call_count(BIG[0]) - before
    syncer.release()
    store.close()
    table.add(
        f"{name}: incremental sync of an unchanged 100,000-track account, upstream calls",
        calls,
        calls / 2,
        "calls",
        "1 per type (ratio: to 2)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    run(args.rounds, args.seconds, args.workers)


if __name__ == "__main__":
    main()
