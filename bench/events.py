"""The change stream's rows: 1,000 open /events streams on one worker, one change fanned out to
them, and 1,000 webhook deliveries.

    ./run bench --only events

The service runs under gunicorn's gevent worker (1 worker) with the mirror on SQLite in a
temporary directory and the sandbox as its upstream. The streams are opened by an asyncio
client in this process (raw sockets, each reading its answer as it comes). Changes are written
by this process straight into the mirror's database through its `Store`, as the syncer writes
them: the moment of the write is then known here to the microsecond, on the same clock as each
client's receipt, and no upstream timing (the sandbox's generation steps, the sync's interval)
is mixed into the figure. The service learns of the write the way it learns of another
replica's sync: its poller sees the log's version move.
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from music_facade.core.change_events import EVENTS
from music_facade.core.tracks import dump_track
from music_facade.launch import GunicornProcess
from music_facade.mirror import Entry, Store
from music_facade.mirror.outbox import Route
from music_facade.sandbox import SandboxServer
from music_facade.sandbox.data import SONG, full_record

from .__main__ import Table, rss_mb

STREAMS = 1000
DELIVERIES = 1000
ALIAS = "alpha"
USER_ID = "1001"  # a sandbox account: the service syncs it once at start
SECRET = "whsec_" + "YmVuY2gtc2lnbmluZy1rZXktMzItYnl0ZXMtbG9uZyE="  # the bench's own receiver
CONFIG = """
[upstream]
base_url = "{base_url}"
[users]
{alias} = "{user_id}"
[mirror]
database = "{database}"
interval = 3600
reconcile_every = 864000
[events]
max_streams = {cap}
max_streams_per_client = {cap}
[[webhooks]]
name = "bench"
url = "{receiver}"
secret_env = "BENCH_WEBHOOK_SECRET"
users = ["{alias}"]
"""


def entry(index: int, progress: int) -> Entry:
    """A generating track of the bench's own (its id marks it), at a progress."""
    record = full_record(USER_ID, SONG, index, status=(5, progress))
    id_ = f"bench-{index}"
    return Entry(id_, f"bench-job-{index}", {**dump_track(record), "id": id_}, None)


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


@contextmanager
def receiver() -> Iterator[tuple[str, list[float]]]:
    """A webhook receiver on loopback answering 204 at once (keep-alive); yields its URL and
    the arrival time of each delivery of a bench track (the service's own sync's are not)."""
    arrivals: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if b'"bench-' in body:
                arrivals.append(time.monotonic())
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = _Receiver(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", arrivals
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


class _Streams:
    """STREAMS open /events answers, read by one asyncio loop in a thread of this process."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.writers: list[asyncio.StreamWriter] = []
        self.readers: list[asyncio.Task[None]] = []
        self.wanted: str | None = None  # the event id each reader times
        self.received: list[float] = []

    def run(self, coro: object, timeout: float = 120) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    async def _open(self, count: int) -> None:
        async def one() -> None:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            writer.write(f"GET /events HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
            self.writers.append(writer)
            # Held here: the loop keeps only weak references to its tasks.
            self.readers.append(self.loop.create_task(self._read(reader)))

        for start in range(0, count, 100):  # a hundred at a time, as a crowd would arrive
            await asyncio.gather(*(one() for _ in range(min(100, count - start))))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        buffered = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            buffered += chunk
            wanted = self.wanted
            if wanted is not None and f"\nid: {wanted}\n".encode() in buffered:
                self.received.append(time.monotonic())
                # Kept: the line's end before the next id (a fresh b"" would hide the next
                # round's event from this search until a keep-alive came first).
                buffered = buffered[-1:]
            elif len(buffered) > 1 << 20:
                buffered = buffered[-65536:]

    def open(self, count: int) -> None:
        self.run(self._open(count))

    def expect(self, seq: int) -> None:
        self.received = []
        self.wanted = str(seq)

    def close(self) -> None:
        async def close_all() -> None:
            for writer in self.writers:
                writer.close()

        self.run(close_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


def run(rounds: int) -> None:
    """The three rows; prints the table."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * STREAMS:  # this process holds every stream's socket
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * STREAMS), hard))
    table = Table()
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        SandboxServer() as sandbox,
        receiver() as (hook_url, arrivals),
    ):
        tmp = Path(tmp_name)
        database = f"sqlite:///{tmp / 'mirror.db'}"
        config = tmp / "events.toml"
        config.write_text(
            CONFIG.format(
                base_url=sandbox.base_url,
                alias=ALIAS,
                user_id=USER_ID,
                database=database,
                cap=STREAMS + 100,
                receiver=hook_url,
            )
        )
        env = {
            "MUSIC_CONFIG": str(config),
            "USEAPI_TOKEN": sandbox.token,
            "BENCH_WEBHOOK_SECRET": SECRET,
        }
        with GunicornProcess(env, workers=1, log_path=tmp / "gunicorn.log") as svc:
            _wait_synced(svc.url)
            store = Store.open(database)
            hooked = Store.open(database, webhooks=[Route("bench", frozenset({ALIAS}),
                                                          frozenset(EVENTS))])  # fmt: skip
            try:
                stream_rows(svc, store, table, rounds)
                webhook_row(hooked, arrivals, table, rounds)
            finally:
                store.close()
                hooked.close()
    print(
        f"\n{STREAMS} streams from an asyncio client in the bench process, loopback; gunicorn, "
        f"1 worker (gevent); the mirror on SQLite; {os.cpu_count()} CPUs\n"
    )
    table.print()


