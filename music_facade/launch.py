"""Run the service under gunicorn as a child process, for the demo, end-to-end tests and bench."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import requests

# The production settings, from the package: found in an installed wheel as in the source tree.
GUNICORN_CONF = "python:music_facade.gunicorn_conf"


class GunicornProcess:
    """gunicorn serving `app` on a socket this process opened (port 0 = random).

    The listening socket is made here and handed to gunicorn as fd://N, so the port is known
    before gunicorn starts and no other process can take it in between.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int = 0,
        workers: int = 1,
        log_path: Path | None = None,
        quiet: bool = True,
        app: str = "music_facade:create_app()",
        command: Sequence[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.env = dict(env)
        self.app = app
        # command: a whole gunicorn command line, app included (the image's CMD, run from an
        # installed wheel); None runs this interpreter's gunicorn with music_facade.gunicorn_conf.
        # --bind and --workers are added either way, so the socket is still this process's.
        self.command = None if command is None else list(command)
        self.cwd = cwd
        self.workers = workers
        self.log_path = log_path
        self.quiet = quiet  # without a log_path: discard gunicorn's output, or let it through
        self.sock = socket.create_server((host, port), backlog=2048)
        self.url = "http://{}:{}".format(*self.sock.getsockname()[:2])
        self.proc: subprocess.Popen[bytes] | None = None
        # The workers' metric files: made and removed here, so that even a master that never
        # reaches its on_exit hook (killed, or a test's abrupt end) leaves nothing behind.
        self.metrics_dir: str | None = None

    def start(self, ready_timeout: float = 30.0) -> GunicornProcess:
        """Start gunicorn and return once /healthz answers 200."""
        fd = self.sock.fileno()
        env = {**os.environ, **self.env}
        if "PROMETHEUS_MULTIPROC_DIR" not in env:
            self.metrics_dir = tempfile.mkdtemp(prefix="music-facade-metrics-")
            env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        if self.command is None:
            cmd = [
                sys.executable, "-m", "gunicorn",
                "-c", GUNICORN_CONF,
                "--bind", f"fd://{fd}",
                "--workers", str(self.workers),
                self.app,
            ]  # fmt: skip
        else:
            cmd = [*self.command, "--bind", f"fd://{fd}", "--workers", str(self.workers)]
        with contextlib.ExitStack() as files:
            sink: IO[bytes] | int | None = subprocess.DEVNULL if self.quiet else None
            if self.log_path:
                sink = files.enter_context(open(self.log_path, "ab"))
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=self.cwd,
                pass_fds=(fd,),
                stdout=sink,
                stderr=sink,
                start_new_session=True,  # its own group: see stop()
            )
        self._wait_ready(ready_timeout)
        return self

    def worker_pids(self) -> list[int]:
        """The pids of gunicorn's worker processes (Linux: the master's children)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(pid) for pid in children.split()]

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()  # the socket and the metrics directory are still this process's
                raise RuntimeError(f"gunicorn exited with status {self.proc.returncode}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)  # poll interval, not a readiness guess
        self.stop()
        raise RuntimeError(f"gunicorn did not become ready within {timeout} s")

    def stop(self) -> None:
        """Stop gunicorn gracefully (SIGTERM), then forcibly, and close the socket."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                # The master and its workers, as one group: a worker orphaned by killing the
                # master alone would keep serving, and keep open whatever output it inherited.
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.sock.close()
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def __enter__(self) -> GunicornProcess:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
