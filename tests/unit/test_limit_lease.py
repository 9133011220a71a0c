"""A lease's arithmetic on a clock the test moves: shares, the window it reports, when it ends."""

from __future__ import annotations

import pytest

from music_facade.shared.limit_leases import SHARE, Lease, share_of


@pytest.mark.parametrize(
    ("left", "granted"),
    [(0, 0), (-3, 0), (1, 1), (10, 1), (199, 1), (200, 2), (1000, 10), (1_000_000, 10_000)],
)
def test_a_share_is_one_percent_of_what_is_left_at_least_one_never_more(
    left: int, granted: int
) -> None:
    assert SHARE == 0.01
    assert share_of(left) == granted


def test_hits_spend_the_lease_and_age_the_window() -> None:
    # Granted 10 at t=100 with 80 s of a 60 s window's counter left (the window ends in 20 s).
    lease = Lease(9, 60, (True, 30, 40.0, 25, 80.0), taken_at=100.0, sync_interval=5)
    assert lease.window(100.0) == (True, 30, 40.0, 16, 80.0)  # 25 counted, 9 not admitted
    assert lease.hit(101.0) == (True, 30, 39.0, 17, 79.0)
    for _ in range(8):
        assert lease.hit(102.0) is not None
    assert lease.unused == 0
    assert lease.hit(102.0) is None  # spent


def test_a_lease_ends_after_the_sync_interval_or_with_its_window() -> None:
    lease = Lease(5, 60, (True, 0, 0.0, 6, 120.0), taken_at=0.0, sync_interval=1.5)
    assert lease.hit(1.49) is not None
    assert lease.hit(1.5) is None
    assert lease.unused == 4  # what goes back
    near_the_end = Lease(5, 60, (True, 0, 0.0, 6, 60.5), taken_at=0.0, sync_interval=1.5)
    assert near_the_end.hit(0.49) is not None
    assert near_the_end.hit(0.5) is None  # its window ended: units never cross into the next
    assert near_the_end.window_left(0.75) == pytest.approx(-0.25)
