"""Test helpers: settings aimed at the live sandbox, and a client that checks the contract."""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from music_facade.config import CacheSettings, Secret, Settings, UpstreamSettings
from music_facade.launch import GunicornProcess
from music_facade.sandbox import SandboxServer

from . import contract

USERS = {"studio": "1001", "edge": "1002", "empty": "1003", "norecords": "1004", "ghost": "9999"}


class CheckedClient(FlaskClient):
    """A test client that checks every response against openapi.yaml."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        resp = super().open(*args, **kwargs)
        request = resp.request
        contract.check_response(
            request.method, request.path, resp.status_code, resp.headers, resp.get_data()
        )
        return resp


def sandbox_settings(sandbox: SandboxServer, **changes: Any) -> Settings:
    """Settings aimed at the sandbox (fast timeouts, no retries); change upstream_*/cache_*."""
    upstream = UpstreamSettings(
        token=Secret(sandbox.token),
        base_url=sandbox.base_url,
        connect_timeout=1.0,
        read_timeout=2.0,
        retries=0,
        # The sandbox's download links are plain http on loopback, as in the demo.
        allow_http_links=True,
    )
    cache = CacheSettings()
    up = {k[9:]: v for k, v in changes.items() if k.startswith("upstream_")}
    ca = {k[6:]: v for k, v in changes.items() if k.startswith("cache_")}
    rest = {k: v for k, v in changes.items() if not k.startswith(("upstream_", "cache_"))}
    return Settings(
        upstream=dataclasses.replace(upstream, **up),
        cache=dataclasses.replace(cache, **ca),
        users=rest.pop("users", USERS),
        **rest,
    )


AppFactory = Callable[..., Flask]


LIVE_CONFIG = """
[upstream]
base_url = "{base_url}"
retries = 0
read_timeout = 2
allow_http_links = true

[users]
studio = "1001"
edge = "1002"
"""


@contextmanager
def live_service(
    sandbox: SandboxServer,
    tmp: Path,
    extra: str = "",
    workers: int = 1,
    read_timeout: float = 2,
    app: str = "music_facade:create_app()",
) -> Iterator[GunicornProcess]:
    """The service under gunicorn against the sandbox, with LIVE_CONFIG plus `extra` TOML.

    read_timeout: the upstream's, longer for a test that holds a call open on purpose.
    app: gunicorn's app path, importable from where the tests run (the repository's root).
    gunicorn's output goes to tmp/gunicorn.log.
    """
    config = tmp / "music.toml"
    text = LIVE_CONFIG.format(base_url=sandbox.base_url)
    config.write_text(
        text.replace("read_timeout = 2\n", f"read_timeout = {read_timeout}\n") + extra
    )
    env = {"MUSIC_CONFIG": str(config), "USEAPI_TOKEN": sandbox.token}
    with GunicornProcess(env, workers=workers, log_path=tmp / "gunicorn.log", app=app) as server:
        yield server


def get_on_each_worker(server: GunicornProcess, paths: list[str]) -> list[int]:
    """GET paths (8 at a time, each on a new connection), half of them answered by each worker.

    The kernel gives a new connection to whichever worker accepts first, so one busy worker
    can take them all: each half is sent while the other worker is stopped (SIGSTOP), so the
    one that is running takes it. Statuses in the order sent, half by half.
    """
    halves = (paths[0::2], paths[1::2])
    statuses: list[int] = []
    for stopped, half in zip(server.worker_pids(), halves, strict=True):
        os.kill(stopped, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(8) as pool:
                statuses += pool.map(
                    lambda path: requests.get(server.url + path, timeout=10).status_code, half
                )
        finally:
            os.kill(stopped, signal.SIGCONT)
    return statuses
