"""A process's life as the load balancer sees it: ready, or shutting down (SIGTERM)."""

from __future__ import annotations


class Lifecycle:
    """Set once the process starts shutting down: /readyz then answers 503."""

    def __init__(self) -> None:
        # A plain attribute: it is set from a signal handler, where locks and logging are unsafe.
        self.shutting_down = False

    def begin_shutdown(self) -> None:
        """Mark the process as leaving: readiness fails from now on, serving goes on."""
        self.shutting_down = True
