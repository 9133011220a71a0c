"""Upstream guards: cooldown after 429, remembered auth failures, a circuit breaker per account.

The state of each upstream account (keyed by its user_id) is plain data with expiry times
(state.py), kept behind one small interface, GuardStore: per-process memory (memory.py), or
Redis that every replica shares (shared.py). Guards holds the rules; UpstreamClient asks it
around every upstream call, so every endpoint of the same account goes through the same guards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace

from ..config import UpstreamSettings
from ..errors import (
    AuthFailureRemembered,
    BreakerOpen,
    CoolingDown,
    UpstreamAuthFailed,
    UpstreamFailure,
    UpstreamRateLimited,
)
from .memory import MemoryGuardStore
from .state import AccountGuard, GuardStore

__all__ = ["Guards"]


def _seconds_left(until: float, now: float) -> int:
    return max(1, math.ceil(until - now))


class Guards:
    """The rules: admit() before an upstream call, succeeded()/failed() after it."""

    def __init__(
        self,
        settings: UpstreamSettings,
        store: GuardStore | None = None,
        clock: Callable[[], float] = time.time,
        observe: Callable[[str, AccountGuard], None] | None = None,
    ) -> None:
        """store: where the accounts' states live (this process's memory by default); observe
        is told each account's state after every change (music_facade.metrics)."""
        self.settings = settings
        self._store: GuardStore = store if store is not None else MemoryGuardStore(clock)
        self.clock = clock
        # A probe whose worker died must not keep the breaker half-open forever.
        self.probe_lease = settings.exchange_deadline + 1.0
        self.observe = observe

    @property
    def store(self) -> GuardStore:
        """Where the accounts' states live, chosen at construction."""
        return self._store

    def _change(self, user_id: str, update: Callable[[AccountGuard], AccountGuard]) -> AccountGuard:
        state = self._store.change(user_id, update)
        if self.observe is not None:
            self.observe(user_id, state)
        return state

    def admit(self, user_id: str) -> None:
        """Return if user_id's account may be called now; else raise its GuardRefusal."""
        now = self.clock()
        state = self._store.read(user_id)
        if self.observe is not None:  # another worker or replica may have changed it
            self.observe(user_id, state)
        if state.cooldown_until > now:
            left = _seconds_left(state.cooldown_until, now)
            raise CoolingDown(
                "The upstream rate limited this account moments ago; no call is made to it "
                "until Retry-After has passed.",
                headers={"Retry-After": str(left)},
            )
        if state.auth_failed_until > now:
            left = _seconds_left(state.auth_failed_until, now)
            raise AuthFailureRemembered(
                f"The upstream refused the service's own credentials (status {state.auth_status}) "
                "moments ago; the refusal is repeated without calling it again. Operators: check "
                "the useapi.net token, the subscription and the TemPolor account.",
                headers={"Retry-After": str(left)},
            )
        if not state.open_until:
            return
        if now < state.open_until:
            raise self._open(state.open_until, now)
        claimed = False

        def claim(current: AccountGuard) -> AccountGuard:
            nonlocal claimed
            # Half-open and nobody probing (or the last probe's lease ran out): this call probes.
            claimed = 0 < current.open_until <= now and current.probe_until <= now
            return replace(current, probe_until=now + self.probe_lease) if claimed else current

        after = self._change(user_id, claim)
        if not claimed and after.open_until:  # another call probes; closed meanwhile: go ahead
            raise self._open(max(after.open_until, after.probe_until), now)

    def _open(self, until: float, now: float) -> BreakerOpen:
        return BreakerOpen(
            "The upstream failed repeatedly for this account; calls to it are paused "
            "(circuit breaker open).",
            headers={"Retry-After": str(_seconds_left(until, now))},
        )

    def succeeded(self, user_id: str) -> None:
        """The upstream answered: the breaker closes and the failure streak ends."""
        state = self._store.read_after_call(user_id, lambda: self._end_streak(user_id))
        if state.failures or state.open_until:
            self._change(user_id, lambda s: replace(s, failures=0, open_until=0.0, probe_until=0.0))

    def _end_streak(self, user_id: str) -> None:
        """succeeded()'s rule on the state as it is now (a kept copy was out of date)."""
        state = self._store.read(user_id)
        if state.failures or state.open_until:
            self._change(user_id, lambda s: replace(s, failures=0, open_until=0.0, probe_until=0.0))

    def failed(self, user_id: str, failure: UpstreamFailure) -> None:
        """Remember what the failure means for the account: cooldown, auth memory, breaker."""
        now = self.clock()
        settings = self.settings
        if failure.outage:

            def trip(s: AccountGuard) -> AccountGuard:
                failures = s.failures + 1
                # A failed half-open probe reopens at once; a closed breaker counts up to N.
                if s.open_until or failures >= settings.breaker_failures:
                    return replace(
                        s, failures=failures, open_until=now + settings.breaker_open, probe_until=0
                    )
                return replace(s, failures=failures)

            self._change(user_id, trip)
            return
        # Any other answer shows the upstream is up: the breaker closes, and the answer may
        # itself need remembering.
        update: Callable[[AccountGuard], AccountGuard]
        if isinstance(failure, UpstreamRateLimited):
            seconds = float(failure.headers.get("Retry-After", settings.max_cooldown))
            until = now + min(seconds, settings.max_cooldown)

            def update(s: AccountGuard) -> AccountGuard:
                return replace(s, failures=0, open_until=0, probe_until=0, cooldown_until=until)

        elif isinstance(failure, UpstreamAuthFailed) and settings.auth_failure_cooldown > 0:
            until = now + settings.auth_failure_cooldown
            status = failure.upstream_status or 0

            def update(s: AccountGuard) -> AccountGuard:
                return replace(
                    s,
                    failures=0,
                    open_until=0,
                    probe_until=0,
                    auth_failed_until=until,
                    auth_status=status,
                )

        else:
            self.succeeded(user_id)
            return
        self._change(user_id, update)
