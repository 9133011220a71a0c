"""End to end: the service under gunicorn, over loopback, against the live sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from music_facade.launch import GunicornProcess
from music_facade.sandbox import SandboxServer
from tests.support import contract
from tests.support.deploy_render import GUNICORN_CONF
from tests.support.helpers import live_service


@pytest.fixture(scope="module")
def live(
    sandbox_server: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornProcess]:
    with live_service(sandbox_server, tmp_path_factory.mktemp("live"), workers=2) as server:
        yield server


def get(live: GunicornProcess, path: str, **kwargs: object) -> requests.Response:
    resp = requests.get(live.url + path, timeout=10, **kwargs)  # type: ignore[arg-type]
    contract.check_response("GET", path.split("?")[0], resp.status_code, resp.headers, resp.content)
    return resp


def test_page_over_http(live: GunicornProcess, sandbox: SandboxServer) -> None:
    resp = get(live, "/music?user=studio&type=instrumental")
    assert resp.status_code == 200
    assert len(resp.json()["items"]) == 10
    assert resp.headers["Cache-Control"].startswith("private, max-age=")
    again = get(
        live,
        "/music?user=studio&type=instrumental",
        headers={"If-None-Match": resp.headers["ETag"]},
    )
    # Two workers each have their own cache: the second answer is a 304 either way.
    assert again.status_code == 304
    assert again.content == b""


def test_errors_over_http(live: GunicornProcess, sandbox: SandboxServer) -> None:
    bad = get(live, "/music?user=studio&type=jazz")
    assert bad.status_code == 400
    assert bad.headers["Content-Type"] == "application/problem+json"
    assert bad.json()["errors"]["type"]
    assert get(live, "/missing").status_code == 404
    put = requests.put(live.url + "/music", timeout=10)
    assert put.status_code == 405
    assert "GET" in put.headers["Allow"]
    sandbox.state.set_fault("*", {"kind": "status", "status": 503})
    down = get(live, "/music?user=edge&type=instrumental")
    assert down.status_code == 502
    assert down.json()["code"] == "upstream_error"
    assert sandbox.state.call_count() == 1


def test_hostile_request_line_is_refused_and_serving_goes_on(live: GunicornProcess) -> None:
    resp = requests.get(live.url + "/music?cursor=" + "a" * 10_000, timeout=10)
    assert resp.status_code in (400, 414)
    assert get(live, "/healthz").status_code == 200


def test_access_log_is_json_with_request_id(live: GunicornProcess) -> None:
    get(live, "/openapi.yaml", headers={"X-Request-ID": "e2e-log-check"})
    get(live, "/healthz", headers={"X-Request-ID": "e2e-probe"})  # a probe: DEBUG, not logged
    assert live.log_path is not None
    lines = [
        json.loads(line) for line in live.log_path.read_text().splitlines() if line.startswith("{")
    ]
    access = [entry for entry in lines if entry.get("request_id") == "e2e-log-check"]
    assert access
    assert access[0]["status"] == 200
    assert access[0]["path"] == "/openapi.yaml"
    assert not [entry for entry in lines if entry.get("request_id") == "e2e-probe"]


def test_bad_configuration_stops_gunicorn_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "music.toml"
    config.write_text('[users]\nstudio = "1"\n[cache]\nttl = "long"\n')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(GUNICORN_CONF),
            "--bind",
            "127.0.0.1:0",
            "music_facade:create_app()",
        ],
        env={"MUSIC_CONFIG": str(config), "USEAPI_TOKEN": "t-SECRET-e2e", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "music-facade: configuration error: cache.ttl: Not a valid number.\n" in done.stderr
    assert "Traceback" not in done.stderr
    assert "t-SECRET-e2e" not in done.stderr + done.stdout
