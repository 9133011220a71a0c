"""create_app: the WSGI app, one module per concept wired in order."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import access, clients, cors, errors, limits, logs, meta, music
from .bulkhead import Bulkhead
from .cache import PageCache
from .config import Settings, load_settings
from .upstream import UpstreamClient

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], float] = time.time
) -> Flask:
    """Build the WSGI app; without settings, read them from MUSIC_CONFIG and the environment.

    clock is the cache's time source, for tests that age cached pages without waiting.
    """
    settings = settings if settings is not None else load_settings()
    logs.redact([settings.upstream.token.reveal()])
    app = Flask(__name__)
    if settings.proxy_hops:
        # Behind N trusted proxies the caller is the Nth address from the right in X-Forwarded-For.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops)  # type: ignore[method-assign]
    # Order matters: request id first, then who is calling, then limits, then the views.
    access.register(app)
    errors.register(app)
    clients.register(app, settings.clients)
    limits.register(app, settings.limits, bool(settings.clients), music.bp)
    cors.register(app, settings.cors_origins)
    meta.register(app)
    if not settings.clients:
        log.warning("no [[clients]] configured: /music is open to anyone who can reach it")
    music.register(
        app,
        settings,
        # One pooled connection per bulkhead slot: no churn, and no more than the slots.
        UpstreamClient(settings.upstream, settings.bulkhead.max_concurrent_calls),
        PageCache(settings.cache, clock=clock),
        Bulkhead(settings.bulkhead),
    )
    return app
