"""`music-facade demo` as a subprocess, with what its banner says read back for the test."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# The banner's last line: everything a test reads comes before it.
LAST_LINE = "Ctrl-C stops them all."


@dataclass
class Demo:
    """A running demo and its banner."""

    proc: subprocess.Popen[str]
    log: Path
    lines: list[str] = field(default_factory=list)

    def _after(self, prefix: str) -> str:
        for line in self.lines:
            if line.startswith(prefix):
                return line[len(prefix) :].split()[0]
        raise AssertionError(f"no {prefix!r} line in the banner:\n" + "".join(self.lines))

    @property
    def app_url(self) -> str:
        """The example app's origin (no trailing slash)."""
        return self._after("Open the example app: ").rstrip("/")

    @property
    def key(self) -> str:
        """The client key the demo minted."""
        return self._after("Client key (this demo's own, valid until it stops): ")

    @property
    def url(self) -> str:
        """The service's base URL."""
        return self._after("music-facade is serving ")

    @property
    def add_track(self) -> tuple[str, str]:
        """The printed command that adds a track to the sandbox: its URL and JSON body."""
        line = next(line for line in self.lines if "-X POST" in line)
        return line.split("'")[1], line.split("-d '")[1].rsplit("'", 1)[0]

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header the printed curl commands send."""
        return {"Authorization": f"Bearer {self.key}"}


def _lines(proc: subprocess.Popen[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """The process's output lines as they come ("" at its end), read by a thread: a select()
    on the pipe would miss lines already read into the file object's buffer."""
    found: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            found.put(line)
        found.put("")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return found, reader


@contextmanager
def running_demo(
    argv: Sequence[str], tmp: Path, program: Sequence[str] | None = None, **popen: object
) -> Iterator[Demo]:
    """Start `demo ARGV` and yield once its banner is read; stop it (and its gunicorn) after,
    and fail if it did not stop cleanly. `program`: the command before `demo` (default: this
    interpreter's `-m music_facade`)."""
    log = tmp / "demo.log"
    command = [*(program or [sys.executable, "-m", "music_facade"]), "demo", *argv]
    with log.open("w") as stderr:
        proc = subprocess.Popen(  # type: ignore[call-overload]
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,  # gunicorn's log lines; stdout holds only the demo's own banner
            text=True,
            start_new_session=True,  # its own group, so a hung demo is killed with its gunicorn
            **popen,
        )
    demo = Demo(proc, log)
    lines, reader = _lines(proc)
    try:
        while len(demo.lines) < 40 and demo.lines[-1:] != [LAST_LINE + "\n"]:
            # Printed once the service answers /healthz; never wait on it unbounded.
            try:
                line = lines.get(timeout=60)
            except queue.Empty:
                line = ""
            assert line, "the demo printed no banner:\n" + "".join(demo.lines) + log.read_text()
            demo.lines.append(line)
        yield demo
    finally:
        stopped = _stop(proc, reader)
    said = log.read_text()
    assert stopped, "the demo did not stop within 30 s:\n" + said
    assert proc.returncode == 0, said
    assert "Traceback" not in said, said


def _stop(proc: subprocess.Popen[str], reader: threading.Thread) -> bool:
    """Stop the demo (SIGTERM, then its whole group by force); whether it stopped by itself."""
    proc.terminate()
    # wait(), not communicate(): the reading thread owns stdout and drains it to the end.
    try:
        proc.wait(timeout=30)
        stopped = True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its gunicorn too: nothing left running
        proc.wait()
        stopped = False
    reader.join(timeout=30)  # the output ends once gunicorn, which shares it, is gone too
    assert proc.stdout is not None
    if reader.is_alive():
        # An orphaned gunicorn still holds the pipe: closing it here would wait on the reading
        # thread forever; the assertion on `stopped` reports the demo instead.
        return False
    proc.stdout.close()
    return stopped
