"""music-facade: one stable HTTP API in front of useapi.net's TemPolor music list."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from flask import Flask

from . import access, errors, meta, music
from .cache import PageCache
from .config import Settings, load_settings
from .upstream import UpstreamClient

__all__ = ["create_app"]


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], float] = time.time
) -> Flask:
    """Build the WSGI app; without settings, read them from MUSIC_CONFIG and the environment.

    clock is the cache's time source, for tests that age cached pages without waiting.
    """
    settings = settings if settings is not None else load_settings()
    # Each worker thread may hold one upstream connection; MUSIC_THREADS is gunicorn's threads.
    pool_size = int(os.environ.get("MUSIC_THREADS", "8"))
    app = Flask(__name__)
    access.register(app)
    errors.register(app)
    meta.register(app)
    music.register(
        app,
        settings,
        UpstreamClient(settings.upstream, pool_size),
        PageCache(settings.cache, clock=clock),
    )
    return app
