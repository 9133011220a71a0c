"""Configuration that explains itself: all errors at once, check-config PATH, mint-key, warnings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from music_facade.config import ineffective_keys, load_settings

BASE = '[users]\nstudio = "1001"\n'


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "music_facade", *args],
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


def test_every_error_of_a_file_in_one_run(tmp_path: Path) -> None:
    # Schema errors, an unknown alias in a client, a duplicate name, a duplicate key and the
    # missing token: each used to need its own run.
    digest = '"' + "0" * 64 + '"'
    config = tmp_path / "music.toml"
    config.write_text(
        BASE + '[cache]\nttl = "soon"\n'
        f'[[clients]]\nname = "web"\nkey_sha256 = {digest}\nusers = ["nobody"]\n'
        f'[[clients]]\nname = "web"\nkey_sha256 = {digest}\nusers = ["studio"]\n'
    )
    result = cli("check-config", str(config), env={"USEAPI_TOKEN": ""})
    assert result.returncode == 2
    assert result.stdout == ""
    lines = [line.removeprefix("music-facade: configuration error: ") for line in
             result.stderr.splitlines()]  # fmt: skip
    assert sorted(lines) == [
        "USEAPI_TOKEN: no upstream token; set USEAPI_TOKEN, USEAPI_TOKEN_FILE or [upstream] "
        "token_file",
        "cache.ttl: Not a valid number.",
        "clients.0: users: 'nobody' is not an alias in [users]",
        "clients.1: 'web' is used by another client",
        "clients.1: key_sha256: a key is listed twice",
    ]


def test_an_unknown_key_suggests_the_known_one(tmp_path: Path) -> None:
    config = tmp_path / "music.toml"
    config.write_text(
        "defualt_user = 'studio'\n" + BASE + "[upstream]\nread_timout = 3\n"
        "[metrics]\nalow = ['10.0.0.0/8']\n[cache]\nzzz = 1\n"
    )
    result = cli("check-config", str(config))
    assert result.returncode == 2
    assert sorted(result.stderr.splitlines()) == [
        "music-facade: configuration error: cache.zzz: Unknown field.",  # nothing close
        "music-facade: configuration error: defualt_user: Unknown field. "
        "Did you mean `default_user`?",
        "music-facade: configuration error: metrics.alow: Unknown field. Did you mean `allow`?",
        "music-facade: configuration error: upstream.read_timout: Unknown field. "
        "Did you mean `read_timeout`?",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # More digits than Python converts: tomllib let int()'s ValueError through.
        ("ttl = " + "1" * 4301, "MUSIC_CONFIG: {path}: an integer has more than 4300 digits"),
        # Hex escapes that limit while parsing, and could not be printed or made a float.
        ("max_entries = 0x" + "f" * 5000, "cache.max_entries: Not a valid integer: larger than"),
        ("ttl = 0x" + "f" * 300, "cache.ttl: Not a valid number: larger than"),
        ("ttl = inf", "cache.ttl: Not a valid number: must be finite"),
        ("stale_if_error = nan", "cache.stale_if_error: Not a valid number: must be finite"),
        # tomllib recurses once per level: a RecursionError.
        ("ttl = " + "[" * 2000 + "]" * 2000, "MUSIC_CONFIG: {path}: arrays or tables nested"),
        ("ttl = " + "{a = " * 2000 + "1" + "}" * 2000, "MUSIC_CONFIG: {path}: arrays or tables"),
    ],
    ids=["4301-digits", "huge-hex-int", "huge-hex-number", "inf", "nan", "arrays", "tables"],
)
def test_hostile_numbers_and_nesting_give_one_line(
    tmp_path: Path, value: str, expected: str
) -> None:
    config = tmp_path / "music.toml"
    config.write_text(BASE + "[cache]\n" + value + "\n")
    result = cli("check-config", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    prefix = "music-facade: configuration error: "
    assert line.startswith(prefix + expected.format(path=config)), line
