"""Which replica of a fleet runs the mirror's sync of an alias, and moving it to another.

Each alias is synced by the one process holding the mirror database's lease `sync:<alias>`
(music_facade/mirror/sync.py); its holder names the process (`host:pid:nonce`). A test that
must see a change written by a given replica moves the lease there the way a real takeover
happens: the replica holding it stalls (SIGSTOP of its workers), its lease runs out, a process
of the other replica takes it; then the stalled one resumes and finds the lease gone.
"""

from __future__ import annotations

import os
import signal
import time

import psycopg

from music_facade.launch import GunicornProcess
from music_facade.mirror.sync import LEASE_PREFIX

from .waiting import wait_until


def sync_holder(database: str, alias: str) -> int | None:
    """The pid of the process holding the alias's sync lease now (None: nobody holds it)."""
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT holder, expires FROM leases WHERE name = %s", (LEASE_PREFIX + alias,)
        ).fetchone()
    if row is None or row[1] <= time.time():
        return None
    return int(str(row[0]).split(":")[-2])


def replica_syncing(database: str, alias: str, replicas: list[GunicornProcess]) -> int | None:
    """The index of the replica whose worker holds the alias's sync lease, if any does."""
    pid = sync_holder(database, alias)
    for index, replica in enumerate(replicas):
        if pid in replica.worker_pids():
            return index
    return None


def move_sync(
    database: str, alias: str, replicas: list[GunicornProcess], to: int, tries: int = 3
) -> None:
    """Make replica `to` sync the alias: stall the others until one of its workers holds it."""
    wait_until(lambda: replica_syncing(database, alias, replicas) is not None, timeout=15)
    for _ in range(tries):
        if replica_syncing(database, alias, replicas) == to:
            return
        stalled = [pid for i, r in enumerate(replicas) if i != to for pid in r.worker_pids()]
        for pid in stalled:
            os.kill(pid, signal.SIGSTOP)
        try:
            # The lease lasts 1.5 sync intervals; the others ask for it every quarter interval.
            # A process stalled inside its renewal's transaction holds the row until it
            # resumes: then this round cannot move it, and the next one tries again.
            deadline = time.monotonic() + 5
            while replica_syncing(database, alias, replicas) != to:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # poll interval
        finally:
            for pid in stalled:
                os.kill(pid, signal.SIGCONT)
    assert replica_syncing(database, alias, replicas) == to, "the sync lease did not move"
