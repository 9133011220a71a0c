"""The mirror's call budget: at most `limit` calls per account in any 60-second window."""

from __future__ import annotations

import random

import pytest

from music_facade.mirror.budget import Budget

from ..support.clock import Clock


def most_in_any_window(times: list[float], window: float = 60.0) -> int:
    """The largest number of the given call times inside one half-open window [t, t + window)."""
    times = sorted(times)
    # The fullest window can always be taken to start at a call.
    return max(
        (sum(1 for other in times if start <= other < start + window) for start in times),
        default=0,
    )


def test_calls_up_to_the_limit_go_then_the_wait_is_until_the_oldest_leaves() -> None:
    clock = Clock()
    budget = Budget(3, clock=clock)
    assert [budget.take("studio") for _ in range(3)] == [0.0, 0.0, 0.0]
    clock.now += 10
    assert budget.take("studio") == pytest.approx(50.0)
    assert budget.used("studio") == 3  # a refused take counts nothing
    clock.now += 50
    assert budget.take("studio") == 0.0


def test_each_account_has_its_own_window() -> None:
    clock = Clock()
    budget = Budget(1, clock=clock)
    assert budget.take("studio") == 0.0
    assert budget.take("studio") > 0
    assert budget.take("edge") == 0.0
    assert budget.wait("edge") == pytest.approx(60.0)
    assert budget.wait("empty") == 0.0


def test_wait_reports_without_taking() -> None:
    clock = Clock()
    budget = Budget(2, clock=clock)
    assert budget.wait("studio") == 0.0
    assert budget.wait("studio") == 0.0
    assert budget.used("studio") == 0


def test_the_window_is_half_open_and_a_refusal_is_never_a_zero_wait() -> None:
    clock = Clock()
    budget = Budget(1, clock=clock)
    budget.take("studio")
    start = clock.now
    clock.now = start + 60 - 1e-6
    assert 0 < budget.take("studio") <= 1e-3
    clock.now = start + 60  # 60 s later the first call is out of the window (now - 60, now]
    assert budget.take("studio") == 0.0


def test_a_caller_that_waits_as_told_never_exceeds_the_limit_in_any_window() -> None:
    clock = Clock()
    budget = Budget(7, clock=clock)
    rng = random.Random(20)
    made: list[float] = []
    while len(made) < 200:
        wait = budget.take("studio")
        if wait:
            clock.now += wait
            continue
        made.append(clock.now)
        clock.now += rng.choice((0.0, 0.0, 0.5, 3.0, 11.0))
    assert most_in_any_window(made) == 7
    # And it is not needlessly slow: 200 calls at 7 a minute need a little over 28 minutes.
    assert made[-1] - made[0] < 29.5 * 60


def test_a_budget_allows_at_least_one_call() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Budget(0)
