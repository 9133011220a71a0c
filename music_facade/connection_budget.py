"""Whether one worker's caps on long-lived answers fit in gunicorn's `worker_connections`.

gunicorn's gevent worker serves at most `worker_connections` connections at once (a gevent
Pool); once they are all taken it stops accepting, and every new connection waits in the listen
backlog until one closes. An `/events` stream holds its connection as long as its caller
listens, a `/library` stream until the library is written, an upstream call (a cache miss) until
the upstream answers. If the caps on those (per worker) reach `worker_connections`, a worker
full of them accepts nothing else: `/healthz` times out, so the worker looks dead, and `/music`
cache hits wait. So the caps, plus `HEADROOM` connections for everything else (health checks,
metrics scrapes, cache hits, idle keep-alive connections, callers queued for a bulkhead slot),
must fit; gunicorn's master refuses to start otherwise, and `check-config` says the same.

Only the configuration and the standard library are imported: the master reads this before the
workers monkey-patch (music_facade/worker.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .config import Settings

DEFAULT_WORKER_CONNECTIONS = 4000
ENV = "MUSIC_WORKER_CONNECTIONS"
HEADROOM = 256  # connections always left for short requests, past every cap


def held_at_most(settings: Settings) -> int:
    """Connections one worker's long-lived answers may hold at once, by the configuration's
    caps: /events streams (served only with [mirror]), /library streams, upstream calls."""
    events = settings.events.max_streams if settings.mirror is not None else 0
    return events + settings.library.max_streams + settings.bulkhead.max_concurrent_calls


def needed(settings: Settings) -> int:
    """The least `worker_connections` that fits the caps and the headroom."""
    return held_at_most(settings) + HEADROOM


def problem(settings: Settings, worker_connections: int) -> str | None:
    """Why these caps do not fit in `worker_connections` (one line), or None when they do."""
    want = needed(settings)
    if worker_connections >= want:
        return None
    parts = [
        f"[library] max_streams ({settings.library.max_streams})",
        f"[upstream] max_concurrent_calls ({settings.bulkhead.max_concurrent_calls})",
    ]
    if settings.mirror is not None:
        parts.insert(0, f"[events] max_streams ({settings.events.max_streams})")
    return (
        f"worker_connections ({worker_connections}) must be at least {want}: one worker may "
        f"hold {' + '.join(parts)} connections, plus {HEADROOM} for /healthz and other short "
        f"requests; raise {ENV} (or gunicorn's worker_connections) or lower those caps"
    )


def from_environment(environ: Mapping[str, str] = os.environ) -> int | str:
    """MUSIC_WORKER_CONNECTIONS as gunicorn's settings read it, or why it is not a count."""
    text = environ.get(ENV, str(DEFAULT_WORKER_CONNECTIONS))
    if not text.isdecimal() or int(text) < 1:
        return f"{ENV}: {text!r} is not a positive number of connections"
    return int(text)
