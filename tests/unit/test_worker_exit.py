"""The production worker's SIGTERM handler, at any point of the worker's life."""

from __future__ import annotations

import signal

from music_facade.worker import ProblemWorker


def test_a_sigterm_while_the_worker_boots_stops_it() -> None:
    # Before init_process has loaded the app there is no self.wsgi: the handler must still
    # stop the worker, not raise (a worker that fails to boot makes gunicorn's master halt).
    worker = ProblemWorker.__new__(ProblemWorker)
    worker.alive = True
    worker.handle_exit(signal.SIGTERM, None)
    assert worker.alive is False
