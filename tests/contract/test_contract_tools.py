"""The contract as its callers' tools see it: linters, generators and the schemathesis CLI.

The npm tools are pinned in tools/contract/package.json + package-lock.json and installed with
`npm ci` (cached in tools/contract/node_modules); the PyPI ones are pinned in pyproject's dev
extras. Without node the npm tests skip locally and fail in CI (CI=true): the Debian packages
`nodejs` and `npm` provide it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from music_facade.__main__ import DEMO_CONFIG
from music_facade.auth import mint_key
from music_facade.launch import GunicornProcess
from music_facade.sandbox import SandboxServer
from tests.support.programs import missing_program

# Node.js toolchains and the service under gunicorn: tens of seconds, outside the fast loop.
pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools" / "contract"
SPEC = ROOT / "openapi.yaml"
BIN = Path(sys.executable).parent
NODE_ENV = {**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"}


def run(
    cmd: list[str], cwd: Path = TOOLS, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=NODE_ENV, check=False
    )


@pytest.fixture(scope="module")
def npm_tools() -> Path:
    """tools/contract/node_modules/.bin, installed with `npm ci` when the lock file changed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        missing_program("node and npm", "nodejs npm")
    stamp = TOOLS / "node_modules" / ".lock-installed"
    lock = (TOOLS / "package-lock.json").read_text()
    if not stamp.exists() or stamp.read_text() != lock:
        result = run(["npm", "ci", "--no-audit", "--no-fund"], timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        stamp.write_text(lock)
    return TOOLS / "node_modules" / ".bin"


def test_spectral_finds_nothing(npm_tools: Path) -> None:
    result = run([str(npm_tools / "spectral"), "lint", "--fail-severity=hint", str(SPEC)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No results with a severity of 'hint' or higher found!" in result.stdout, result.stdout


def test_redocly_finds_nothing(npm_tools: Path) -> None:
    result = run([str(npm_tools / "redocly"), "lint", str(SPEC), "--format=stylish"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Your API description is valid" in result.stdout + result.stderr
    # Findings are "line:col  severity  rule"; the Node 20 deprecation banner is not one.
    assert not re.search(r"^\s*\d+:\d+\s+(error|warning)", result.stdout, re.M), result.stdout
    assert "warnings" not in result.stdout + result.stderr


def test_typescript_client_types_check_strictly_and_works(
    npm_tools: Path, keyed_service: tuple[str, str]
) -> None:
    gen = run([str(npm_tools / "openapi-typescript"), str(SPEC), "-o", "generated/api.ts"])
    assert gen.returncode == 0, gen.stdout + gen.stderr
    tsc = run([str(npm_tools / "tsc"), "-p", "tsconfig.json"])
    assert tsc.returncode == 0, tsc.stdout + tsc.stderr
    # The same program, compiled to ES modules in build/ (git-ignored), run by main.mjs
    # against a deployment whose address the types never saw.
    build = run([str(npm_tools / "tsc"), "-p", "tsconfig.json", "--noEmit", "false",
                 "--outDir", "build"])  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    (TOOLS / "build" / "package.json").write_text('{"type": "module"}\n')
    url, key = keyed_service
    used = run(["node", "main.mjs", url, key, "studio"])
    assert used.returncode == 0, used.stdout + used.stderr
    assert "ready: true" in used.stdout
    assert "paged: 23 tracks" in used.stdout
    assert re.search(r"^audio: mp3 link until \S+Z$", used.stdout, re.M), used.stdout


@pytest.fixture(scope="module")
def demo_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service under gunicorn on the demo configuration (open mode), against the sandbox."""
    tmp = tmp_path_factory.mktemp("demo")
    with SandboxServer() as sandbox:
        config = tmp / "music.toml"
        config.write_text(DEMO_CONFIG.format(base_url=sandbox.base_url))
        env = {"MUSIC_CONFIG": str(config), "USEAPI_TOKEN": sandbox.token}
        with GunicornProcess(env, log_path=tmp / "gunicorn.log") as server:
            yield server.url


def test_schemathesis_cli_all_checks_and_stateful(demo_service: str, tmp_path: Path) -> None:
    report = tmp_path / "report.har"
    cmd = [
        str(BIN / "schemathesis"), "--config-file", str(TOOLS / "schemathesis.toml"),
        "run", f"{demo_service}/openapi.json", "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--report", "har", "--report-har-path", str(report),
    ]  # fmt: skip
    result = run(cmd, cwd=tmp_path, timeout=150)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Stateful" in out
    assert "Skipped" not in out.split("Stateful", 1)[1].split("\n", 1)[0]
    # The one 400 allowed for schema-valid data (schemathesis.toml): a cursor the upstream never
    # issued. Every 400 without an invalid query is exactly that.
    entries = json.loads(report.read_text())["log"]["entries"]
    assert len(entries) > 100
    for entry in entries:
        if entry["response"]["status"] != 400 or not entry["response"]["content"].get("text"):
            continue
        code = json.loads(entry["response"]["content"]["text"])["code"]
        assert code in ("invalid_query", "unknown_user", "upstream_rejected", "bad_request")
        if code == "unknown_user":  # negative data: an alias unlike the demo's
            query = {q["name"]: q["value"] for q in entry["request"]["queryString"]}
            assert query.get("user") not in ("studio", "edge", "empty"), entry["request"]["url"]
        if code == "upstream_rejected":
            assert "cursor=" in entry["request"]["url"], entry["request"]["url"]


@pytest.fixture(scope="module")
def keyed_service(
    sandbox_server: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    from tests.support.helpers import live_service

    key, digest = mint_key()
    extra = f'\n[[clients]]\nname = "tool"\nkey_sha256 = "{digest}"\nusers = ["*"]\n'
    with live_service(sandbox_server, tmp_path_factory.mktemp("keyed"), extra) as server:
        yield server.url, key


def test_python_client_generates_types_and_works(
    demo_service: str, keyed_service: tuple[str, str], tmp_path: Path
) -> None:
    url, key = keyed_service
    spec = tmp_path / "openapi.json"
    # Generated from one deployment (the demo's served document, naming its aliases and its
    # address), used against another (keyed, on another port): nothing deployment-specific
    # is baked into the client.
    fetch = "import requests, sys; print(requests.get(sys.argv[1]).text)"
    spec.write_bytes(subprocess.run(
        [sys.executable, "-c", fetch, f"{demo_service}/openapi.json"],
        capture_output=True, check=True).stdout)  # fmt: skip
    gen = run(
        [str(BIN / "openapi-python-client"), "generate", "--path", str(spec), "--meta", "none",
         "--output-path", "music_client"], cwd=tmp_path)  # fmt: skip
    assert gen.returncode == 0, gen.stdout + gen.stderr
    # The one warning: /openapi.yaml's application/yaml (the same document is at /openapi.json).
    said = gen.stdout + gen.stderr
    warnings = re.findall(r"WARNING parsing \S+ \S+", said)
    assert set(warnings) <= {"WARNING parsing GET /openapi.yaml"}, said
    shutil.copy(TOOLS / "python_client_usage.py", tmp_path)
    # Strict on our caller; the generator's own client.py trips mypy's *args check in
    # __exit__ (not ours to fix), so errors inside the package are silenced, its types still used.
    mypy = run(
        [str(BIN / "mypy"), "--strict", "--follow-imports=silent", "python_client_usage.py"],
        cwd=tmp_path,
    )
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr
    # One `user` type for every operation: no per-operation enum classes were generated.
    models = (tmp_path / "music_client" / "models").glob("*.py")
    assert not [m.name for m in models if m.name.endswith("_user.py")]
    used = run([sys.executable, "python_client_usage.py", url, key, "studio"], cwd=tmp_path)
    assert used.returncode == 0, used.stdout + used.stderr
    assert "paged: 23 tracks" in used.stdout
    assert re.search(r"^audio: mp3 link until \S+$", used.stdout, re.M), used.stdout
    assert "HEAD: 200" in used.stdout
