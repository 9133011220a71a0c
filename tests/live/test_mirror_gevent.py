"""The mirror's database drivers under gevent, as gunicorn's gevent worker runs them.

Each case runs a small script in a fresh interpreter that monkey-patches first, exactly as the
worker does in init_process, then talks to the database through SQLAlchemy while a greenlet
ticks every 10 ms. A database wait that does not cooperate with gevent shows up as a long gap
between ticks: it would stall every request of the worker.

- PostgreSQL (psycopg 3): waits cooperate, provided psycopg is first imported after the patch
  (it picks its wait function at import). The last case imports it before, to show the check
  bites.
- SQLite (the standard sqlite3 module): a query holds the loop for its whole duration; the
  numbers are printed (-s) for docs/decisions/postgresql-under-gevent.md, and only a generous
  sanity bound is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres_server import PostgresServer

# Runs in a fresh interpreter: argv[1] is a JSON object {"case": ..., "url": ..., ...}; the last
# line of stdout is a JSON object of measurements.
SCRIPT = r'''
import json, sys, time

options = json.loads(sys.argv[1])
if options.get("import_driver_first"):
    import psycopg  # before the patch: psycopg picks its blocking C wait function

from gevent import monkey

monkey.patch_all()

import gevent
import sqlalchemy as sa

ticks = []


def tick():
    while True:
        ticks.append(time.perf_counter())
        gevent.sleep(0.01)


def max_gap(since):
    """The longest time between two ticks from the last one before `since` on: how long the
    loop was held (a wait that blocks from the start shows as the gap after that tick)."""
    before = [t for t in ticks if t < since]
    seen = before[-1:] + [t for t in ticks if t >= since]
    return max((b - a for a, b in zip(seen, seen[1:])), default=float("inf"))


def measured(fn):
    """fn() run with the ticker going: (seconds it took, the longest gap between ticks)."""
    ticker = gevent.spawn(tick)
    gevent.sleep(0.05)  # the ticker is running
    start = time.perf_counter()
    fn()
    took = time.perf_counter() - start
    gevent.sleep(0.03)  # one more tick closes the last gap
    ticker.kill()
    return took, max_gap(start)


def postgresql():
    engine = sa.create_engine(options["url"], pool_size=5, max_overflow=0)
    with engine.connect() as conn:  # the dialect's first-connect queries, out of the timing
        conn.execute(sa.text("SELECT 1"))

    def sleep(seconds):
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_sleep(:s)"), {"s": seconds})

    one, one_gap = measured(lambda: sleep(1.0))
    five, five_gap = measured(lambda: gevent.joinall([gevent.spawn(sleep, 0.5) for _ in range(5)]))
    engine.dispose()
    import psycopg.waiting

    return {
        "wait_function": psycopg.waiting.wait.__name__,
        "one_sleep_1s": one, "one_sleep_1s_max_gap": one_gap,
        "five_sleeps_0_5s": five, "five_sleeps_0_5s_max_gap": five_gap,
    }


def percentiles(samples):
    samples = sorted(samples)
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
    return {"median_ms": pick(0.5) * 1000, "p99_ms": pick(0.99) * 1000,
            "max_ms": samples[-1] * 1000}


def sqlite():
    path = options["path"]
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 5})
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        conn.exec_driver_sql(
            "CREATE TABLE tracks (id TEXT PRIMARY KEY, alias TEXT, type TEXT, created_ms INT,"
            " track TEXT)"
        )
        conn.exec_driver_sql("CREATE INDEX tracks_created ON tracks (alias, type, created_ms)")
        body = json.dumps({"title": "A track", "lyrics": "la " * 300})
        conn.execute(
            sa.text("INSERT INTO tracks VALUES (:id, 'studio', 'song', :c, :t)"),
            [{"id": f"id{i:06d}", "c": 1_700_000_000_000 + i, "t": body} for i in range(20_000)],
        )
    timings = {"point_read": [], "page_of_20": [], "upsert_one": []}
    with engine.connect() as conn:
        for i in range(300):
            start = time.perf_counter()
            conn.execute(sa.text("SELECT track FROM tracks WHERE id = :id"),
                         {"id": f"id{i * 37:06d}"}).all()
            timings["point_read"].append(time.perf_counter() - start)
            start = time.perf_counter()
            conn.execute(sa.text(
                "SELECT id, track FROM tracks WHERE alias = 'studio' AND type = 'song'"
                " AND created_ms < :c ORDER BY created_ms DESC LIMIT 20"
            ), {"c": 1_700_000_020_000 - i * 50}).all()
            timings["page_of_20"].append(time.perf_counter() - start)
            conn.rollback()  # ends the reads' implicit transaction
            start = time.perf_counter()
            with conn.begin():
                conn.execute(sa.text("UPDATE tracks SET track = :t WHERE id = :id"),
                             {"t": body + str(i), "id": f"id{i:06d}"})
            timings["upsert_one"].append(time.perf_counter() - start)
    result = {name: percentiles(samples) for name, samples in timings.items()}

    # A write that waits for another process's write lock: sqlite3's busy handler sleeps in C.
    import subprocess
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
         " c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(0.5);"
         " c.execute('COMMIT')", path],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "locked"

    def write():
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE tracks SET created_ms = 0 WHERE id = 'id000001'"))

    took, gap = measured(write)
    holder.wait()
    result["write_behind_a_0_5s_lock"] = {"took_ms": took * 1000, "max_gap_ms": gap * 1000}
    engine.dispose()
    return result


print(json.dumps(postgresql() if options["case"] == "postgresql" else sqlite()))
'''


def run_script(**options: Any) -> dict[str, Any]:
    """The script's measurements; its stderr on failure."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def sqlalchemy_url(server: PostgresServer) -> str:
    return server.url.replace("postgresql://", "postgresql+psycopg://", 1)


