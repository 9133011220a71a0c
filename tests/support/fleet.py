"""A fleet on loopback: a real redis-server, two service replicas under gunicorn, nginx in front.

Everything is started on random ports by the fixture and torn down after; nginx runs the
deploy/ configuration rendered for these addresses (tests/support/deploy_render.py).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests

from music_facade.launch import GunicornProcess
from music_facade.sandbox import SandboxServer

from .deploy_render import nginx_binary, render_nginx, running_nginx
from .helpers import LIVE_CONFIG
from .programs import free_port, missing_program
from .redis_server import RedisServer

# The live service's configuration, with client keys, a trusted proxy (nginx) and Redis.
FLEET_CONFIG = (
    LIVE_CONFIG
    + """
[[clients]]
name = "limited"
key_sha256 = "{limited_digest}"
users = ["*"]
rate_limit = "10/minute"

[[clients]]
name = "app"
key_sha256 = "{app_digest}"
users = ["*"]
rate_limit = "100000/minute"

[server]
proxy_hops = 1
trusted_proxies = ["127.0.0.1/32"]

[redis]
url = "{redis_url}"
prefix = "fleet"
backoff_max = 1
"""
)


def require_nginx() -> str:
    """The nginx binary; a failure in CI (which installs it), a skip elsewhere."""
    binary = nginx_binary()
    if binary is None:
        missing_program("nginx", "nginx")
    return binary


@dataclass
class Fleet:
    """The running fleet's parts and the URL of its load balancer."""

    redis: RedisServer
    replicas: list[GunicornProcess]
    nginx: subprocess.Popen[bytes]
    url: str
    app_key: str
    limited_key: str


def _side_by_side(calls: list[Callable[[], object]]) -> None:
    """Run the calls at once, each in a thread; raise the first one's error, if any."""
    with ThreadPoolExecutor(len(calls)) as pool:
        for done in [pool.submit(call) for call in calls]:
            done.result()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with status {proc.returncode}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)  # poll interval
    raise RuntimeError("nginx did not answer in time")


@contextlib.contextmanager
def fleet(sandbox: SandboxServer, tmp: Path, app_key: str, app_digest: str,
          limited_key: str, limited_digest: str, *, extra: str = "",
          env: Mapping[str, str] | None = None) -> Iterator[Fleet]:  # fmt: skip
    """Redis, two replicas (2 workers each, the production worker class) and nginx.

    extra: TOML appended to FLEET_CONFIG (a [mirror], more [[clients]] …); env: more
    environment variables for the replicas (a webhook's secret …).
    """
    require_nginx()
    with RedisServer() as redis_server, contextlib.ExitStack() as stack:
        config = tmp / "music.toml"
        config.write_text(
            FLEET_CONFIG.format(
                base_url=sandbox.base_url,
                redis_url=redis_server.url,
                app_digest=app_digest,
                limited_digest=limited_digest,
            )
            + extra
        )
        variables = {**(env or {}), "MUSIC_CONFIG": str(config), "USEAPI_TOKEN": sandbox.token}
        replicas = [
            GunicornProcess(variables, workers=2, log_path=tmp / f"replica-{i}.log") for i in (1, 2)
        ]
        stack.callback(_side_by_side, [replica.stop for replica in replicas])
        # Side by side: each start waits for its replica's /healthz, most of it importing.
        _side_by_side([replica.start for replica in replicas])
        listen = f"127.0.0.1:{free_port()}"
        rendered = render_nginx(
            tmp / "nginx", listen, [r.url.removeprefix("http://") for r in replicas]
        )
        proc = stack.enter_context(running_nginx(rendered, listen, tmp / "nginx.log"))
        url = f"http://{listen}"
        _wait_ready(url, proc)
        yield Fleet(redis_server, replicas, proc, url, app_key, limited_key)
