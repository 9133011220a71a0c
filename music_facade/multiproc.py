"""The metrics directory of a gunicorn master: prometheus_client's multiprocess files.

prometheus_client's multiprocess mode keeps each worker's numbers in memory-mapped files under
PROMETHEUS_MULTIPROC_DIR, and /metrics sums them. The directory must exist before the workers
import prometheus_client, and start empty (files of an earlier run would be added in); a dead
worker's live gauges must go (its in-flight calls are no longer in flight).

Only the standard library here: gunicorn's master runs this (deploy/gunicorn.conf.py), and
prometheus_client imports `ssl`, which must not happen before the gevent worker patches it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
# prometheus_client's gauge modes that drop a dead process's values (multiprocess.py).
LIVE_MODES = ("liveall", "livesum", "livemax", "livemin", "livemostrecent")


def prepare(environ: MutableMapping[str, str]) -> tuple[Path, bool]:
    """The directory (the operator's PROMETHEUS_MULTIPROC_DIR, else a new temporary one),
    emptied, and whether it was made here; exported in environ for the workers."""
    given = environ.get(ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink()
        made = False
    else:
        path = Path(tempfile.mkdtemp(prefix="music-facade-metrics-"))
        made = True
    environ[ENV] = str(path)
    return path, made


def mark_process_dead(pid: int, path: Path) -> None:
    """Forget a dead worker's live gauges (prometheus_client.multiprocess.mark_process_dead)."""
    for mode in LIVE_MODES:
        (path / f"gauge_{mode}_{pid}.db").unlink(missing_ok=True)


def remove(path: Path) -> None:
    """Remove a directory prepare() made."""
    shutil.rmtree(path, ignore_errors=True)
