"""Prometheus metrics: what the service counts, and GET /metrics (summed over gunicorn's workers).

Under gunicorn every worker writes its numbers to memory-mapped files in
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode; the master prepares the
directory, music_facade/multiproc.py) and /metrics sums them, whichever worker answers. Without that
directory (tests, `python -m music_facade`) the app's own registry is exposed.

Labels never take a caller's values: routes are the app's own rules, methods a fixed set,
statuses the service's own, client names and account aliases the operator's configuration
(OIDC callers are one "oidc" client, never their subject). The hot path (a cached page) resolves
each distinct label set once and keeps the bound child.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map

from .config import MetricsSettings, Settings
from .errors import Problem, UpstreamFailure
from .multiproc import ENV

if TYPE_CHECKING:  # the mirror (SQLAlchemy) is imported only where it is configured
    from .mirror.outbox import Backlog

bp = Blueprint("metrics", __name__)


class _ProcessId:
    """This process's id, read once and again after a fork (not a system call per use)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.pid = os.getpid()

    def __call__(self) -> int:
        return self.pid


if ENV in os.environ:
    # prometheus_client's documented hook for the process identifier of multiprocess mode: its
    # default, os.getpid, is called on every increment (a system call each, since glibc 2.25
    # stopped caching it), and the hot path (a cached page) makes four.
    values.ValueClass = values.MultiProcessValue(process_identifier=_ProcessId())  # type: ignore[no-untyped-call]

PREFIX = "music_facade_"
# Methods a route may see; anything else a caller invents is counted as "other".
METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})
ANONYMOUS = "anonymous"  # no client configured (open mode), or none proven
UNMATCHED = "unmatched"  # a path no route serves (404): never the path itself
_VARIABLE_RE = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")
# A cached page takes well under a millisecond; an upstream call up to the exchange deadline.
REQUEST_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
# The upstream's outcomes (UpstreamFailure codes), besides "ok".
SOURCES = ("request", "mirror")
"""Who an upstream call was made for: a caller's request, or the mirror's sync."""
UPSTREAM_OUTCOMES = (
    "ok",
    "upstream_rejected",
    "upstream_auth_failed",
    "upstream_rate_limited",
    "upstream_error",
    "upstream_timeout",
    "upstream_unreachable",
)
# Guard refusals (music_facade.errors GuardRefusal subclasses) by class name → reason label.
REFUSALS = {
    "CoolingDown": "cooldown",
    "AuthFailureRemembered": "auth_failure_remembered",
    "BreakerOpen": "breaker_open",
}
CACHE_OUTCOMES = ("hit", "miss", "stale", "collapsed", "bypass", "stale_if_error")
# What a recorded webhook attempt came to (music_facade.webhooks).
WEBHOOK_OUTCOMES = ("delivered", "retried", "failed")
# Cache outcomes after which this process stored a page: its cache gauges change.
STORED = frozenset({"miss", "stale"})


class MetricsForbidden(Problem, code="metrics_forbidden"):
    """The caller may not read /metrics ([metrics] allow, token_sha256)."""


def client_label(name: str | None) -> str:
    """The client label of a caller: a configured name, "oidc" for any OIDC caller, or
    "anonymous"."""
    if not name:
        return ANONYMOUS
    if name.startswith("oidc:"):  # a subject is the IdP's (and so nearly the caller's) value
        return "oidc"
    return name


def cache_outcome(cache_status: str) -> str:
    """A Cache-Status value (music_facade.cache) as one of CACHE_OUTCOMES."""
    if cache_status.endswith("; collapsed"):
        return "collapsed"
    if "; hit" in cache_status:
        return "hit"
    if "detail=stale-if-error" in cache_status:
        return "stale_if_error"
    if "fwd=stale" in cache_status:
        return "stale"
    if "fwd=bypass" in cache_status:
        return "bypass"
    return "miss"


