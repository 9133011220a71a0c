"""create_app: the WSGI app, one module per concept wired in order."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Flask

from . import (
    auth,
    cors,
    error_handler,
    limits,
    logs,
    master,
    meta,
    metrics,
    music,
    pipeline,
    startup,
)
from .backends import Backends
from .bulkhead import Bulkhead
from .cache import PageCache
from .config import Settings, load_settings
from .core.music import Music
from .events import Events
from .guards import Guards
from .lifecycle import Lifecycle
from .proxies import TrustedProxyFix
from .queries import MirrorAnswers
from .stream_leases import StreamLeaseStore
from .tickets import Tickets
from .upstream import UpstreamClient

if TYPE_CHECKING:
    from .mirroring import Mirror

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    steps: Callable[..., list[pipeline.Step]] = pipeline.steps,
    sync: bool = True,
) -> Flask:
    """Build the WSGI app; without settings, the ones gunicorn's master validated (a worker
    inherits them: music_facade.master), else read from MUSIC_CONFIG and the environment.

    clock is the time source of the page cache and the upstream guards (cooldowns, breaker),
    for tests that age pages and guard states without waiting. steps makes the request
    pipeline's steps from the authenticator, CORS and metrics (music_facade.pipeline.steps).
    With [mirror], sync=False builds the mirror without starting its syncer (tests step it).
    """
    held = master.held()
    if settings is None:
        settings = held if held is not None else load_settings()
    logs.redact([settings.upstream.token.reveal()])
    logs.skip_unused_record_fields()
    app = Flask("music_facade")
    measures = metrics.Metrics(settings)
    # Memory, or Redis for every replica: chosen before anything that keeps state is built.
    chosen = Backends.choose(settings, clock, measures)
    authenticator = _authenticator(settings, clock)
    rate_limits = limits.Limits(settings.limits, authenticator.required, chosen.limit_storage)
    cross_origin = cors.Cors(settings.cors_origins)
    cache = PageCache(settings.cache, chosen.pages, clock, chosen.fleet)
    guards = Guards(
        settings.upstream,
        chosen.guard_store,
        clock,
        observe=lambda user_id, s: measures.guard_state(
            user_id, s.open_until, s.cooldown_until, s.auth_failed_until
        ),
    )
    # One pooled connection per bulkhead slot: no churn, and no more than the slots.
    upstream = UpstreamClient(
        settings.upstream,
        settings.bulkhead.max_concurrent_calls,
        guards=guards,
        metrics=measures,
    )
    bulkhead = Bulkhead(settings.bulkhead, observe=measures.in_flight)
    the_music = Music(settings, upstream, cache, bulkhead)
    mirror = None
    if settings.mirror is not None:
        # Imported only with the mirror on: SQLAlchemy and its drivers are about 18 MB a worker.
        from .mirroring import Mirror

        mirror = Mirror(settings, guards, measures, clock)
    # Every entrance (the handler below, Flask's routes, gunicorn's refusals) runs these steps.
    every_request = pipeline.Pipeline(steps(authenticator, cross_origin, measures))
    pipeline.install(app, every_request)
    app.extensions["auth"] = authenticator
    metrics.register(app, measures, settings)
    error_handler.register(app)
    cors.register(app, cross_origin)
    meta.register(app, settings)
    music.register(app, the_music, mirrored=mirror is not None)
    if mirror is not None:
        app.extensions["mirror"] = mirror
    app.extensions["limits"] = rate_limits
    if chosen.store is not None:
        app.extensions["store"] = chosen.store
    streams = _events(settings, mirror, app.extensions["lifecycle"], chosen.stream_leases)
    if streams is not None:
        app.extensions["events"] = streams
    # GET and HEAD /music, hits and misses, never build a Flask request (music_facade.music).
    handler = music.MusicHandler(
        app.wsgi_app,
        the_music,
        every_request,
        authenticator.required,
        rate_limits,
        cross_origin,
        measures,
        MirrorAnswers(settings, mirror.store) if mirror is not None else None,
        streams,
        Tickets(chosen.tickets, clock),
    )
    app.wsgi_app = handler  # type: ignore[method-assign]
    if settings.proxy_hops:
        # Behind N trusted proxies the caller is the Nth address from the right in X-Forwarded-For,
        # believed only when the connecting peer is one of those proxies. Outermost: every rule
        # inside (limits, logs) sees the caller's address.
        networks = [ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies]
        app.wsgi_app = TrustedProxyFix(app.wsgi_app, settings.proxy_hops, networks)  # type: ignore[method-assign]
    # Outermost: whatever escapes every handler is still a problem+json 500, counted.
    app.wsgi_app = error_handler.LastResort(  # type: ignore[method-assign]
        app.wsgi_app, every_request, lambda path: metrics.route_of(app.url_map, path)
    )
    if mirror is not None and sync:
        mirror.start()
    if settings is not held:  # the master said what runs already, once for all workers
        startup.log_summary(settings, workers=1)
    return app


def _events(
    settings: Settings, mirror: Mirror | None, lifecycle: Lifecycle, leases: StreamLeaseStore
) -> Events | None:
    """GET /events, with the mirror on: its streams end when the process begins shutting down,
    each caller's counted in leases."""
    if mirror is None:
        return None
    return Events(
        settings.events, settings.library, mirror.store, lifecycle, leases, mirror.wakeups
    )


def _authenticator(settings: Settings, clock: Callable[[], float]) -> auth.Authenticator:
    """Keys from [[clients]], tokens from [oidc] when configured."""
    tokens = None
    if settings.oidc is not None:
        from .auth.oidc import TokenVerifier  # PyJWT and cryptography only when used

        tokens = TokenVerifier(settings.oidc, clock=clock)
    return auth.Authenticator(auth.ClientRegistry(settings.clients), tokens)