def test_a_slow_postgresql_query_does_not_stall_other_greenlets(postgres: PostgresServer) -> None:
    found = run_script(case="postgresql", url=sqlalchemy_url(postgres))
    print("\nPostgreSQL under gevent:", json.dumps(found))
    assert found["wait_function"] != "wait_c"  # psycopg saw the patch
    # One pg_sleep(1): the ticker kept ticking (a blocked loop would show a ~1 s gap). The
    # bounds leave room for a busy 2-core machine, far below what blocking would give.
    assert found["one_sleep_1s"] >= 1.0
    assert found["one_sleep_1s_max_gap"] < 0.3
    # Five concurrent pg_sleep(0.5) overlap: about 0.5 s, where one at a time is 2.5 s.
    assert 0.5 <= found["five_sleeps_0_5s"] < 1.5
    assert found["five_sleeps_0_5s_max_gap"] < 0.3


def test_psycopg_imported_before_the_patch_blocks_the_loop(postgres: PostgresServer) -> None:
    # What the check above guards against: the same script, psycopg imported first.
    found = run_script(case="postgresql", url=sqlalchemy_url(postgres), import_driver_first=True)
    print("\nPostgreSQL, psycopg imported before the patch:", json.dumps(found))
    assert found["wait_function"] == "wait_c"
    assert found["one_sleep_1s_max_gap"] >= 0.9
    assert found["five_sleeps_0_5s"] >= 2.4  # one after another


def test_sqlite_queries_hold_the_loop_only_briefly(tmp_path: Path) -> None:
    found = run_script(case="sqlite", path=str(tmp_path / "mirror.db"))
    print("\nSQLite under gevent:", json.dumps(found))
    # Each query holds the worker for its whole duration; a sanity bound only (the measured
    # numbers are far lower, see the printed line).
    for name in ("point_read", "page_of_20", "upsert_one"):
        assert found[name]["p99_ms"] < 100, name
    # Waiting for another writer's lock is not cooperative: the loop is held for the wait.
    lock = found["write_behind_a_0_5s_lock"]
    assert lock["took_ms"] >= 200  # of the 0.5 s, less the time to start measuring
    assert lock["max_gap_ms"] >= 200