class Metrics:
    """Every metric of one process, with the label children the hot paths use."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.multiprocess_dir = os.environ.get(ENV) or None
        # Aliases label accounts; the upstream user_ids behind them are not shown. An id
        # several aliases share is labelled with the first.
        self.aliases: dict[str, str] = {}
        for alias, user_id in settings.users.items():
            self.aliases.setdefault(user_id, alias)
        r = self.registry
        self.requests = Counter(
            PREFIX + "requests",
            "Requests answered, by route, method, status and client name.",
            ["route", "method", "status", "client"],
            registry=r,
        )
        self.duration = Histogram(
            PREFIX + "request_duration_seconds",
            "Time to answer a request, by route.",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.page_cache = Counter(
            PREFIX + "page_cache",
            "Page-cache lookups of /music by outcome (hit, miss, stale, collapsed into "
            "another request's upstream call, bypass with the cache off, stale_if_error).",
            ["outcome"],
            registry=r,
        )
        self.upstream_calls = Counter(
            PREFIX + "upstream_calls",
            "Upstream calls by account alias, outcome (ok, or the problem code) and source "
            "(request: made for a caller; mirror: the mirror's sync).",
            ["account", "outcome", "source"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            PREFIX + "upstream_duration_seconds",
            "Time of an upstream call (with its retries), by account alias.",
            ["account"],
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self.upstream_refusals = Counter(
            PREFIX + "upstream_refusals",
            "Upstream calls not made because a guard refused them, by account and reason.",
            ["account", "reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            PREFIX + "rate_limited",
            "Requests refused by the service's own rate limit (429), by client name.",
            ["client"],
            registry=r,
        )
        # Expiry times, not flags: a state another worker or replica ended then expires on its
        # own, and `> time()` in a query tells the state now. The largest over live workers.
        self.breaker_open_until = Gauge(
            PREFIX + "upstream_breaker_open_until_timestamp_seconds",
            "Unix time until which the account's circuit breaker is open (0: closed).",
            ["account"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.cooldown_until = Gauge(
            PREFIX + "upstream_cooldown_until_timestamp_seconds",
            "Unix time until which the account cools down after an upstream 429 (0: none).",
            ["account"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.auth_failed_until = Gauge(
            PREFIX + "upstream_auth_failed_until_timestamp_seconds",
            "Unix time until which the upstream's refusal of the credentials is remembered.",
            ["account"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.cache_entries = Gauge(
            PREFIX + "cache_entries",
            "Pages in this process's memory cache (as of its last store or scrape).",
            multiprocess_mode="liveall",
            registry=r,
        )
        self.cache_bytes = Gauge(
            PREFIX + "cache_bytes",
            "Bytes of page bodies in this process's memory cache (as of its last store or scrape).",
            multiprocess_mode="liveall",
            registry=r,
        )
        self.upstream_in_flight = Gauge(
            PREFIX + "upstream_in_flight",
            "Upstream calls in flight (bulkhead slots taken), summed over workers.",
            multiprocess_mode="livesum",
            registry=r,
        )
        # The mirror's: set by the process syncing the account (the largest over live workers).
        self.mirror_tracks = Gauge(
            PREFIX + "mirror_tracks",
            "Tracks the mirror holds, by account alias, type and status.",
            ["account", "type", "status"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.mirror_synced = Gauge(
            PREFIX + "mirror_last_complete_sync_timestamp_seconds",
            "Unix time of the account's last complete sync (0: none yet); its lag is "
            "time() minus this.",
            ["account", "type"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.mirror_syncs = Counter(
            PREFIX + "mirror_syncs",
            "The mirror's syncs by account alias, type, kind (backfill, incremental, active, "
            "reconcile) and outcome (ok, or the problem code).",
            ["account", "type", "kind", "outcome"],
            registry=r,
        )
        # Webhooks, labelled by their configured names (never a URL). The backlog is read from
        # the shared database by every process's deliverer: all see the same, hence the max.
        self.webhook_deliveries = Counter(
            PREFIX + "webhook_deliveries",
            "Webhook delivery attempts recorded, by webhook name and outcome (delivered, "
            "retried: another attempt is scheduled, failed: its 24 hours ran out).",
            ["webhook", "outcome"],
            registry=r,
        )
        self.webhook_pending = Gauge(
            PREFIX + "webhook_pending",
            "Webhook deliveries waiting to be delivered, by webhook name (read every few "
            "seconds from the outbox).",
            ["webhook"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.webhook_oldest_age = Gauge(
            PREFIX + "webhook_oldest_pending_age_seconds",
            "Age of the webhook's oldest pending delivery (0: none pending), as of the last "
            "read of the outbox.",
            ["webhook"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._webhook_children = {
            (hook.name, outcome): self.webhook_deliveries.labels(hook.name, outcome)
            for hook in settings.webhooks
            for outcome in WEBHOOK_OUTCOMES
        }
        self.redis_available: Gauge | None = None
        self.redis_errors: Counter | None = None
        self._request_children: dict[tuple[str, str, int, str], Any] = {}
        self._duration_children: dict[str, Any] = {}
        self._cache_children = {o: self.page_cache.labels(o) for o in CACHE_OUTCOMES}
        self._in_flight_inc = self.upstream_in_flight.inc
        self._in_flight_dec = self.upstream_in_flight.dec
        # Every account's series exist from the start: rate() and alerts see a zero, not a gap.
        self._calls = {}
        self._upstream_durations: dict[str, Any] = {}
        self._guard_gauges = (self.breaker_open_until, self.cooldown_until, self.auth_failed_until)
        self._guard_values: dict[str, tuple[float, float, float]] = {}
        for alias in self.aliases.values():
            for outcome in UPSTREAM_OUTCOMES:
                for source in SOURCES if settings.mirror is not None else SOURCES[:1]:
                    key = (alias, outcome, source)
                    self._calls[key] = self.upstream_calls.labels(*key)
            for reason in REFUSALS.values():
                self.upstream_refusals.labels(alias, reason)
            self._upstream_durations[alias] = self.upstream_duration.labels(alias)
            self._guard_values[alias] = (0.0, 0.0, 0.0)
            for gauge in self._guard_gauges:
                gauge.labels(alias).set(0)
        for client in {*(c.name for c in settings.clients), ANONYMOUS}:
            self.rate_limited.labels(client_label(client))

    # --- requests -------------------------------------------------------------------------

    def request(self, route: str, method: str, status: int, client: str, seconds: float) -> None:
        """Count one answered request and its duration."""
        # Before the lookup: a method a caller invents must not grow the table either.
        method = method if method in METHODS else "other"
        key = (route, method, status, client)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(
                route, method, str(status), client
            )
        child.inc()
        hist = self._duration_children.get(route)
        if hist is None:
            hist = self._duration_children[route] = self.duration.labels(route)
        hist.observe(seconds)

    def page(self, cache_status: str) -> str:
        """Count one page-cache lookup by its Cache-Status; return its outcome."""
        outcome = cache_outcome(cache_status)
        self._cache_children[outcome].inc()
        return outcome

    def limited(self, client: str) -> None:
        """Count one request refused by the rate limit."""
        self.rate_limited.labels(client).inc()

    # --- the upstream (upstream, guards, bulkhead) -----------------------------------------------

    def upstream_call(
        self, user_id: str, outcome: str, seconds: float, source: str = "request"
    ) -> None:
        """Count one upstream call (ok or a problem code) and its duration."""
        alias = self.aliases.get(user_id, "other")
        key = (alias, outcome, source)
        child = self._calls.get(key)
        if child is None:  # an outcome or account not pre-bound (a new problem code)
            child = self._calls[key] = self.upstream_calls.labels(*key)
        child.inc()
        hist = self._upstream_durations.get(alias)
        if hist is None:
            hist = self._upstream_durations[alias] = self.upstream_duration.labels(alias)
        hist.observe(seconds)

    def upstream_refused(self, user_id: str, refusal: UpstreamFailure) -> None:
        """Count one call a guard refused (cooldown, remembered auth failure, breaker)."""
        reason = REFUSALS.get(type(refusal).__name__, "other")
        self.upstream_refusals.labels(self.aliases.get(user_id, "other"), reason).inc()

    def mirror_sync(
        self, alias: str, type_: str, kind: str, outcome: str, last_complete: float | None
    ) -> None:
        """Count one sync of the mirror and note the account's last complete one."""
        self.mirror_syncs.labels(alias, type_, kind, outcome).inc()
        if last_complete is not None:
            self.mirror_synced.labels(alias, type_).set(last_complete)

    def mirror_counts(self, alias: str, type_: str, counts: dict[str, int]) -> None:
        """The mirror's tracks of an account and type, by status."""
        for status in ("generating", "failed", "completed", "unknown"):
            self.mirror_tracks.labels(alias, type_, status).set(counts.get(status, 0))

    def webhook_attempt(self, webhook: str, outcome: str) -> None:
        """Count one recorded webhook attempt."""
        child = self._webhook_children.get((webhook, outcome))
        if child is None:
            child = self._webhook_children[webhook, outcome] = self.webhook_deliveries.labels(
                webhook, outcome
            )
        child.inc()

    def webhook_backlog(self, backlog: Mapping[str, Backlog], now: float) -> None:
        """Each webhook's pending deliveries and the age of the oldest (0 when none)."""
        for webhook, found in backlog.items():
            self.webhook_pending.labels(webhook).set(found.pending)
            oldest = found.oldest_created_at
            age = 0.0 if oldest is None else max(0.0, now - oldest)
            self.webhook_oldest_age.labels(webhook).set(age)

    def guard_state(
        self, user_id: str, open_until: float, cooldown_until: float, auth_failed_until: float
    ) -> None:
        """Record an account's guard state (told before every call and after every change)."""
        alias = self.aliases.get(user_id, "other")
        values = (open_until, cooldown_until, auth_failed_until)
        if self._guard_values.get(alias) == values:
            return  # what this process's gauges already hold
        self._guard_values[alias] = values
        for gauge, value in zip(self._guard_gauges, values, strict=True):
            gauge.labels(alias).set(value)

    def in_flight(self, delta: int) -> None:
        """A bulkhead slot was taken (+1) or given back (-1)."""
        if delta > 0:
            self._in_flight_inc()
        else:
            self._in_flight_dec()

    # --- the page cache and Redis ------------------------------------------------------------

    def cache_size(self, entries: int, size: int) -> None:
        """This process's memory cache: pages and bytes."""
        self.cache_entries.set(entries)
        self.cache_bytes.set(size)

    def track_redis(self) -> None:
        """Export Redis availability and errors (only when Redis is configured)."""
        self.redis_available = Gauge(
            PREFIX + "redis_available",
            "1 while Redis answers, 0 while this process backs off from it (the lowest over "
            "live workers).",
            multiprocess_mode="livemin",
            registry=self.registry,
        )
        self.redis_available.set(1)
        self.redis_errors = Counter(
            PREFIX + "redis_errors",
            "Redis calls that failed (timeout, connection, error reply).",
            registry=self.registry,
        )

    def redis_status(self, available: bool) -> None:
        """Redis went down (backoff started) or came back."""
        if self.redis_available is not None:
            self.redis_available.set(1 if available else 0)

    def redis_error(self) -> None:
        """One Redis call failed."""
        if self.redis_errors is not None:
            self.redis_errors.inc()

    # --- exposition --------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The text format: every worker's numbers summed, or this process's alone."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        # A new registry each time: MultiProcessCollector reads the files when collected.
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


