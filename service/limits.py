"""Rate limits per client (or per address in open mode), with RateLimit headers and 429 problems."""

from __future__ import annotations

import logging
import math
import time

from flask import Blueprint, Flask, Response, request
from flask_limiter import Limiter, RateLimitExceeded

from .clients import caller
from .config import LimitSettings
from .errors import Problem, problem_response

log = logging.getLogger(__name__)


class RateLimited(Problem):
    status, code, title = 429, "rate_limited", "Too many requests"


class Limits:
    """One app's limiter: which bucket a request counts against, and how much it holds."""

    def __init__(self, settings: LimitSettings, clients_required: bool) -> None:
        self.settings = settings
        self.clients_required = clients_required
        self.limiter = Limiter(
            key_func=self.bucket,
            storage_uri="memory://",  # per worker process; a shared store comes with replicas
            strategy="sliding-window-counter",
            headers_enabled=False,  # set by _headers: Flask-Limiter puts Retry-After on 200s
            swallow_errors=True,  # a limiter fault must not take /music down; it is logged
        )

    def bucket(self) -> str:
        """The identified client's name, else the caller's address."""
        client = caller().client
        return f"client:{client.name}" if client else f"addr:{request.remote_addr}"

    def limit(self) -> str:
        """The limit of the current request's bucket."""
        client = caller().client
        if client is not None:
            return client.rate_limit or self.settings.default
        if not self.clients_required and self.settings.per_address:
            return self.settings.per_address
        return self.settings.default

    def exempt(self) -> bool:
        """Preflights never count; in open mode nothing counts unless per_address is set."""
        if request.method == "OPTIONS":
            return True
        return not self.clients_required and self.settings.per_address is None

    def _headers(self, resp: Response) -> Response:
        current = self.limiter.current_limit
        if current is None:
            return resp
        amount = current.limit.amount
        window = current.limit.get_expiry()
        reset_in = max(0, math.ceil(current.reset_at - time.time()))
        remaining = 0 if current.breached else max(0, current.remaining)
        resp.headers["RateLimit-Policy"] = f'"music";q={amount};w={window}'
        resp.headers["RateLimit"] = f'"music";r={remaining};t={reset_in}'
        resp.headers["X-RateLimit-Limit"] = str(amount)
        resp.headers["X-RateLimit-Remaining"] = str(remaining)
        resp.headers["X-RateLimit-Reset"] = str(current.reset_at)
        if current.breached:
            resp.headers["Retry-After"] = str(max(1, reset_in))
        return resp

    def _exceeded(self, exc: RateLimitExceeded) -> Response:
        who = caller().client
        log.warning("rate limit exceeded", extra={"client": who.name if who else None})
        problem = RateLimited(f"Over the limit of {exc.limit.limit} requests; slow down.")
        return problem_response(problem.status, problem.body())


def register(app: Flask, settings: LimitSettings, clients_required: bool, bp: Blueprint) -> None:
    """Limit the routes of `bp`; every other route (health, spec, metrics) is never counted."""
    limits = Limits(settings, clients_required)
    limits.limiter.init_app(app)
    limits.limiter.limit(limits.limit, exempt_when=limits.exempt)(bp)
    app.register_error_handler(RateLimitExceeded, limits._exceeded)
    app.after_request(limits._headers)
    app.extensions["limits"] = limits
