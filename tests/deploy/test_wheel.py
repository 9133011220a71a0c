"""The artifact is what the tests run: the wheel the Dockerfile builds, started as its CMD does.

Every other test imports the editable install from the source tree, so a file the wheel leaves
out (openapi.yaml was one) is invisible to them. Here the wheel is built from the files the
Dockerfile's build stage copies (git-tracked ones only, as a clean checkout has them), installed
into a fresh virtual environment that cannot see the source tree, and started with the runtime
stage's files, ENV and CMD from a directory that is not the source tree.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from music_facade.launch import GunicornProcess
from music_facade.meta import MIRROR_PATHS
from music_facade.sandbox import SandboxServer
from tests.support import dockerfile
from tests.support.demo import running_demo
from tests.support.deploy_render import REPO
from tests.support.helpers import LIVE_CONFIG
from tests.support.metrics import scrape, total

pytestmark = [pytest.mark.live, pytest.mark.slow]

STAGES = dockerfile.stages()
BUILD, RUNTIME = STAGES["build"], STAGES["runtime"]


@dataclass(frozen=True)
class Artifact:
    wheel: Path
    venv: Path  # the fresh environment the wheel is installed in
    app: Path  # the runtime stage's WORKDIR: the files it copies, nothing else

    def bin(self, program: str) -> str:
        """A program of the fresh environment, as the image's PATH finds it."""
        found = shutil.which(program, path=str(self.venv / "bin"))
        assert found is not None, f"{program} is not installed in {self.venv}"
        return found

    def env(self, **extra: str) -> dict[str, str]:
        """The runtime stage's ENV, the fresh environment first on PATH, and `extra`."""
        return {
            **RUNTIME.env(),
            "PATH": f"{self.venv / 'bin'}:{os.defpath}",
            "PYTHONPATH": "",  # an empty value is ignored: nothing of the caller's leaks in
            **extra,
        }


def tracked_files() -> list[str]:
    """The build context as a clean checkout has it: git's files, no caches or build output."""
    out = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return [name for name in out.decode().split("\0") if name]


