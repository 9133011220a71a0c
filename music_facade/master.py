"""What gunicorn's master keeps for its workers: the validated configuration, and its metrics
directory.

The master reads MUSIC_CONFIG once (deploy/gunicorn.conf.py's on_starting), validates it and
holds the Settings here; every worker is forked from the master (no preload) and so inherits
them: a worker (re)spawned after a crash or a timeout never reads the file itself, and all
workers serve one configuration. A SIGHUP re-reads it (on_reload): a broken file is logged and
the last good Settings stay; a good one replaces them for every worker forked after it.

The Settings hold secrets (Secret): they live in the master's memory and are inherited by fork,
never written to a file or an environment variable.

State lives in this module, not in deploy/gunicorn.conf.py: gunicorn executes its configuration
file anew on every SIGHUP, which resets that file's globals. Only the standard library and
music_facade.config here (gunicorn's master must not import requests; see music_facade/__init__.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from .config import ConfigError, Settings, load_settings

log = logging.getLogger(__name__)

_settings: Settings | None = None
_metrics_dir: tuple[Path, bool] | None = None


def held() -> Settings | None:
    """The Settings the master validated (inherited by a forked worker); None outside one."""
    return _settings


def hold(settings: Settings) -> None:
    """Keep settings for every worker forked from now on."""
    global _settings
    _settings = settings


def reload() -> Settings | None:
    """Read and validate MUSIC_CONFIG again: the new Settings (now held), or None when the file
    is unusable, logged as one line, the last good Settings still held."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        # The lines say what is wrong and where; a traceback would say nothing more.
        log.error(
            "configuration reload failed, still serving the previous configuration: %s",
            "; ".join(exc.errors),
            extra={"errors": exc.errors},
        )
        return None
    hold(settings)
    log.info("configuration reloaded from MUSIC_CONFIG")
    return settings


def hold_metrics_dir(path: Path, made: bool) -> None:
    """The workers' metrics directory (multiproc.prepare), and whether it was made here."""
    global _metrics_dir
    _metrics_dir = (path, made)


def metrics_dir() -> tuple[Path, bool] | None:
    """The directory hold_metrics_dir kept, and whether the master made it; None before."""
    return _metrics_dir
