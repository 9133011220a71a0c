"""Webhooks end to end: the service under gunicorn's gevent worker (two workers, each with its
delivery loop) against the sandbox's live account, a real database, and a loopback receiver
that verifies each delivery with the `standardwebhooks` library. A `kill -9` of the whole
service while a delivery waits for its receiver loses nothing."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import requests

from music_facade.launch import GunicornProcess
from music_facade.mirror import Store
from music_facade.mirror.outbox import DELIVERED, PENDING
from music_facade.sandbox import SandboxServer

from ..support.helpers import LIVE_CONFIG
from ..support.waiting import wait_until
from ..support.webhook_receiver import Receiver, new_secret, receiving

CONFIG = """
[mirror]
database = "{database}"
interval = 1
active_interval = 0.5
max_calls_per_minute = 1000

[[webhooks]]
name = "crm"
url = "{url}"
secret_env = "CRM_WEBHOOK_SECRET"
users = ["studio"]
events = ["track.completed"]
"""


def service(
    sandbox: SandboxServer, tmp: Path, database: str, url: str, secret: str
) -> GunicornProcess:
    config = tmp / "music.toml"
    config.write_text(LIVE_CONFIG.format(base_url=sandbox.base_url) + CONFIG.format(
        database=database, url=url))  # fmt: skip
    env = {"MUSIC_CONFIG": str(config), "USEAPI_TOKEN": sandbox.token, "CRM_WEBHOOK_SECRET": secret}
    return GunicornProcess(env, workers=2, log_path=tmp / "gunicorn.log")


def synced(url: str) -> bool:
    checks = requests.get(url + "/readyz", timeout=5).json()["checks"]
    return bool(checks["mirror"] == "ok")


def new_track(sandbox: SandboxServer, title: str) -> str:
    made = requests.post(
        sandbox.origin + "/_sandbox/accounts/1001/tracks",
        json={"type": "song", "title": title, "seconds": 2},
        timeout=5,
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def completed_ids(receiver: Receiver) -> list[str]:
    return [p["data"]["track"]["id"] for p in receiver.verified()]


def test_a_track_completed_in_the_live_account_reaches_the_receiver(
    sandbox: SandboxServer, tmp_path: Path, mirror_database: str
) -> None:
    secret = new_secret()
    with receiving(secret) as receiver:
        with service(sandbox, tmp_path, mirror_database, receiver.url, secret) as server:
            wait_until(lambda: synced(server.url), timeout=30)
            item = new_track(sandbox, "Lighthouse Webhook")
            wait_until(lambda: item in completed_ids(receiver), timeout=30)
        (got,) = [r for r in receiver.received if r.payload is not None]
        assert got.payload["type"] == "track.completed"
        assert got.payload["data"]["user"] == "studio"
        assert got.payload["data"]["track"]["status"] == "completed"
        assert len(receiver.received) == 1  # two workers, one delivery
    log = (tmp_path / "gunicorn.log").read_text()
    assert secret not in log
    assert receiver.url not in log


def test_a_pending_delivery_survives_kill_9_of_the_service(
    sandbox: SandboxServer, tmp_path: Path, mirror_database: str
) -> None:
    secret = new_secret()
    port = _free_port()
    url = f"http://127.0.0.1:{port}/hooks"  # nobody listens yet: every attempt fails
    first = service(sandbox, tmp_path, mirror_database, url, secret).start()
    try:
        wait_until(lambda: synced(first.url), timeout=30)
        item = new_track(sandbox, "Lighthouse Crash")
        store = Store.open(mirror_database)
        try:

            def tried() -> bool:
                return any(d.attempts >= 1 for d in store.outbox.find("crm"))

            wait_until(tried, timeout=30)
            (waiting,) = store.outbox.find("crm")
            assert waiting.status == PENDING
            assert first.proc is not None
            # A crash: master and workers at once, the delivery claimed or waiting to retry.
            for pid in [*first.worker_pids(), first.proc.pid]:
                os.kill(pid, signal.SIGKILL)
            first.proc.wait(timeout=10)
        finally:
            store.close()
    finally:
        first.stop()
    with receiving(secret, port) as receiver:
        with service(sandbox, tmp_path, mirror_database, url, secret):
            # An unexpired claim of the dead process runs out first (30 s at most).
            wait_until(lambda: item in completed_ids(receiver), timeout=60)
        assert [r.id for r in receiver.received if r.payload is not None] == [waiting.id]
    store = Store.open(mirror_database)
    try:
        (done,) = store.outbox.find("crm")
        assert (done.id, done.status, done.last_status) == (waiting.id, DELIVERED, 204)
        assert done.attempts >= 2
    finally:
        store.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
