"""Logging set-up: one JSON object per line on stderr, for the app and for gunicorn."""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from flask import g, has_request_context

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


class RedactSecrets(logging.Filter):
    """Replace known secrets in a record's message, traceback and extra fields with ********.

    Our own code never logs a secret; this catches a library that puts one in an exception.
    """

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = {s for s in secrets if s}

    def _clean(self, text: str) -> str:
        secrets = self.secrets
        # The credential the current caller presented: known only while its request runs.
        presented = g.get("credential") if has_request_context() else None
        if presented and len(presented) >= 8:  # a short one would garble the whole line
            secrets = secrets | {presented}
        for secret in secrets:
            text = text.replace(secret, "********")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drop it."""
        record.msg, record.args = self._clean(record.getMessage()), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self._clean(record.stack_info)
        for name, value in list(vars(record).items()):
            if isinstance(value, str) and name not in ("msg", "exc_text", "stack_info"):
                setattr(record, name, self._clean(value))
        return True


def redact(secrets: list[str]) -> None:
    """Make every handler the root and gunicorn loggers have now redact these secrets too."""
    for name in (None, "gunicorn.error", "gunicorn.access"):
        for handler in logging.getLogger(name).handlers:
            found = [f for f in handler.filters if isinstance(f, RedactSecrets)]
            if found:
                found[0].secrets.update(s for s in secrets if s)
            else:
                handler.addFilter(RedactSecrets(secrets))
