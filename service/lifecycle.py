"""A process's life as the load balancer sees it: ready, or shutting down (SIGTERM)."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Lifecycle:
    """Set once the process starts shutting down: /readyz then answers 503."""

    def __init__(self) -> None:
        self._shutting_down = threading.Event()

    @property
    def shutting_down(self) -> bool:
        """Whether a shutdown has begun."""
        return self._shutting_down.is_set()

    def begin_shutdown(self) -> None:
        """Mark the process as leaving: readiness fails from now on, serving goes on."""
        if not self._shutting_down.is_set():
            self._shutting_down.set()
            log.info("shutting down: /readyz answers 503, in-flight requests finish")
