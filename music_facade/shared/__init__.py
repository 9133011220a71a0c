"""SharedStore: the one Redis connection of a process, its timeouts, key prefix and backoff.

Everything that replicas share (pages, flights, rate-limit counters, upstream guards) asks this
object; nothing else opens a Redis client. When Redis is down or slow every call fails fast with
StoreUnavailable for a backoff period, so callers fall back to their per-process state without
paying the timeout on each request, and come back to shared state once a call succeeds again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError, ResponseError

from ..config import RedisSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_BACKOFF = 0.5  # seconds after the first failure; doubles up to settings.backoff_max

GUARD_GENERATION = "guards:gen"
"""The key (under the prefix) that every change of any account's guard state sets to a new
random value (music_facade/guards/shared.py); a page's look sets one when it is missing."""


@dataclass
class GuardView:
    """What a page's load learnt of the guards in the exchange that took the page's lock
    (music_facade/shared/flights.py): the guard generation then, and the checks to make again
    should it have moved by the time the load ends (a check made after the upstream call from a
    kept state is exact only if nothing changed during the call)."""

    generation: str
    again: list[Callable[[], None]] = field(default_factory=list)


seen_generation: ContextVar[GuardView | None] = ContextVar("seen_generation", default=None)
"""The guard view of the page's load running in this context, if any: a guard state this
process read or wrote at its generation is current, and needs no round trip of its own."""


def digest(key: str) -> str:
    """A short, fixed-length key part for a cache key (which holds user ids and cursors)."""
    return hashlib.sha256(key.encode()).hexdigest()[:40]


class StoreUnavailable(Exception):
    """Redis did not answer in time or is in a backoff period; use per-process state."""


class SharedStore:
    """Redis calls with short timeouts, a key prefix, and a backoff while Redis is down."""

    def __init__(
        self,
        settings: RedisSettings,
        clock: Callable[[], float] = time.monotonic,
        *,
        on_error: Callable[[], None] | None = None,
        on_status: Callable[[bool], None] | None = None,
    ) -> None:
        """on_error is told of every failed call; on_status of Redis going away (False) and
        coming back (True)."""
        self.settings = settings
        self.prefix = settings.prefix
        self.clock = clock
        self.pool = redis.BlockingConnectionPool.from_url(
            settings.url.reveal(),
            password=settings.password.reveal() if settings.password else None,
            max_connections=settings.max_connections,
            timeout=settings.timeout,  # waiting for a free pooled connection
            socket_timeout=settings.timeout,
            socket_connect_timeout=settings.timeout,
            health_check_interval=30,
        )
        self.redis = redis.Redis(connection_pool=self.pool)
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._backoff = 0.0  # 0: Redis is up
        self.on_error = on_error
        self.on_status = on_status

    def key(self, *parts: str) -> str:
        """A key under this deployment's prefix."""
        return ":".join((self.prefix, *parts))

    @property
    def available(self) -> bool:
        """False during a backoff period after a failed call."""
        return self.clock() >= self._down_until

    def status(self) -> str:
        """'ok' while Redis answers, 'degraded' while it is backed off."""
        return "ok" if self._backoff == 0 else "degraded"

    def call(self, fn: Callable[[redis.Redis], T]) -> T:
        """fn(redis client)'s result, or StoreUnavailable (at once while backed off)."""
        if not self.available:
            raise StoreUnavailable("Redis is backed off")
        try:
            result = fn(self.redis)
        except (redis.RedisError, OSError) as exc:
            self.failed(exc)
            raise StoreUnavailable(type(exc).__name__) from None
        if self._backoff:
            self.succeeded()
        return result

    def script(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """A registered script's reply, run by EVALSHA in one exchange on a pooled connection;
        StoreUnavailable as call().

        The pool's checks and the connection's health check still run; redis-py's layers over
        a command (its retry wrapper, telemetry, event dispatch, reply callbacks) do not: they
        cost a miss more than the exchange itself (redis-py 7.4: 162 against 115 µs under
        gevent). A Redis that lost its scripts (restarted) gets the script's text with EVAL,
        which caches it again.
        """
        return self.call(lambda _: _evalsha(self.pool, script, keys, args))

    def failed(self, exc: BaseException) -> None:
        """Start (or lengthen) a backoff period; logged once per period."""
        if self.on_error is not None:
            self.on_error()
        with self._lock:
            now = self.clock()
            if now < self._down_until:
                return  # another call already started this period
            self._backoff = min(
                self.settings.backoff_max, self._backoff * 2 if self._backoff else FIRST_BACKOFF
            )
            self._down_until = now + self._backoff
            backoff = self._backoff
        if self.on_status is not None:
            self.on_status(False)
        log.warning(
            "Redis unavailable (%s): per-process state for the next %.1f s",
            type(exc).__name__,
            backoff,
        )

    def succeeded(self) -> None:
        """A call went through: leave the backoff (logged once)."""
        with self._lock:
            if not self._backoff:
                return
            self._backoff = 0.0
            self._down_until = 0.0
        if self.on_status is not None:
            self.on_status(True)
        log.warning("Redis is back: shared state again")

    def close(self) -> None:
        """Close pooled connections."""
        self.pool.disconnect()


def _evalsha(
    pool: redis.ConnectionPool, script: Script, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    conn: Any = pool.get_connection()  # redis-py's Connection methods are untyped
    try:
        conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return conn.read_response()
        except NoScriptError:
            conn.send_command("EVAL", script.script, len(keys), *keys, *args)
            return conn.read_response()
    except ResponseError:
        raise  # an error reply: the connection is in step and stays pooled
    except BaseException:
        conn.disconnect()  # a reply may be half read: never reuse the connection
        raise
    finally:
        pool.release(conn)
