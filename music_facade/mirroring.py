"""The mirror of one process: its store, its syncer and the thread (a greenlet under gunicorn's
gevent worker) that runs the syncer until the process ends."""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable

from . import logs
from .config import MirrorSettings, Settings
from .core.query import TYPES
from .guards import Guards
from .metrics import Metrics
from .mirror import Store
from .mirror.outbox import Route
from .mirror.sync import Syncer, SyncReport
from .upstream import UpstreamClient
from .wakeups import Wakeups
from .webhooks import Deliverer

log = logging.getLogger(__name__)

# Connections the syncer's own upstream client keeps: it makes one call at a time.
_SYNC_POOL = 2


class Mirror:
    """What [mirror] adds to a process. Its upstream calls go through the same guards as every
    other call (a cooldown, the breaker and a remembered auth failure pause the sync too) on a
    client of their own, counted with source="mirror"."""

    def __init__(
        self,
        settings: Settings,
        guards: Guards,
        measures: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        mirror = settings.mirror
        assert mirror is not None
        self.settings: MirrorSettings = mirror
        self.measures = measures
        logs.redact(mirror.secrets())  # the database URL's password, the password file's
        logs.redact([hook.secret.reveal() for hook in settings.webhooks])
        password = mirror.password.reveal() if mirror.password is not None else None
        self.store = Store.open(
            mirror.database.reveal(),
            password,
            clock=clock,
            changes_retention=mirror.changes_retention,
            webhooks=[Route(h.name, h.users, frozenset(h.events)) for h in settings.webhooks],
        )
        self.client = UpstreamClient(
            settings.upstream, _SYNC_POOL, guards=guards, metrics=measures, source="mirror"
        )
        self.syncer = Syncer(
            settings.users, mirror, self.store, self.client, clock=clock, observe=self._observe
        )
        # One poller of the mirror's version for the process: /events streams and the
        # deliverer wake on it when a change (with its deliveries) was written, here or by
        # another replica's sync.
        self.wakeups = Wakeups(self.store.version)
        self.deliverer: Deliverer | None = None
        if settings.webhooks:
            self.deliverer = Deliverer(
                settings.webhooks,
                self.store.outbox,
                clock=clock,
                observe=measures.webhook_attempt,
                backlog=measures.webhook_backlog,
                wakeups=self.wakeups,
            )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._delivering: threading.Thread | None = None

    def start(self) -> None:
        """Run the syncer in the background until stop() or the process's exit."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self.syncer.run, args=(self._stop,), name="mirror-sync", daemon=True
        )
        self._thread.start()
        if self.deliverer is not None:
            self._delivering = threading.Thread(
                target=self.deliverer.run, args=(self._stop,), name="webhooks", daemon=True
            )
            self._delivering.start()
        # A worker that exits in order gives its leases up: another takes over at once.
        atexit.register(self.stop)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop syncing (the leases are released) and delivering, and wait for both loops."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._delivering is not None:
            # An attempt in flight ends by its deadline; unrecorded, its claim runs out.
            self._delivering.join(timeout)

    def _observe(self, report: SyncReport) -> None:
        self.measures.mirror_sync(
            report.alias, report.type, report.kind, report.outcome, report.last_complete
        )
        if report.written or report.deleted or report.kind == "backfill":
            self.measures.mirror_counts(
                report.alias, report.type, self.store.counts(report.alias, report.type)
            )

    def health(self) -> str:
        """/readyz's check: ok; syncing (a backfill is in progress); stale (an account's last
        complete sync is older than five intervals). Both still ready: it serves what it has."""
        now = time.time()
        stale = now - 5 * self.settings.interval
        status = "ok"
        for alias in self.syncer.users:
            for type_ in TYPES:
                state = self.store.state(alias, type_)
                if not state.backfilled:
                    status = "syncing" if status == "ok" else status
                elif state.last_complete is None or state.last_complete < stale:
                    return "stale"
        return status
