"""[upstream] allow_http_links: off by default, accepted only with the upstream on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from music_facade.config import ConfigError, Settings, is_loopback_url, load_settings
from tests.support.config_files import MINIMAL, TOKEN, write

REFUSED = "upstream.allow_http_links: may be true only when [upstream] base_url is on loopback"


def load(tmp_path: Path, upstream: str) -> Settings:
    text = f"[upstream]\n{upstream}\n" + MINIMAL
    return load_settings({"MUSIC_CONFIG": write(tmp_path, text), "USEAPI_TOKEN": TOKEN})


def error_of(tmp_path: Path, upstream: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, upstream)
    return str(info.value)


def test_off_by_default_and_shown(tmp_path: Path) -> None:
    settings = load(tmp_path, 'base_url = "http://127.0.0.1:8081/v1/tempolor"')
    assert settings.upstream.allow_http_links is False
    assert settings.describe()["upstream"]["allow_http_links"] is False


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:8081/v1/tempolor",
        "http://127.8.9.10/v1/tempolor",
        "http://localhost:8081/v1/tempolor",
        "http://[::1]:8081/v1/tempolor",
        "https://localhost/v1/tempolor",
    ],
)
def test_accepted_with_the_upstream_on_loopback(tmp_path: Path, base_url: str) -> None:
    settings = load(tmp_path, f'base_url = "{base_url}"\nallow_http_links = true')
    assert settings.upstream.allow_http_links is True
    assert settings.describe()["upstream"]["allow_http_links"] is True


@pytest.mark.parametrize(
    "base_url",
    [
        "https://api.useapi.net/v1/tempolor",
        "http://10.0.0.5:8081/v1/tempolor",
        "http://sandbox.internal:8081/v1/tempolor",
        "http://localhost.example.com/v1/tempolor",
        "http://192.168.1.2:8081/v1/tempolor",
    ],
)
def test_refused_with_the_upstream_elsewhere(tmp_path: Path, base_url: str) -> None:
    assert REFUSED in error_of(tmp_path, f'base_url = "{base_url}"\nallow_http_links = true')


def test_refused_with_the_default_upstream(tmp_path: Path) -> None:
    assert REFUSED in error_of(tmp_path, "allow_http_links = true")


def test_false_is_accepted_anywhere(tmp_path: Path) -> None:
    settings = load(
        tmp_path, 'base_url = "https://api.useapi.net/v1/tempolor"\nallow_http_links = false'
    )
    assert settings.upstream.allow_http_links is False


@pytest.mark.parametrize("value", ['"true"', "1", "'yes'"])
def test_only_a_toml_boolean(tmp_path: Path, value: str) -> None:
    base = 'base_url = "http://127.0.0.1:8081/v1/tempolor"\n'
    message = error_of(tmp_path, f"{base}allow_http_links = {value}")
    assert "upstream.allow_http_links: Not a valid boolean." in message


def test_a_wrong_base_url_is_reported_once(tmp_path: Path) -> None:
    message = error_of(tmp_path, 'base_url = "ftp://x"\nallow_http_links = true')
    assert message.count("upstream.") == 1
    assert "upstream.base_url: Not a valid URL." in message


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1/", True),
        ("http://127.255.255.254:1/", True),
        ("http://LOCALHOST/", True),
        ("http://[::1]/", True),
        ("http://128.0.0.1/", False),
        ("http://0.0.0.0/", False),
        ("http://[::]/", False),
        ("http:///", False),
        ("http://[::1/", False),
    ],
)
def test_is_loopback_url(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback
