"""Configuration that explains itself: all errors at once, check-config PATH, mint-key, warnings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from service.config import ineffective_keys, load_settings

BASE = '[users]\nstudio = "1001"\n'


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "USEAPI_TOKEN": "t0ken", **(env or {})},
        check=False,
    )


def test_check_config_takes_a_path_and_reports_every_error(tmp_path: Path) -> None:
    config = tmp_path / "music.toml"
    config.write_text(
        'default_user = "nobody"\n' + BASE + '[cache]\nttl = "soon"\n[upstream]\nretries = 99\n'
    )
    result = cli("check-config", str(config))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert any(line.startswith("music-facade: configuration error: cache.ttl:") for line in lines)
    assert any("upstream.retries:" in line for line in lines)
    assert any("default_user: 'nobody' is not an alias in [users]" in line for line in lines)
    assert len(lines) == 3, lines


def test_mint_key_entry_pasted_unchanged_names_the_placeholder(tmp_path: Path) -> None:
    minted = cli("mint-key", "--name", "checkout")
    assert minted.returncode == 0
    assert "placeholder" in minted.stdout
    entry = minted.stdout.split("Configuration entry", 1)[1].split("\n", 1)[1]
    config = tmp_path / "music.toml"
    config.write_text(BASE + "\n".join(line.strip() for line in entry.splitlines()) + "\n")
    result = cli("check-config", str(config))
    assert result.returncode == 2
    assert "clients.0.users.0: '<alias>'" in result.stderr
    assert "replace the `<alias>` placeholder" in result.stderr


def test_mint_key_refuses_a_name_check_config_would_refuse() -> None:
    result = cli("mint-key", "--name", "bad name!")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "1-64 characters of A-Z a-z 0-9 _ . -" in result.stderr


def test_keys_without_effect_are_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "music.toml"
    config.write_text(
        BASE + '[[clients]]\nname = "a"\nkey_sha256 = "' + "0" * 64 + '"\nusers = ["*"]\n'
        '[limits]\nper_address = "10/minute"\n'
    )
    settings = load_settings({"USEAPI_TOKEN": "t0ken"}, path=str(config))
    assert [line.split(" ", 1)[0] for line in ineffective_keys(settings)] == ["limits.per_address"]
    result = cli("check-config", str(config))
    assert result.returncode == 0
    assert "warning: limits.per_address has no effect" in result.stderr
