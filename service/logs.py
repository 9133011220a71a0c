"""Logging set-up: one JSON object per line on stderr, for the app and for gunicorn."""

from __future__ import annotations

import logging
import logging.config
from contextvars import ContextVar
from typing import Any

# The credential the current request presented (set by service.clients.presented): a secret
# for the log lines written while it runs. Per thread, and per greenlet under gevent.
PRESENTED: ContextVar[str | None] = ContextVar("presented_credential", default=None)

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
    A record is looked through once for all secrets and rewritten only when one is there, so
    the common line (the access log's) costs one join and a scan per secret.
    """

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = {s for s in secrets if s}

    def _secrets(self) -> list[str]:
        secrets = list(self.secrets)
        # The credential the current caller presented: known only while its request runs.
        presented = PRESENTED.get()
        if presented and len(presented) >= 8:  # a short one would garble the whole line
            secrets.append(presented)
        return secrets

    @staticmethod
    def _clean(text: str, secrets: list[str]) -> str:
        for secret in secrets:
            text = text.replace(secret, "********")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place when it holds a secret; never drop it."""
        secrets = self._secrets()
        message = record.getMessage()
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        texts = [message] + [v for v in vars(record).values() if isinstance(v, str)]
        blob = "\0".join(texts)
        if not any(secret in blob for secret in secrets):
            return True
        record.msg, record.args = self._clean(message, secrets), None
        for name, value in list(vars(record).items()):
            if isinstance(value, str) and name != "msg":
                setattr(record, name, self._clean(value, secrets))
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