def _wait_synced(url: str) -> None:
    deadline = time.monotonic() + 60
    while requests.get(url + "/readyz", timeout=5).json()["checks"].get("mirror") != "ok":
        if time.monotonic() > deadline:
            raise RuntimeError("the service's mirror did not sync")
        time.sleep(0.1)


def stream_rows(svc: GunicornProcess, store: Store, table: Table, rounds: int) -> None:
    """RSS added per open stream; then, per round, one change's latency to every stream."""
    worker = svc.worker_pids()[0]
    host, port = svc.url.removeprefix("http://").split(":")
    streams = _Streams(host, int(port))
    try:
        streams.open(1)  # the first stream starts the poller and the tail: not per stream
        time.sleep(1)
        before = rss_mb(worker)
        streams.open(STREAMS)
        time.sleep(1)  # the worker has answered every stream's `retry:`
        added = (rss_mb(worker) - before) * 1024 / STREAMS
        table.add(
            f"{STREAMS} open streams on one worker: RSS added per stream, KB (ratio: to 50)",
            added,
            added / 50,
            "KB",
            "< 50 KB",
        )
        print(f"{STREAMS + 1} streams open", file=sys.stderr)
        for rnd in range(rounds):
            seq = store.version() + 1  # the next change's seq: nothing else writes meanwhile
            streams.expect(seq)
            written = time.monotonic()
            made = store.write(ALIAS, SONG, [entry(rnd, 10)])
            assert made[0].seq == seq, (made[0].seq, seq)
            deadline = time.monotonic() + 30
            while len(streams.received) < STREAMS + 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            missing = STREAMS + 1 - len(streams.received)
            table.add(
                f"  … streams of {STREAMS + 1} without the change after 30 s",
                missing,
                missing / (STREAMS + 1),
                "",
                "0",
            )
            latencies = sorted((t - written) * 1000 for t in streams.received)
            p99 = latencies[int(len(latencies) * 0.99) - 1]
            table.add(
                f"one change to {STREAMS} open streams: p99 ms from the write to a client's "
                "receipt (ratio: to 500)",
                p99,
                p99 / 500,
                "ms",
                "< 500 ms",
            )
            median = statistics.median(latencies)
            table.add("  … its median, ms", median, median / 500, "ms", "")
            table.add("  … its max, ms", latencies[-1], latencies[-1] / 500, "ms", "")
            print(f"streams: round {rnd + 1}/{rounds} done", file=sys.stderr)
            time.sleep(0.5)
    finally:
        streams.close()


def webhook_row(store: Store, arrivals: list[float], table: Table, rounds: int) -> None:
    """DELIVERIES changes written at once; the rate at which the receiver got them, from the
    first delivery to the last, and from the write to the last (which adds the write itself
    and the service's wake-up: its poller sees the log's version move every 0.25 s)."""
    for rnd in range(rounds):
        arrivals.clear()
        base = 10_000 * (rnd + 1)
        written = time.monotonic()
        store.write(ALIAS, SONG, [entry(base + i, 20) for i in range(DELIVERIES)])
        deadline = time.monotonic() + 120
        while len(arrivals) < DELIVERIES:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(arrivals)} of {DELIVERIES} deliveries arrived")
            time.sleep(0.05)
        first, last = min(arrivals), max(arrivals)
        rate = (DELIVERIES - 1) / (last - first)
        table.add(
            f"{DELIVERIES} webhook deliveries to a local receiver: per s, first to last "
            "(ratio: to 200)",
            rate,
            rate / 200,
            "/s",
            ">= 200/s",
        )
        whole = DELIVERIES / (last - written)
        table.add("  … from the write to the last, per s", whole, whole / 200, "/s", "")
        print(f"webhooks: round {rnd + 1}/{rounds} done", file=sys.stderr)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    run(parser.parse_args().rounds)


if __name__ == "__main__":
    main()
