"""Logging set-up: one JSON object per line on stderr, for the app and for gunicorn."""

from __future__ import annotations

import logging.config
from typing import Any

JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A dictConfig that sends the service's and gunicorn's logs to stderr as JSON lines."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": JSON_FORMAT,
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            }
        },
        "handlers": {"stderr": handler},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            # The app writes its own access line, with the request id and cache outcome.
            "gunicorn.access": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
        },
    }


def configure(level: str = "INFO") -> None:
    """Apply logging_config to this process."""
    logging.config.dictConfig(logging_config(level))
