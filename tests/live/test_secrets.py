"""Secrets hygiene: the upstream token and client keys never show in responses, logs or output."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from music_facade import create_app
from music_facade.auth import mint_key
from music_facade.config import ClientSettings, Secret
from music_facade.launch import GunicornProcess
from music_facade.sandbox import SandboxServer
from tests.support.helpers import sandbox_settings

TOKEN = "useapi-SECRET-TOKEN-7f3a9c51"
WRONG_TOKEN = "useapi-SECRET-WRONG-0b1e22"
KEY, KEY_SHA = mint_key()
TINY_KEY, TINY_SHA = mint_key()
SECRETS = (TOKEN, WRONG_TOKEN, KEY, TINY_KEY)
CLIENTS = (
    ClientSettings("web", (KEY_SHA,), frozenset({"studio"})),
    ClientSettings("tiny", (TINY_SHA,), frozenset({"*"}), rate_limit="2/minute"),
)
FAULTS: list[dict[str, Any]] = [
    {"kind": "status", "status": 400, "body": {"error": f"bad {TOKEN}", "code": 400}},
    {"kind": "status", "status": 401},
    {"kind": "status", "status": 429, "headers": {"Retry-After": "5"}},
    {"kind": "status", "status": 500, "body": f"stack trace with {TOKEN}"},
    {"kind": "status", "status": 503},
    {"kind": "malformed"},
    {"kind": "oversized", "bytes": 6_000_000},
    {"kind": "deep", "depth": 50_000},
    {"kind": "hang", "seconds": 30},
]


def assert_clean(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret leaked into {where}"


@pytest.fixture(scope="module")
def secret_sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(token=TOKEN) as server:
        yield server


def requests_to_try() -> list[tuple[str, dict[str, str]]]:
    good = {"Authorization": f"Bearer {KEY}"}
    return [
        ("/music?user=studio", good),
        ("/music?user=studio&type=instrumental", good),
        ("/music?user=edge", good),  # 403
        ("/music?user=studio", {}),  # 401 missing
        ("/music?user=studio", {"Authorization": f"Bearer {KEY}x"}),  # 401 unknown
        ("/music?user=studio", {"Authorization": f"Basic {KEY}"}),  # 401 malformed
        (f"/music?user=studio&cursor={KEY}", good),  # a key where it does not belong
        (f"/music?user=studio&key={KEY}", good),
        ("/music?user=studio&type=jazz", good),
        ("/nowhere", good),
        ("/healthz", good),
        ("/openapi.yaml", good),
    ]


def test_in_process(secret_sandbox: SandboxServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    settings = sandbox_settings(
        secret_sandbox, clients=CLIENTS, upstream_read_timeout=0.5, cache_ttl=0
    )
    app = create_app(settings)
    client = app.test_client()
    seen: list[str] = []

    def record(resp: Any) -> None:
        seen.append(f"{resp.status}\n{resp.headers}\n{resp.get_data(as_text=True)}")

    for path, headers in requests_to_try():
        record(client.get(path, headers=headers))
    for spec in FAULTS:
        secret_sandbox.state.set_fault("*", spec)
        record(client.get("/music?user=studio", headers={"Authorization": f"Bearer {KEY}"}))
        secret_sandbox.state.reset()
    for _ in range(3):  # the tiny client runs into its limit
        record(client.get("/music?user=studio", headers={"Authorization": f"Bearer {TINY_KEY}"}))
    assert "429" in seen[-1]

    wrong = create_app(sandbox_settings(secret_sandbox, upstream_token=Secret(WRONG_TOKEN)))
    record(wrong.test_client().get("/music?user=studio"))
    assert "upstream_auth_failed" in seen[-1]

    # A crash whose exception text carries the token, as a careless library might write it.
    class Leaky:
        def list_music(self, *args: object) -> dict[str, Any]:
            raise RuntimeError(f"could not send 'Authorization: Bearer {TOKEN}'")

    app.extensions["music"].client = Leaky()
    record(client.get("/music?user=studio", headers={"Authorization": f"Bearer {KEY}"}))
    assert "internal_error" in seen[-1]

    assert_clean("a response", "\n".join(seen))
    assert "RuntimeError" in caplog.text  # the crash was logged, traceback and all...
    assert_clean("the logs", caplog.text)  # ...with the token redacted
    for rec in caplog.records:
        assert_clean("a log record", repr(vars(rec)))


def test_under_gunicorn(secret_sandbox: SandboxServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config = tmp_path / "music.toml"
    config.write_text(
        f"""
[upstream]
base_url = "{secret_sandbox.base_url}"
retries = 1
read_timeout = 0.5
[users]
studio = "1001"
edge = "1002"
[cache]
ttl = 0
[[clients]]
name = "web"
key_sha256 = "{KEY_SHA}"
users = ["studio"]
[[clients]]
name = "tiny"
key_sha256 = "{TINY_SHA}"
users = ["*"]
rate_limit = "2/minute"
"""
    )
    env = {
        "MUSIC_CONFIG": str(config),
        "USEAPI_TOKEN_FILE": str(token_file),
        "MUSIC_LOG_LEVEL": "DEBUG",
    }
    log = tmp_path / "gunicorn.log"
    seen: list[str] = []
    with GunicornProcess(env, workers=1, log_path=log) as live:

        def get(path: str, headers: dict[str, str]) -> None:
            resp = requests.get(live.url + path, headers=headers, timeout=10)
            seen.append(f"{resp.status_code}\n{resp.headers}\n{resp.text}")

        for path, headers in requests_to_try():
            get(path, headers)
        for spec in FAULTS:
            secret_sandbox.state.set_fault("*", spec)
            get("/music?user=studio", {"Authorization": f"Bearer {KEY}"})
            secret_sandbox.state.reset()
        for _ in range(3):
            get("/music?user=studio", {"Authorization": f"Bearer {TINY_KEY}"})
    assert "429" in seen[-1]
    assert_clean("a response", "\n".join(seen))
    logged = log.read_text()
    assert '"status":401' in logged  # the access lines are there
    assert_clean("gunicorn's log", logged)


def test_command_line_output(secret_sandbox: SandboxServer, tmp_path: Path) -> None:
    config = tmp_path / "music.toml"
    config.write_text(f'[users]\nstudio = "1"\n[[clients]]\nname = "web"\n'
                      f'key_sha256 = "{KEY_SHA}"\nusers = ["studio"]\n')  # fmt: skip
    env = {"MUSIC_CONFIG": str(config), "USEAPI_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    for args in (["check-config"], ["--help"], ["demo", "--help"], ["mint-key"]):
        done = subprocess.run(
            [sys.executable, "-m", "music_facade", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert_clean(f"`{' '.join(args)}`", done.stdout + done.stderr)
    bad = tmp_path / "bad.toml"
    bad.write_text('[users]\nstudio = "1"\n[limits]\ndefault = "x"\n')
    done = subprocess.run(
        [sys.executable, "-m", "music_facade", "check-config"],
        env={**env, "MUSIC_CONFIG": str(bad)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert_clean("a configuration error", done.stdout + done.stderr)
