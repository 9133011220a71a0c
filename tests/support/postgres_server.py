"""A real PostgreSQL server in a temporary directory on a random loopback port.

Debian's `postgresql` package puts its programs under /usr/lib/postgresql/<version>/bin, off the
PATH, and the server refuses to run as root: as root, the cluster is made and run as the
package's `postgres` user. Never the system cluster, never a service.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from .programs import free_port, missing_program


def postgres_bin() -> Path:
    """The directory holding initdb and pg_ctl; skipped locally when absent, a failure in CI."""
    found = shutil.which("pg_ctl")
    if found is not None:
        return Path(found).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not versions:
        missing_program("PostgreSQL (initdb, pg_ctl)", "postgresql")
    return Path(versions[-1]).parent


class PostgresServer:
    """initdb + pg_ctl on 127.0.0.1:<random port>, trust auth, user `postgres`, database `music`."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="music-pg-"))
        self.data = self.dir / "data"
        # As root the server must run as an unprivileged user that owns its directory.
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            self._as = {"user": "postgres", "group": "postgres"}
            shutil.chown(self.dir, "postgres", "postgres")
        self.started = False

    @property
    def url(self) -> str:
        """postgresql://postgres@127.0.0.1:<port>/music."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/music"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.dir,
            **self._as,
        )

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """initdb (once), start, and wait until the `music` database accepts connections."""
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"),
                  "-w", "-t", str(int(timeout)), "start")  # fmt: skip
        self.started = True
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                          "music")  # fmt: skip
                return self
            except subprocess.CalledProcessError as exc:
                if b"already exists" in exc.stderr:
                    return self
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # poll interval

    def database(self, name: str) -> str:
        """A new, empty database on this server; its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self, mode: str = "immediate") -> None:
        """Stop it (immediate: as abrupt as a crash, the data stays for a start())."""
        if self.started:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
            self.started = False

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
