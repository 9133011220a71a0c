"""Logging set-up: one JSON object per line on stderr, for the app and for gunicorn."""

from __future__ import annotations

import logging
import logging.config
import time
from contextvars import ContextVar
from typing import Any

from . import jsoncodec, trace

# The credential the current request presented (set by music_facade.auth.presented): a secret
# for the log lines written while it runs. Per thread, and per greenlet under gevent.
PRESENTED: ContextVar[str | None] = ContextVar("presented_credential", default=None)

# A LogRecord's own attributes; everything else on a record came from `extra=` and is a field.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    "json_line",  # the line RedactSecrets formatted and checked (JsonLines.format reuses it)
}


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message, exc_info, then the extras.

    The fields python-json-logger wrote here before, at a fraction of its cost per record (the
    access log writes one per request): no per-record field-spec parsing, and the time's
    seconds are formatted once per second.
    """

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """'2026-11-24 19:59:03,393', as logging's default."""
        second, text = self._second
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._second = (second, text)
        return f"{text},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (made once: RedactSecrets made it already)."""
        line = record.__dict__.get("json_line")
        if line is None:
            line = record.__dict__["json_line"] = self._line(record)
        return line

    def _line(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc_info"] = record.exc_text
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        current = trace.CURRENT.get()
        if current is not None:
            doc["trace_id"] = current.trace_id  # every line written while a request runs
        attrs = _RECORD_ATTRS
        doc.update({name: value for name, value in vars(record).items() if name not in attrs})
        return jsoncodec.line(doc)


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A dictConfig that sends the service's and gunicorn's logs to stderr as JSON lines."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "music_facade.logs.JsonLines"}},
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


def skip_unused_record_fields() -> None:
    """Stop logging from looking up, for every record, what our JSON lines never print.

    The caller's frame (a stack walk), thread, process and task names: the documented switches
    of the logging module (see its "Optimization" section).
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class LineRecords:
    """Records for a line the service writes on every request (the access line, an upstream
    call's), made at a fraction of Logger.info's cost.

    What logging works out for every record (the caller's file and function, thread and
    process, by a path split and lookups; `extra`'s per-key collision checks) is the same for
    every such line: worked out once here, and copied in. The records are complete LogRecords
    (a %-style formatter reads one); the caller adds its fields and passes it to Logger.handle.
    """

    def __init__(self, logger: logging.Logger, msg: str, path: str, func: str) -> None:
        self.logger = logger
        record = logging.LogRecord(logger.name, logging.INFO, path, 0, msg, None, None, func)
        self._constant = {
            name: value for name, value in vars(record).items() if name not in _PER_RECORD
        } | dict.fromkeys(("thread", "threadName", "process", "processName"))  # never printed

    def record(self, level: int, args: tuple[Any, ...] | None) -> logging.LogRecord:
        """A record of this line at level, with these %-arguments for its message."""
        record = logging.LogRecord.__new__(logging.LogRecord)  # its __init__ is not called
        created = time.time()
        fields = record.__dict__
        fields.update(self._constant)
        fields["args"] = args
        fields["levelno"] = level
        fields["levelname"] = logging.getLevelName(level)
        fields["created"] = created
        fields["msecs"] = int((created - int(created)) * 1000) + 0.0
        fields["relativeCreated"] = (created - _LOADED) * 1000
        return record

    def emit(self, level: int, args: tuple[Any, ...] | None, fields: dict[str, Any]) -> None:
        """Log the line with these fields, if its logger logs at level."""
        if self.logger.isEnabledFor(level):
            record = self.record(level, args)
            record.__dict__.update(fields)  # fixed names, never a record's own
            self.logger.handle(record)


_PER_RECORD = ("args", "levelno", "levelname", "created", "msecs", "relativeCreated")
_LOADED = time.time()


class RedactSecrets(logging.Filter):
    """Replace known secrets in a record's message, traceback and extra fields with ********.

    Our own code never logs a secret; this catches a library that puts one in an exception.
    The record is checked as the line it becomes: formatted once (JsonLines reuses the line),
    then one scan per secret. Only a line with a secret in it costs more: the record's fields
    are rewritten in place (so every handler sees them clean) and the line made again.
    """

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets: set[str] = set()
        # A secret as it appears inside a JSON string (quotes, backslashes, non-ASCII escaped).
        self._escaped: list[str] = []
        self.add(secrets)

    def add(self, secrets: list[str]) -> None:
        """Redact these secrets too."""
        self.secrets.update(s for s in secrets if s)
        self._escaped = [_escaped(s) for s in self.secrets]

    def _presented(self) -> str | None:
        """The credential the current caller presented: known only while its request runs."""
        presented = PRESENTED.get()
        if presented and len(presented) >= 8:  # a short one would garble the whole line
            return presented
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place when it holds a secret; never drop it."""
        presented = self._presented()
        line = _LINES.format(record)
        escaped = self._escaped if presented is None else [*self._escaped, _escaped(presented)]
        if any(secret in line for secret in escaped):
            secrets = list(self.secrets) if presented is None else [*self.secrets, presented]
            _clean_record(record, secrets)
        return True


_LINES = JsonLines()


def _escaped(secret: str) -> str:
    return jsoncodec.encoded(secret)


def _clean_record(record: logging.LogRecord, secrets: list[str]) -> None:
    """Replace the secrets in every text a record holds, and drop its formatted line."""

    def clean(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "********")
        return text

    fields = vars(record)
    fields.pop("json_line", None)
    record.msg = clean(record.getMessage())
    record.args = None
    if record.exc_info:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
    for name, value in list(fields.items()):
        if name not in _RECORD_ATTRS and not isinstance(value, str | int | float | None):
            value = str(value)  # the formatter would print its str(): clean that
        if isinstance(value, str):
            setattr(record, name, clean(value))


def redact(secrets: list[str]) -> None:
    """Make every handler the root and gunicorn loggers have now redact these secrets too."""
    for name in (None, "gunicorn.error", "gunicorn.access"):
        for handler in logging.getLogger(name).handlers:
            found = [f for f in handler.filters if isinstance(f, RedactSecrets)]
            if found:
                found[0].add(secrets)
            else:
                handler.addFilter(RedactSecrets(secrets))
