"""Production defaults for `gunicorn -c deploy/gunicorn.conf.py 'service:create_app()'`.

Every value can be overridden on the command line or with GUNICORN_CMD_ARGS; the MUSIC_*
variables below are the knobs operators normally turn.
"""

import os
import sys

from service.config import ConfigError, load_settings
from service.logs import logging_config

bind = os.environ.get("MUSIC_BIND", "0.0.0.0:8080")
# An I/O-bound proxy: threads wait on the upstream; one process per core is plenty. gunicorn's
# gthread worker, except that requests gunicorn itself refuses get problem+json, not HTML.
worker_class = "service.worker.ProblemWorker"
workers = int(os.environ.get("MUSIC_WORKERS", "2"))
threads = int(os.environ.get("MUSIC_THREADS", "8"))  # create_app sizes its upstream pool by it
# gthread's heartbeat does not depend on requests finishing; this only catches a stuck process.
timeout = 60
graceful_timeout = 20
keepalive = 5
# Refuse oversized request lines and headers before Flask sees them (414 / 431 problems from
# ProblemWorker). A line of 4094 bytes still holds /music's longest valid query (a 64-character
# alias and a 512-character cursor, even fully percent-encoded).
limit_request_line = 4094
limit_request_fields = 64
limit_request_field_size = 8190
logconfig_dict = logging_config(os.environ.get("MUSIC_LOG_LEVEL", "INFO"))
proc_name = "music-facade"
# gunicorn 27's control socket is one fixed path per user; unused here, and several instances on
# one machine (tests, side-by-side deployments) would fight over it.
control_socket_disable = True


def on_starting(server: object) -> None:
    """Refuse to start, with one line naming the key, when the configuration is unusable."""
    try:
        load_settings()
    except ConfigError as exc:
        print(f"music-facade: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
