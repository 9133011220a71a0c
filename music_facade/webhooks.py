"""Webhooks: the loop that sends the outbox's deliveries to their receivers, signed.

Each process with [[webhooks]] runs one `Deliverer` in a daemon thread (a greenlet under
gunicorn's gevent worker). It claims due deliveries from the mirror's database (so several
processes never attempt one at once), POSTs each with the Standard Webhooks headers, and
records the outcome: a 2xx answer delivers it; anything else (another status, a redirect, no
answer within the deadline) schedules the next attempt, 5 s at first and doubling to at most
10 minutes apart, until 24 hours after the delivery was made, then it is failed. Every attempt
carries the same webhook-id. The answer's body is read up to 64 KB, and neither it nor the
receiver's URL is ever logged.

Each recorded attempt is told to `observe` (webhook name and outcome: delivered, retried,
failed), and every few seconds the loop reads each webhook's backlog from the outbox and tells
`backlog`: the metrics come from these (music_facade/mirroring.py).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import urllib3
import urllib3.exceptions
from standardwebhooks import Webhook

from .config import WebhookSettings
from .mirror.outbox import DELIVERED, FAILED, PENDING, Backlog, Delivery, Outbox
from .wakeups import Wakeups
from .watchdog import POOL_CLASSES, Watchdog

log = logging.getLogger(__name__)

DEADLINE = 10.0  # seconds for a whole attempt: connect, send, the answer's status and body
CONNECT_TIMEOUT = 5.0
MAX_ANSWER = 64 * 1024  # bytes of an answer's body read at most (then the connection is dropped)
FIRST_RETRY = 5.0  # seconds: the first retry comes within this
MAX_DELAY = 600.0  # seconds between attempts at most
WINDOW = 86_400.0  # seconds from a delivery's making during which it is attempted
CONCURRENCY = 32  # attempts in flight at once (run), each waiting on its receiver
BATCH = 16  # deliveries claimed at once at least: run claims once this many attempts are free
POLL = 1.0  # seconds between looks at the outbox while nothing is due and nothing was written
STOP_SLICE = 0.25  # seconds: how often the idle loop looks whether it should stop
USER_AGENT = "music-facade-webhooks"
BACKLOG_EVERY = 5.0  # seconds between reads of the backlog for the metrics (one query each)
RETRIED = "retried"  # an attempt's outcome when another is scheduled
_READ = 16 * 1024


def signature(signer: Webhook, msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature value: v1, base64(HMAC-SHA256(key, "id.timestamp.body")), made by
    the specification's reference library (docs/decisions/webhook-signing.md)."""
    return signer.sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body)


