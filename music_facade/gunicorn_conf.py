"""Production defaults for
`gunicorn -c python:music_facade.gunicorn_conf 'music_facade:create_app()'` (or
deploy/gunicorn.conf.py, which the image runs and which takes everything from here).

In the package, not only in deploy/: an installed wheel (`music-facade demo`, an operator's own
image) has the production worker class and hooks without a source tree.

Every value can be overridden on the command line or with GUNICORN_CMD_ARGS; the MUSIC_*
variables below are the knobs operators normally turn.

The model: one gevent worker per core (music_facade.worker.ProblemWorker, gunicorn's gevent worker
answering the requests gunicorn refuses with problem+json). A connection is a greenlet, so a
worker holds thousands of them: callers waiting on a slow upstream, idle keep-alive connections
and slow clients cost memory, not a thread each, and a cached page or /healthz never queues
behind them. What a slow upstream can hold is capped by the app, not here: [upstream]
max_concurrent_calls (the bulkhead, default 100 per worker, also the upstream connection pool
size) and max_wait (how long a miss waits for a slot before 503 upstream_busy, default 5 s).

This module must not import requests (or anything that imports it): the master runs it before
the workers monkey-patch ssl/socket; see music_facade/worker.py.
"""

import logging
import os
import resource
import sys

from music_facade import connection_budget, master, multiproc
from music_facade.config import ConfigError, load_settings
from music_facade.logs import logging_config
from music_facade.startup import DEFAULT_WORKERS, log_summary

bind = os.environ.get("MUSIC_BIND", "0.0.0.0:8080")
worker_class = "music_facade.worker.ProblemWorker"
workers = int(os.environ.get("MUSIC_WORKERS", str(DEFAULT_WORKERS)))
# Connections one worker serves at once: in-flight requests (>= 1000 waiting on the upstream:
# bulkhead slots, callers waiting for a slot, followers of single flights) plus idle keep-alive
# and slow connections. Each costs one greenlet (a few KB) and one file descriptor; past it the
# worker stops accepting and connections wait in the listen backlog. The configuration's caps on
# streams and upstream calls must leave room in it (music_facade.connection_budget, checked at
# start).
worker_connections = int(
    os.environ.get(connection_budget.ENV, str(connection_budget.DEFAULT_WORKER_CONNECTIONS))
)
backlog = 2048
# The heartbeat runs in its own greenlet: this only catches a worker stuck on the CPU.
timeout = 30
graceful_timeout = 20
# Also the bound on reading a request's headers: a slow-header or idle connection is closed
# after this many seconds without a complete request.
keepalive = 5
# Refuse oversized request lines and headers before Flask sees them (414 / 431 problems from
# ProblemWorker). A line of 4094 bytes still holds /music's longest valid query (a 64-character
# alias and a 512-character cursor, even fully percent-encoded).
limit_request_line = 4094
limit_request_fields = 64
limit_request_field_size = 8190
logconfig_dict = logging_config(os.environ.get("MUSIC_LOG_LEVEL", "INFO"))
# The app writes the access line (with request id, client and cache outcome); this logger skips
# building gunicorn's own, which gunicorn.access (WARNING in logconfig_dict) would drop.
logger_class = "music_facade.worker.AccessQuietLogger"
proc_name = "music-facade"
# gunicorn 27's control socket is one fixed path per user; unused here, and several instances on
# one machine (tests, side-by-side deployments) would fight over it.
control_socket_disable = True


def _raise_nofile_limit(connections: int) -> None:
    """Let every worker hold its connections plus upstream connections and files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = hard if hard == resource.RLIM_INFINITY else min(hard, max(wanted, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


# PROMETHEUS_MULTIPROC_DIR (music_facade/multiproc.py): each worker's metric files, summed by
# /metrics. The operator's directory if set (emptied at start), else a temporary one.
#
# gunicorn executes deploy/gunicorn.conf.py anew on SIGHUP, so nothing the master must remember (the
# configuration, the metrics directory) is kept in its globals: music_facade.master holds it.


def on_starting(server: object) -> None:
    """Read and validate the configuration once, for every worker: refuse to start, with one
    line per error, when it is unusable; else say what runs."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        for line in exc.errors:
            print(f"music-facade: configuration error: {line}", file=sys.stderr)
        sys.exit(2)
    # The value in force: the command line or GUNICORN_CMD_ARGS may have overridden this file's.
    connections: int = server.cfg.worker_connections  # type: ignore[attr-defined]
    unfit = connection_budget.problem(settings, connections)
    if unfit is not None:
        print(f"music-facade: configuration error: {unfit}", file=sys.stderr)
        sys.exit(2)
    master.hold(settings)  # the workers, forked later, inherit it and never read the file
    log_summary(settings, server.cfg.workers)  # type: ignore[attr-defined]
    _raise_nofile_limit(connections)  # the workers, forked later, inherit it
    # Before any worker imports prometheus_client: it picks its multiprocess mode at import.
    master.hold_metrics_dir(*multiproc.prepare(os.environ))


def on_reload(server: object) -> None:
    """SIGHUP: read the configuration again before gunicorn forks the new workers. A broken
    file is logged and the last good configuration stays (the new workers get it); a good one
    is what every worker forked from now on serves."""
    try:
        settings = master.reload()
    except Exception:
        # Whatever the file holds, the master must keep serving: an exception here would end
        # gunicorn's main loop, and the pod with it.
        logging.getLogger("music_facade.master").exception(
            "configuration reload failed, still serving the previous configuration"
        )
        return
    if settings is not None:
        log_summary(settings, server.cfg.workers)  # type: ignore[attr-defined]
        # Too late to refuse (the master keeps serving): said, so the operator can fix it.
        unfit = connection_budget.problem(settings, server.cfg.worker_connections)  # type: ignore[attr-defined]
        if unfit is not None:
            logging.getLogger("music_facade.master").error("configuration reloaded: %s", unfit)


def child_exit(server: object, worker: object) -> None:
    """A worker is gone: its in-flight and per-process gauges leave /metrics with it."""
    held = master.metrics_dir()
    if held is not None:
        multiproc.mark_process_dead(worker.pid, held[0])  # type: ignore[attr-defined]


def on_exit(server: object) -> None:
    """Remove the metrics directory the master made (an operator's own is left in place)."""
    held = master.metrics_dir()
    if held is not None and held[1]:
        multiproc.remove(held[0])
