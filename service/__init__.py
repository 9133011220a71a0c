"""music-facade: one stable HTTP API in front of useapi.net's TemPolor music list."""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Callable

from flask import Flask

from . import access, clients, cors, errors, limits, logs, meta, music
from .cache import MemoryBackend, PageCache
from .config import Settings, load_settings
from .guards import Guards
from .proxies import TrustedProxyFix
from .upstream import UpstreamClient

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], float] = time.time
) -> Flask:
    """Build the WSGI app; without settings, read them from MUSIC_CONFIG and the environment.

    clock is the time source of the page cache and the upstream guards (cooldowns, breaker),
    for tests that age pages and guard states without waiting.
    """
    settings = settings if settings is not None else load_settings()
    logs.redact([settings.upstream.token.reveal()])
    # Each worker thread may hold one upstream connection; MUSIC_THREADS is gunicorn's threads.
    pool_size = int(os.environ.get("MUSIC_THREADS", "8"))
    app = Flask(__name__)
    if settings.proxy_hops:
        # Behind N trusted proxies the caller is the Nth address from the right in X-Forwarded-For,
        # believed only when the connecting peer is one of those proxies.
        networks = [ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies]
        app.wsgi_app = TrustedProxyFix(app.wsgi_app, settings.proxy_hops, networks)  # type: ignore[method-assign]
    # Order matters: request id first, then who is calling, then limits, then the views.
    access.register(app)
    errors.register(app)
    clients.register(app, settings.clients)
    limits.register(app, settings.limits, bool(settings.clients), music.bp)
    cors.register(app, settings.cors_origins)
    meta.register(app)
    if not settings.clients:
        log.warning("no [[clients]] configured: /music is open to anyone who can reach it")
    cache = PageCache(settings.cache, clock=clock)
    guards = Guards(settings.upstream, clock=clock)
    if settings.redis is not None:
        _share(app, settings, cache, guards)
    music.register(
        app, settings, UpstreamClient(settings.upstream, pool_size, guards=guards), cache
    )
    return app


def _share(app: Flask, settings: Settings, cache: PageCache, guards: Guards) -> None:
    """Put pages, single flights and upstream guards in Redis, shared by every replica."""
    from .guards.shared import SharedGuardStore
    from .shared import SharedStore
    from .shared.flights import FleetFlights
    from .shared.pages import SharedBackend

    assert settings.redis is not None
    logs.redact(settings.redis.secrets())
    store = SharedStore(settings.redis)
    assert isinstance(cache.backend, MemoryBackend)
    retention = settings.cache.ttl + settings.cache.stale_if_error + 1
    cache.backend = SharedBackend(store, cache.backend, retention, cache.is_fresh)
    cache.fleet = FleetFlights(store, settings.upstream.exchange_deadline + 1)
    guards.store = SharedGuardStore(store, guards.clock)
    app.extensions["store"] = store
