"""The upstream watchdog fires each exchange's deadline, in whatever order they were made.

Its thread is woken only when a new deadline comes before the one it sleeps towards: these
check that a shorter deadline made after a longer one still fires on time, and that the
longer one fires too, later.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from music_facade.watchdog import Exchange, Watchdog


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def test_a_shorter_deadline_made_later_fires_first_and_the_longer_one_later() -> None:
    watchdog = Watchdog()
    long_pair, short_pair = socket.socketpair(), socket.socketpair()
    try:
        with watchdog.exchange(0.6) as long_ex:
            long_ex.attach(long_pair[0])
            with watchdog.exchange(0.05) as short_ex:
                short_ex.attach(short_pair[0])
                started = time.monotonic()
                assert _wait_until(lambda: short_ex.expired, 2)
                assert time.monotonic() - started < 0.4
                assert short_pair[0].recv(1) == b""  # shut down: a blocked read returns
                assert not long_ex.expired
            assert _wait_until(lambda: long_ex.expired, 2)
            assert long_pair[0].recv(1) == b""
    finally:
        watchdog.stop()
        for sock in (*long_pair, *short_pair):
            sock.close()


def test_exchanges_made_one_after_another_each_fire_when_left_hanging() -> None:
    watchdog = Watchdog()
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        for sock, _ in pairs:
            with watchdog.exchange(0.05) as ex:
                ex.attach(sock)
                assert _wait_until(_expired(ex), 2)
                assert sock.recv(1) == b""
    finally:
        watchdog.stop()
        for pair in pairs:
            for sock in pair:
                sock.close()


def _expired(ex: Exchange) -> Callable[[], bool]:
    return lambda: ex.expired


def test_an_exchange_that_ended_in_time_is_never_cut() -> None:
    watchdog = Watchdog()
    first, second = socket.socketpair()
    try:
        with watchdog.exchange(0.05) as ex:
            ex.attach(first)
        time.sleep(0.15)
        assert not ex.expired
        second.sendall(b"x")
        assert first.recv(1) == b"x"
    finally:
        watchdog.stop()
        first.close()
        second.close()
