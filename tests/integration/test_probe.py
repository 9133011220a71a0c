"""`music-facade probe` against the sandbox: healthy, drifted records, each failure."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from music_facade.__main__ import main
from music_facade.sandbox import SandboxServer

# A read timeout far above the in-process sandbox's answers, and short: the hang case waits it
# out twice.
CONFIG = """
[upstream]
base_url = "{base_url}"
retries = 0
read_timeout = 1

[users]
studio = "1001"
odd = "1002"
"""


@pytest.fixture
def probe_env(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> SandboxServer:
    config = tmp_path / "music.toml"
    config.write_text(CONFIG.format(base_url=sandbox.base_url))
    monkeypatch.setenv("MUSIC_CONFIG", str(config))
    monkeypatch.setenv("USEAPI_TOKEN", sandbox.token)
    return sandbox


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["probe", *args])
    out, err = capsys.readouterr()
    text = out + err
    assert "sandbox-token" not in text
    assert not re.search(r"\b100[12]\b", text)  # aliases only, never raw user ids
    return code, out


def test_healthy(probe_env: SandboxServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys)
    assert code == 0
    assert "studio: ok" in out
    assert "odd: ok" in out
    assert "encoding        gzip" in out
    assert "records         10" in out
    assert "hasNext         yes" in out
    assert "schema drift    none" in out
    assert "all aliases answered a valid page" in out
    assert probe_env.state.call_count() == 2


def test_json_and_one_alias(probe_env: SandboxServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "--user", "studio", "--type", "instrumental", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["ok"] is True
    [report] = doc["aliases"]
    assert report["alias"] == "studio"
    assert report["status"] == 200
    assert report["content_encoding"] == "gzip"
    assert report["decoded_bytes"] > report["wire_bytes"] > 0
    assert report["records"] == 10
    assert report["has_next"] is True
    assert report["latency_ms"] >= 0
    assert report["drift"] == {"unknown_fields": [], "missing_fields": [], "mistyped_fields": {}}
    assert probe_env.state.calls()[0].args["type"] == ["instrumental"]


def test_drifted_records(probe_env: SandboxServer, capsys: pytest.CaptureFixture[str]) -> None:
    probe_env.state.set_fault("1001", {"kind": "drift"})
    code, out = run(capsys, "--user", "studio", "--json")
    assert code == 0  # a valid page; the drift is reported
    drift: dict[str, Any] = json.loads(out)["aliases"][0]["drift"]
    assert drift["unknown_fields"] == ["aiScore", "title_en"]
    assert drift["missing_fields"] == ["titleEn"]
    assert drift["mistyped_fields"] == {"createTime": ["string"]}
    code, text = run(capsys, "--user", "studio")
    assert "unknown fields  aiScore, title_en" in text
    assert "missing fields  titleEn" in text
    assert "mistyped field  createTime: string" in text


@pytest.mark.parametrize(
    ("spec", "status", "problem_code"),
    [
        ({"kind": "status", "status": 401}, 401, "upstream_auth_failed"),
        ({"kind": "status", "status": 596}, 596, "upstream_auth_failed"),
        ({"kind": "rate_limited"}, 429, "upstream_rate_limited"),
        ({"kind": "cdn", "status": 522}, 522, "upstream_error"),
        ({"kind": "gzip_bomb"}, 200, "upstream_error"),
        ({"kind": "error_body"}, 200, "upstream_error"),
        ({"kind": "redirect"}, 302, "upstream_error"),
        (
            {"kind": "status", "status": 200, "body": '{"records": [], "hasNext": true}'},
            200,
            "upstream_error",
        ),
        ({"kind": "hang", "seconds": 10}, None, "upstream_timeout"),
    ],
)
def test_each_failure(
    probe_env: SandboxServer,
    capsys: pytest.CaptureFixture[str],
    spec: dict[str, Any],
    status: int | None,
    problem_code: str,
) -> None:
    probe_env.state.set_fault("1001", spec)
    code, out = run(capsys, "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    studio, odd = sorted(doc["aliases"], key=lambda r: r["alias"] != "studio")
    assert studio["ok"] is False
    assert studio["status"] == status
    assert studio["problem"] == problem_code
    assert odd["ok"] is True
    code, text = run(capsys, "--user", "studio")
    assert code == 1
    assert f"studio: FAILED ({problem_code})" in text


def test_upstream_rejection_hides_the_user_id(
    probe_env: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {"error": "Account 1001 is not configured", "code": 400}
    probe_env.state.set_fault("1001", {"kind": "status", "status": 400, "body": body})
    code, out = run(capsys, "--user", "studio")
    assert code == 1
    assert "Account <user> is not configured" in out


def test_usage_errors(
    probe_env: SandboxServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _ = run(capsys, "--user", "nobody")
    assert code == 2
    monkeypatch.delenv("USEAPI_TOKEN")
    code, _ = run(capsys)
    assert code == 2
    assert probe_env.state.call_count() == 0
