"""The real programs some tests run (redis-server, nginx, prometheus, chromium, node), and ports."""

from __future__ import annotations

import os
import socket
from typing import NoReturn

import pytest


def missing_program(what: str, package: str) -> NoReturn:
    """A test needs a program that is not installed: a failure in CI, which must install it
    (.ci/run does), a skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not installed (Debian: {package}; .ci/run installs it)")
    pytest.skip(f"{what} is not installed (apt-get install {package})", allow_module_level=True)


def free_port() -> int:
    """A loopback port nobody listens on right now (for a server that must bind it itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
