"""Fixtures the live tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server on a random loopback port, one per test module that asks for it."""
    with RedisServer() as server:
        yield server