def retry_delay(failed: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds before the next attempt after `failed` failed ones: 5 s doubling each time, at
    most 10 minutes, each drawn from the upper half of that (receivers that came back are not
    all retried in the same second)."""
    ceiling = min(MAX_DELAY, FIRST_RETRY * 2.0 ** min(failed - 1, 30))
    return ceiling * (0.5 + 0.5 * rand())


@dataclass(frozen=True)
class _Target:
    """Where one webhook's deliveries go, and its signing key (never shown)."""

    url: str
    signer: Webhook = field(repr=False)


class Deliverer:
    """Claims due deliveries, sends them, records what happened."""

    def __init__(
        self,
        hooks: Sequence[WebhookSettings],
        outbox: Outbox,
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        poll: float = POLL,
        deadline: float = DEADLINE,
        observe: Callable[[str, str], None] | None = None,
        backlog: Callable[[dict[str, Backlog], float], None] | None = None,
        wakeups: Wakeups | None = None,
    ) -> None:
        self._targets = {h.name: _Target(h.url, Webhook(h.secret.reveal())) for h in hooks}
        self._names = tuple(self._targets)
        self._outbox = outbox
        self._clock = clock
        self._rand = rand
        self._poll = poll
        self._deadline = deadline
        self._observe = observe
        self._backlog = backlog
        self._backlog_read = -BACKLOG_EVERY  # monotonic time of the last read: none yet
        self._wakeups = wakeups
        self._lock = threading.Lock()
        self._attempts: set[threading.Thread] = set()  # run's attempts in flight
        self._watchdog = Watchdog()
        # urllib3 itself: no cookies, no proxy variables, no .netrc, and no redirect followed.
        self._pool = urllib3.PoolManager(num_pools=8, maxsize=CONCURRENCY, retries=False)
        self._pool.pool_classes_by_scheme = POOL_CLASSES  # each exchange under the deadline

    def close(self) -> None:
        """Drop the pooled connections and the watchdog."""
        self._pool.clear()
        self._watchdog.stop()

    def run(self, stop: threading.Event) -> None:
        """Deliver until stop is set, up to CONCURRENCY attempts in flight; a database that
        cannot be reached is tried again.

        The outbox is looked at again when attempts finished (a track's next delivery may be
        due now, and there is room), when the mirror's version moved (`wakeups`: a change was
        written here or by another replica, with its deliveries), and every `poll` seconds
        (retries coming due). Claims are made once BATCH attempts are free, so a busy
        deliverer claims in batches rather than one delivery per finished attempt.
        """
        turn = self._wakeups.register() if self._wakeups is not None else threading.Event()
        turn.set()  # look at once: deliveries may be waiting from before the start
        look_at = 0.0  # monotonic time of the next look without a reason
        try:
            while not stop.is_set():
                # In slices: stop is a separate Event, and a stopping process waits for this.
                if not turn.wait(STOP_SLICE) and time.monotonic() < look_at:
                    continue
                turn.clear()  # what finishes or is written from here on sets it again
                look_at = time.monotonic() + self._poll
                try:
                    if time.monotonic() - self._backlog_read >= BACKLOG_EVERY:
                        self.report_backlog()
                    free = CONCURRENCY - self._in_flight()
                    if free >= BATCH:
                        for delivery in self._outbox.claim(free, self._names):
                            self._start(delivery, turn)
                except Exception as exc:
                    log.warning("webhook deliveries paused: %s", type(exc).__name__)
        finally:
            if self._wakeups is not None:
                self._wakeups.unregister(turn)
            with self._lock:
                attempts = list(self._attempts)
            for attempt in attempts:  # each ends by its deadline
                attempt.join()

    def _in_flight(self) -> int:
        with self._lock:
            return len(self._attempts)

    def _start(self, delivery: Delivery, turn: threading.Event) -> None:
        """Attempt and record one delivery in a thread of its own; `turn` is set after."""

        def attempt() -> None:
            try:
                self._deliver(delivery)
            finally:
                with self._lock:
                    self._attempts.discard(thread)
                turn.set()

        thread = threading.Thread(target=attempt, name="webhook-attempt", daemon=True)
        with self._lock:
            self._attempts.add(thread)
        thread.start()

    def report_backlog(self) -> None:
        """Read every configured webhook's backlog and tell `backlog` (with the time now)."""
        self._backlog_read = time.monotonic()
        if self._backlog is not None:
            self._backlog(self._outbox.backlog(self._names), self._clock())

    def run_once(self) -> int:
        """Claim the due deliveries (a batch), attempt them side by side; how many."""
        claimed = self._outbox.claim(BATCH, self._names)
        if len(claimed) == 1:
            self._deliver(claimed[0])
            return 1
        workers = [
            threading.Thread(target=self._deliver, args=(d,), name="webhook-attempt", daemon=True)
            for d in claimed
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return len(claimed)

    def _deliver(self, delivery: Delivery) -> None:
        try:
            answered = self.attempt(delivery)
            self._record(delivery, answered)
        except Exception as exc:
            # Unrecorded: the claim runs out and the delivery is attempted again.
            log.warning(
                "webhook %s: attempt not recorded: %s", delivery.webhook, type(exc).__name__
            )

    def attempt(self, delivery: Delivery) -> int | None:
        """POST the delivery once; the answer's status, or None when none came in time."""
        target = self._targets[delivery.webhook]
        body = delivery.body.encode()
        # The receiver checks this against its own clock: the real time, whatever schedules.
        now = int(time.time())
        headers = {
            "webhook-id": delivery.id,
            "webhook-timestamp": str(now),
            "webhook-signature": signature(target.signer, delivery.id, now, body),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        with self._watchdog.exchange(self._deadline) as exchange:
            left = exchange.remaining()
            try:
                answer = self._pool.request(
                    "POST",
                    target.url,
                    body=body,
                    headers=headers,
                    timeout=urllib3.Timeout(connect=min(CONNECT_TIMEOUT, left), read=left),
                    redirect=False,
                    retries=False,
                    preload_content=False,
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                log.info("webhook %s: %s: no answer (%s)", delivery.webhook, delivery.id, _why(exc))
                return None
            status = answer.status
            whole = False
            try:
                read = 0
                while read < MAX_ANSWER:
                    chunk = answer.read(min(_READ, MAX_ANSWER - read), decode_content=False)
                    if not chunk:
                        whole = True
                        break
                    read += len(chunk)
            except (urllib3.exceptions.HTTPError, OSError):
                pass  # the status decides; the body is only read so the connection can be reused
            finally:
                if not whole:
                    answer.close()  # unread bytes left: the connection cannot be reused
                answer.release_conn()
        return status

    def _record(self, delivery: Delivery, answered: int | None) -> None:
        tried = delivery.attempts + 1
        if answered is not None and 200 <= answered < 300:
            self._recorded(delivery, DELIVERED, answered=answered)
            log.info("webhook %s: %s delivered (attempt %d)", delivery.webhook, delivery.id, tried)
            return
        next_at = self._clock() + retry_delay(tried, self._rand)
        if next_at > delivery.created_at + WINDOW:
            self._recorded(delivery, FAILED, answered=answered)
            log.warning(
                "webhook %s: %s failed after %d attempts (last: %s)",
                delivery.webhook,
                delivery.id,
                tried,
                answered if answered is not None else "no answer",
            )
            return
        self._recorded(delivery, PENDING, answered=answered, next_attempt_at=next_at)
        log.info(
            "webhook %s: %s attempt %d answered %s; retried in %.0f s",
            delivery.webhook,
            delivery.id,
            tried,
            answered if answered is not None else "nothing",
            next_at - self._clock(),
        )

    def _recorded(
        self,
        delivery: Delivery,
        status: str,
        *,
        answered: int | None,
        next_attempt_at: float | None = None,
    ) -> None:
        """Record the attempt and count it; one whose claim another process took is not."""
        done = self._outbox.record(
            delivery, status=status, answered=answered, next_attempt_at=next_attempt_at
        )
        if done and self._observe is not None:
            self._observe(delivery.webhook, RETRIED if status == PENDING else status)


def _why(exc: BaseException) -> str:
    """A short, secret-free name for a failed exchange (never its message: it holds the URL)."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return type(exc.reason).__name__
    return type(exc).__name__
