"""[redis] settings: from the file and the environment, masked wherever shown, one clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from music_facade.config import ConfigError, parse_settings

BASE = {"users": {"studio": "1001"}}
ENV = {"USEAPI_TOKEN": "t0ken-for-tests"}


def test_redis_settings_from_file_and_environment(tmp_path: Path) -> None:
    assert parse_settings(BASE, ENV).redis is None
    doc = {**BASE, "redis": {"url": "redis://:file-pass@cache:6379/0", "prefix": "mf"}}
    settings = parse_settings(doc, ENV).redis
    assert settings is not None
    assert settings.prefix == "mf"
    assert settings.url.reveal() == "redis://:file-pass@cache:6379/0"
    secret_file = tmp_path / "redis-password"
    secret_file.write_text("s3cret-from-file\n")
    env = {**ENV, "MUSIC_REDIS_URL": "rediss://other:6380/1",
           "MUSIC_REDIS_PASSWORD_FILE": str(secret_file)}  # fmt: skip
    settings = parse_settings(doc, env).redis
    assert settings is not None
    assert settings.url.reveal() == "rediss://other:6380/1"
    assert settings.password is not None
    assert settings.password.reveal() == "s3cret-from-file"


def test_redis_passwords_are_masked_wherever_settings_are_shown(tmp_path: Path) -> None:
    doc = {**BASE, "redis": {"url": "redis://user:p%40ss-in-url@cache:6379/0"}}
    secret_file = tmp_path / "pw"
    secret_file.write_text("pass-in-file")
    settings = parse_settings(doc, {**ENV, "MUSIC_REDIS_PASSWORD_FILE": str(secret_file)})
    shown = json.dumps(settings.describe()) + repr(settings)
    assert "p%40ss-in-url" not in shown
    assert "p@ss-in-url" not in shown
    assert "pass-in-file" not in shown
    assert "redis://user:********@cache:6379/0" in shown
    assert settings.redis is not None
    assert set(settings.redis.secrets()) >= {"p@ss-in-url", "p%40ss-in-url", "pass-in-file"}


@pytest.mark.parametrize(
    ("redis", "env", "message"),
    [
        ({"url": "http://:hunter2@cache"}, {}, "redis.url: must be a redis:// or rediss:// URL"),
        ({"url": "redis://:hunter2@cache:99999"}, {}, "valid port"),
        ({"prefix": "x"}, {}, "redis.url: required when [redis] is present"),
        ({"url": "redis://cache", "prefix": "bad prefix"}, {}, "redis.prefix"),
        ({"url": "redis://cache", "timeout": 0}, {}, "redis.timeout"),
        ({}, {"MUSIC_REDIS_URL": "redis//:hunter2@x"}, "MUSIC_REDIS_URL: must be"),
    ],
)
def test_bad_redis_settings_name_the_key_and_never_echo_the_url(
    redis: dict[str, Any], env: dict[str, str], message: str
) -> None:
    doc = {**BASE, "redis": redis} if redis else BASE
    with pytest.raises(ConfigError) as info:
        parse_settings(doc, {**ENV, **env})
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)
