"""A streamed answer's view of its caller's socket (music_facade.streaming.Connection) on real
loopback sockets, numbered past 1023 as a worker holding a thousand streams numbers them:
a caller still connected (reading, or with a pipelined request waiting) is not gone, one that
closed is, and the socket's own timeout is kept. Also under gevent's monkey patching, as
gunicorn's gevent worker runs it (in a child interpreter, so this one stays unpatched).
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from music_facade.streaming import Connection

HIGH = 1500  # a descriptor number select() refuses (FD_SETSIZE is 1024)


@pytest.fixture(autouse=True)
def room_for_high_descriptors() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= HIGH + 10:
        pytest.skip(f"the hard limit of open files ({hard}) is below {HIGH + 10}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, HIGH + 10), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextmanager
def high_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback TCP pair; the server's end on descriptor HIGH."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    os.dup2(accepted.fileno(), HIGH)
    accepted.close()
    server = socket.socket(fileno=HIGH)
    try:
        yield server, client
    finally:
        server.close()
        client.close()


def test_a_caller_on_a_high_descriptor_is_gone_only_once_it_closed() -> None:
    with high_pair() as (server, client):
        assert server.fileno() >= 1024
        server.settimeout(7.0)
        connection = Connection(server)
        assert not connection.gone()  # connected, nothing sent
        client.sendall(b"GET /next HTTP/1.1\r\n")  # a pipelined request: still there
        assert not connection.gone()
        assert server.recv(100, socket.MSG_PEEK).startswith(b"GET /next")  # left unread
        assert server.gettimeout() == 7.0  # the write bound is kept
        client.close()
        server.recv(100)  # the pipelined bytes; then only the end is left
        assert connection.gone()


GEVENT_CHECK = f"""
from gevent import monkey
monkey.patch_all()
import os, resource, socket
from music_facade.streaming import Connection
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, {HIGH} + 10), hard))
listener = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(listener.getsockname())
accepted, _ = listener.accept()
os.dup2(accepted.fileno(), {HIGH})
server = socket.socket(fileno={HIGH})
server.settimeout(7.0)
connection = Connection(server)
before = connection.gone()
client.sendall(b"x")
pipelined = connection.gone()
kept = server.gettimeout()
client.close()
server.recv(1)
print(before, pipelined, kept, connection.gone())
"""


def test_under_gevent_a_caller_on_a_high_descriptor_is_not_taken_for_gone() -> None:
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_CHECK], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "7.0", "True"]