def run(
    argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a step; its output is the failure message when it fails."""
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"
    return result


def this_environments_versions() -> str:
    """`name==version` of every package here: the wheel is tested with what the suite tested.

    Not the project itself, nor the installers: the build's own setuptools comes from
    pyproject.toml's build-system, as in the image.
    """
    pins = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in {"music-facade", "pip", "setuptools", "wheel"}:
            pins.add(f"{name}=={dist.version}")
    return "\n".join(sorted(pins)) + "\n"


@pytest.fixture(scope="session")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """Build stage, then runtime stage, as the Dockerfile does them (about 20 s, once)."""
    tmp = tmp_path_factory.mktemp("artifact")
    files = tracked_files()
    src, wheels, venv, app = tmp / "src", tmp / "wheels", tmp / "venv", tmp / "app"
    dockerfile.copy_context(BUILD.copies(), files, src)
    constraints = tmp / "constraints.txt"
    constraints.write_text(this_environments_versions())
    # The build stage's `pip wheel --wheel-dir /wheels .`: the project and every dependency.
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "-q", "--wheel-dir", str(wheels), "-c", str(constraints), "."], cwd=src)
    (wheel,) = wheels.glob("music_facade-*.whl")
    # A fresh environment: no system site-packages, no pip of its own (this one installs into
    # it), so nothing but what the wheels bring is importable.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    # The runtime stage's `pip install --no-index --find-links=/wheels /wheels/music_facade-*.whl`.
    run([*pip, "--python", python, "install", "-q", "--no-index", "-f", str(wheels), str(wheel)])
    dockerfile.copy_context(RUNTIME.copies(), files, app)
    return Artifact(wheel, venv, app)


def test_the_wheel_holds_every_file_the_package_tracks(artifact: Artifact) -> None:
    with zipfile.ZipFile(artifact.wheel) as wheel:
        names = set(wheel.namelist())
        packaged = {f for f in tracked_files() if f.startswith("music_facade/")}
        assert packaged - names == set()
        # The contract is a real file in the wheel, the one the repository edits.
        contract = wheel.read("music_facade/openapi.yaml")
    assert contract == (REPO / "music_facade" / "openapi.yaml").read_bytes()


def test_the_installed_service_is_not_the_source_tree(artifact: Artifact) -> None:
    probe = (
        "import json, sysconfig, music_facade, music_facade.meta\n"
        "print(json.dumps([music_facade.__file__, sysconfig.get_paths()['purelib'],"
        " music_facade.meta.OPENAPI_PATH.is_file()]))\n"
    )
    out = run([artifact.bin("python"), "-c", probe], cwd=artifact.app, env=artifact.env())
    module, purelib, contract_found = json.loads(out.stdout)
    assert Path(module).is_relative_to(artifact.venv)
    assert Path(module).parent == Path(purelib) / "music_facade"
    assert not Path(module).resolve().is_relative_to(REPO)
    assert contract_found


@contextmanager
def image_cmd(artifact: Artifact, sandbox: SandboxServer, tmp: Path) -> Iterator[GunicornProcess]:
    """The runtime stage's CMD, from its WORKDIR, with MUSIC_CONFIG aimed at the sandbox.

    The port is a socket this process opened (GunicornProcess adds --bind fd://N, which
    overrides MUSIC_BIND's); MUSIC_BIND names the same port for the health check.
    """
    config = tmp / "music.toml"
    config.write_text(LIVE_CONFIG.format(base_url=sandbox.base_url))
    cmd = RUNTIME.cmd()
    cmd[0] = artifact.bin(cmd[0])
    log = tmp / "gunicorn.log"
    env = artifact.env(MUSIC_CONFIG=str(config), USEAPI_TOKEN=sandbox.token)
    # Two workers: the image's default (MUSIC_WORKERS), so /metrics sums across processes.
    server = GunicornProcess(env, workers=2, log_path=log, command=cmd, cwd=artifact.app)
    server.env["MUSIC_BIND"] = server.url.removeprefix("http://")
    try:
        server.start()
    except RuntimeError as exc:
        server.stop()
        pytest.fail(f"{exc}; gunicorn said:\n{log.read_text()}")
    try:
        yield server
    finally:
        server.stop()
    assert "Traceback" not in log.read_text(), log.read_text()


def test_the_image_command_serves_from_the_wheel(
    artifact: Artifact, sandbox: SandboxServer, tmp_path: Path
) -> None:
    with image_cmd(artifact, sandbox, tmp_path) as server:
        page = requests.get(server.url + "/music?user=studio&type=instrumental", timeout=10)
        assert page.status_code == 200, page.text
        assert len(page.json()["items"]) == 10

        served = requests.get(server.url + "/openapi.yaml", timeout=10)
        assert served.status_code == 200
        doc = yaml.safe_load(served.text)
        source = yaml.safe_load(
            (REPO / "music_facade" / "openapi.yaml").read_text(encoding="utf-8")
        )
        assert doc["openapi"] == source["openapi"]
        # This configuration has no [mirror]: the served contract leaves its routes out.
        mirrored = MIRROR_PATHS
        assert doc["paths"] == {k: v for k, v in source["paths"].items() if k not in mirrored}

        docs = requests.get(server.url + "/docs", timeout=10)
        assert docs.status_code == 200
        assert '"url": "/openapi.json"' in docs.text
        # Swagger UI's files come from flask-swagger-ui's package data in the fresh environment.
        bundle = requests.get(server.url + "/docs/swagger-ui-bundle.js", timeout=10)
        assert bundle.status_code == 200
        assert len(bundle.content) > 100_000

        # Summed over both workers (prometheus_client's multiprocess mode).
        found = scrape(server.url)
        assert total(found, "music_facade_requests_total", route="/music", status="200") == 1

        # The image's HEALTHCHECK, run as the container runtime would.
        check = RUNTIME.healthcheck()
        check[0] = artifact.bin(check[0])
        run(check, cwd=artifact.app, env=artifact.env(MUSIC_BIND=server.env["MUSIC_BIND"]))


def test_music_facade_demo_runs_from_the_wheel(artifact: Artifact, tmp_path: Path) -> None:
    """The README's first command as an installed package runs it: no source tree, no deploy/,
    and the example app's files come from the wheel."""
    program = [artifact.bin("music-facade")]
    argv = ["--port", "0", "--app-port", "0"]
    with running_demo(argv, tmp_path, program, cwd=tmp_path, env=artifact.env()) as demo:
        page = requests.get(
            demo.url + "/music?user=studio&type=song", headers=demo.auth, timeout=10
        )
        assert page.status_code == 200, page.text
        assert page.json()["items"]
        # Covers and audio are the sandbox's own files, made by the installed wheel (lameenc).
        track = next(t for t in page.json()["items"] if t["status"] == "completed")
        cover = requests.get(track["cover_url"], timeout=10)
        assert cover.headers["Content-Type"] == "image/png"
        link = requests.get(
            f"{demo.url}/music/{track['id']}/audio?user=studio",
            headers={"Accept": "application/json", **demo.auth},
            timeout=10,
        )
        assert link.status_code == 200, link.text
        mp3 = requests.get(link.json()["url"], timeout=10)
        assert mp3.status_code == 200
        assert mp3.headers["Content-Type"] == "audio/mpeg"
        app = requests.get(demo.app_url + "/", timeout=10)
        assert app.status_code == 200
        assert '<script type="module" src="app.js">' in app.text
        config = requests.get(demo.app_url + "/config.js", timeout=10)
        assert config.text == f'export const API_BASE = "{demo.url}";\n'
