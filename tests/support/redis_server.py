"""A real redis-server on a random loopback port, for the tests that share state."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import redis

from music_facade.config import RedisSettings, Secret
from music_facade.shared import SharedStore

from .programs import free_port, missing_program

REDIS_SERVER = shutil.which("redis-server")


def require_redis_server() -> str:
    """The redis-server binary; skipped locally when absent, a failure in CI."""
    if REDIS_SERVER is None:
        missing_program("redis-server", "redis-server")
    return REDIS_SERVER


class RedisServer:
    """redis-server with no persistence on 127.0.0.1; start(), stop(), and start() again."""

    def __init__(self, password: str | None = None) -> None:
        self.binary = require_redis_server()
        self.password = password
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="music-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis://127.0.0.1:<port>/0 (without the password)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start it (on the same port as before, after a stop) and wait until it answers PING."""
        cmd = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
        ]  # fmt: skip
        if self.password:
            cmd += ["--requirepass", self.password]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=1
        )
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    time.sleep(0.02)  # poll interval
            raise RuntimeError("redis-server did not answer PING in time")
        finally:
            client.close()

    def client(self) -> redis.Redis:
        """A plain client for assertions."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def stop(self) -> None:
        """Kill it (SIGKILL: as abrupt as a crash) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# Sent once per new connection by redis-py, not per request: left out of a CommandLog.
_HANDSHAKE = frozenset({"CLIENT", "HELLO", "AUTH", "SELECT"})


@contextmanager
def replica_stores(server: RedisServer, count: int = 2) -> Iterator[list[SharedStore]]:
    """`count` SharedStores on `server`, emptied first: replicas sharing one Redis."""
    server.client().flushall()
    settings = RedisSettings(url=Secret(server.url), prefix="t", backoff_max=0.5)
    stores = [SharedStore(settings) for _ in range(count)]
    try:
        yield stores
    finally:
        for store in stores:
            store.close()


class CommandLog:
    """The commands other clients send a redis-server while this is open, as MONITOR sees them:
    one entry per round trip (a script's own commands are left out), handshakes left out too.

        with CommandLog(server) as log:
            ...
        log.commands  # ["EVALSHA", "EVALSHA"]
    """

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.marker = f"command-log-end-{time.monotonic_ns()}"
        self.commands: list[str] = []
        self._lines: list[tuple[str, str]] = []
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CommandLog:
        server = self.server
        client = redis.Redis(
            host="127.0.0.1", port=server.port, password=server.password, socket_timeout=10
        )
        monitor = client.monitor()  # type: ignore[no-untyped-call]
        monitor.__enter__()  # MONITOR is on once this returns: nothing sent from now is missed

        def read() -> None:
            try:
                while True:
                    seen = monitor.next_command()
                    if self.marker in seen["command"]:
                        return
                    self._lines.append((seen["client_type"], seen["command"]))
            finally:
                monitor.__exit__()
                client.close()

        self._thread = threading.Thread(target=read, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        client = self.server.client()
        try:
            client.echo(self.marker)
        finally:
            client.close()
        assert self._thread is not None
        self._thread.join(10)
        self.commands = [
            command.split(" ", 1)[0].upper()
            for kind, command in self._lines
            if kind != "lua" and command.split(" ", 1)[0].upper() not in _HANDSHAKE
        ]