class ScrapeAccess:
    """[metrics] allow and token_sha256: who may read /metrics.

    closed (Settings.metrics_access): callers need a credential and neither key is set. The
    metrics name every alias and client, which a key holder must not learn, and no caller's
    credential opens them: nobody may read them until the operator says who may.
    """

    def __init__(self, settings: MetricsSettings, *, closed: bool = False) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in settings.allow)
        self.digests = tuple(bytes.fromhex(d) for d in settings.token_sha256)
        self.closed = closed

    def check(self, remote_addr: str | None, authorization: str | None) -> None:
        """Return if the scrape is allowed; raise MetricsForbidden saying why not."""
        if self.closed:
            raise MetricsForbidden(
                "The metrics are closed: callers need a credential here, and neither "
                "[metrics] allow nor [metrics] token_sha256 says who may read them."
            )
        if self.networks and not self._allowed(remote_addr):
            raise MetricsForbidden("This address may not read the metrics ([metrics] allow).")
        if self.digests:
            scheme, _, token = (authorization or "").partition(" ")
            digest = hashlib.sha256(token.strip().encode()).digest()
            # Compared with every configured digest, in constant time each.
            ok = scheme.lower() == "bearer" and any(
                hmac.compare_digest(digest, d) for d in self.digests
            )
            if not ok:
                raise MetricsForbidden(
                    "Reading the metrics needs 'Authorization: Bearer <token>' with the scrape "
                    "token ([metrics] token_sha256)."
                )

    def _allowed(self, remote_addr: str | None) -> bool:
        try:
            address = ipaddress.ip_address((remote_addr or "").split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


@bp.get("/metrics")
def scrape() -> Response:
    """Prometheus text format; not rate limited, logged at DEBUG like the probes."""
    access: ScrapeAccess = current_app.extensions["metrics_access"]
    access.check(request.remote_addr, request.headers.get("Authorization"))
    metrics: Metrics = current_app.extensions["metrics"]
    music = current_app.extensions.get("music")
    if music is not None:  # this worker's cache gauges, fresh for the scrape
        metrics.cache_size(*music.cache.backend.size())
    resp = Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def template(rule: str) -> str:
    """A Flask rule as openapi.yaml writes its path: /music/<track_id:id> → /music/{id}."""
    return _VARIABLE_RE.sub(r"{\1}", rule)


def route_of(url_map: Map, path: str) -> str:
    """The template of the rule serving path for some method, or UNMATCHED."""
    try:
        # Every rule answers OPTIONS: matching with it finds the rule whatever the method.
        rule, _ = url_map.bind("").match(path, method="OPTIONS", return_rule=True)
    except HTTPException:
        return UNMATCHED
    return template(str(rule.rule))


def register(app: Flask, metrics: Metrics, settings: Settings) -> None:
    """Mount /metrics (requests are counted by music_facade.pipeline)."""
    app.extensions["metrics"] = metrics
    closed = settings.metrics_access == "closed"
    app.extensions["metrics_access"] = ScrapeAccess(settings.metrics, closed=closed)
    app.register_blueprint(bp)
