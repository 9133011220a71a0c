"""Configuration: the TOML shape, the token sources, and one clear line for each mistake."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from music_facade.config import (
    BulkheadSettings,
    CacheSettings,
    ClientSettings,
    ConfigError,
    EventsSettings,
    LibrarySettings,
    LimitSettings,
    MetricsSettings,
    MirrorSettings,
    OidcSettings,
    RedisSettings,
    Secret,
    Settings,
    UpstreamSettings,
    load_settings,
)
from tests.support.config_files import MINIMAL, TOKEN, write


def load(tmp_path: Path, text: str, **env: str) -> Settings:
    environ = {"MUSIC_CONFIG": write(tmp_path, text), "USEAPI_TOKEN": TOKEN, **env}
    return load_settings({k: v for k, v in environ.items() if v != "<unset>"})


def error_of(tmp_path: Path, text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **env)
    message = str(info.value)
    assert "\n" not in message
    assert TOKEN not in message
    return message


def test_defaults(tmp_path: Path) -> None:
    s = load(tmp_path, MINIMAL)
    assert s.users == {"studio": "1234567"}
    assert s.implicit_user == "studio"  # the only alias
    assert s.upstream.base_url == "https://api.useapi.net/v1/tempolor"
    assert (s.upstream.connect_timeout, s.upstream.read_timeout) == (3.05, 10.0)
    assert (s.upstream.retries, s.upstream.max_body_bytes) == (2, 5_000_000)
    assert (s.cache.ttl, s.cache.max_entries, s.cache.stale_if_error) == (30.0, 1024, 300.0)
    assert s.upstream.token.reveal() == TOKEN
    up = s.upstream
    assert (up.max_cooldown, up.auth_failure_cooldown) == (60.0, 10.0)
    assert (up.breaker_failures, up.breaker_open) == (5, 15.0)
    assert up.deadline is None
    assert up.exchange_deadline == 13.05  # connect_timeout + read_timeout


def test_guard_and_deadline_keys(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        MINIMAL
        + "[upstream]\ndeadline = 4\nmax_cooldown = 30\nauth_failure_cooldown = 0\n"
        + "breaker_failures = 3\nbreaker_open = 20\n",
    )
    up = s.upstream
    assert (up.exchange_deadline, up.max_cooldown, up.auth_failure_cooldown) == (4.0, 30.0, 0.0)
    assert (up.breaker_failures, up.breaker_open) == (3, 20.0)
    assert s.describe()["upstream"]["breaker_failures"] == 3


def test_full_file(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        """
default_user = "studio"
[upstream]
base_url = "http://127.0.0.1:9/v1/tempolor/"
connect_timeout = 1
read_timeout = 2.5
retries = 0
max_body_bytes = 2048
[users]
studio = "1234567"
"label.B-2_x" = "7654321"
[cache]
ttl = 0
max_entries = 5
stale_if_error = 10
""",
    )
    assert s.default_user == "studio"
    assert s.upstream.base_url == "http://127.0.0.1:9/v1/tempolor"  # trailing slash dropped
    assert s.upstream.connect_timeout == 1.0
    assert s.upstream.retries == 0
    assert s.cache.ttl == 0
    assert s.users["label.B-2_x"] == "7654321"


def test_no_implicit_user_with_several_aliases(tmp_path: Path) -> None:
    s = load(tmp_path, '[users]\na = "1"\nb = "2"\n')
    assert s.implicit_user is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "colour = 1\n", "colour: Unknown field."),
        (MINIMAL + "[upstream]\ntimeout = 3\n", "upstream.timeout: Unknown field."),
        (MINIMAL + "[upstream]\ntoken = 'x'\n", "upstream.token: Unknown field."),
        (MINIMAL + "[cache]\nttl = '30'\n", "cache.ttl: Not a valid number."),
        (MINIMAL + "[cache]\nttl = -1\n", "cache.ttl:"),
        (MINIMAL + "[cache]\nmax_entries = 0\n", "cache.max_entries:"),
        (MINIMAL + "[cache]\nmax_entries = 1.5\n", "cache.max_entries: Not a valid integer."),
        (MINIMAL + "[cache]\nstale_if_error = true\n", "cache.stale_if_error: Not a valid"),
        (MINIMAL + "[upstream]\nretries = true\n", "upstream.retries: Not a valid integer."),
        (MINIMAL + "[upstream]\nretries = 11\n", "upstream.retries:"),
        (MINIMAL + "[upstream]\nconnect_timeout = 0\n", "upstream.connect_timeout:"),
        (MINIMAL + "[upstream]\nread_timeout = -2\n", "upstream.read_timeout:"),
        (MINIMAL + "[upstream]\nmax_body_bytes = 10\n", "upstream.max_body_bytes:"),
        (MINIMAL + "[upstream]\ndeadline = 0\n", "upstream.deadline:"),
        (MINIMAL + "[upstream]\nmax_cooldown = 0\n", "upstream.max_cooldown:"),
        (MINIMAL + "[upstream]\nauth_failure_cooldown = -1\n", "upstream.auth_failure_cooldown:"),
        (MINIMAL + "[upstream]\nbreaker_failures = 0\n", "upstream.breaker_failures:"),
        (MINIMAL + "[upstream]\nbreaker_failures = 2.5\n", "upstream.breaker_failures:"),
        (MINIMAL + "[upstream]\nbreaker_open = '15'\n", "upstream.breaker_open:"),
        (MINIMAL + "[upstream]\nbase_url = 'ftp://x'\n", "upstream.base_url: Not a valid URL."),
        (MINIMAL + "upstream = 3\n", "upstream: Invalid input type."),
        ("", "users: Missing data for required field."),
        ("[users]\n", "users: must name at least one alias"),
        ('[users]\n"bad alias" = "1"\n', "users.bad alias: alias must be 1-64 characters"),
        ('[users]\n"' + "a" * 65 + '" = "1"\n', "alias must be 1-64 characters"),
        ("[users]\nstudio = 1234567\n", "users.studio"),
        ('[users]\n"studio\\n" = "1"\n', "alias must be 1-64 characters"),
        ('[users]\nstudio = ""\n', "users.studio"),
        (MINIMAL + 'default_user = "other"\n', "default_user: 'other' is not an alias"),
        (MINIMAL + "[metrics]\nallow = ['10.0.0.0/33']\n", "metrics.allow.0: '10.0.0.0/33' is not"),
        (MINIMAL + "[metrics]\nallow = '10.0.0.0/8'\n", "metrics.allow: Not a valid list."),
        (MINIMAL + "[metrics]\ntoken_sha256 = 'secret'\n", "metrics.token_sha256: must be the"),
        (MINIMAL + "[metrics]\nopen = true\n", "metrics.open: Unknown field."),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    # default_user must come before the [users] table in TOML; move top-level keys up.
    if text.startswith(MINIMAL) and not text[len(MINIMAL) :].startswith("["):
        text = text[len(MINIMAL) :] + MINIMAL
    assert expected in error_of(tmp_path, text)


def test_toml_syntax_error(tmp_path: Path) -> None:
    assert error_of(tmp_path, "[users\n").startswith("MUSIC_CONFIG: ")


def test_music_config_unset_or_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^MUSIC_CONFIG: not set"):
        load_settings({"USEAPI_TOKEN": TOKEN})
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"^MUSIC_CONFIG: cannot read"):
        load_settings({"MUSIC_CONFIG": missing, "USEAPI_TOKEN": TOKEN})


def test_token_from_files(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text(TOKEN + "\n")
    s = load(tmp_path, MINIMAL, USEAPI_TOKEN="<unset>", USEAPI_TOKEN_FILE=str(secret_file))
    assert s.upstream.token.reveal() == TOKEN
    assert s.upstream.token_source == "USEAPI_TOKEN_FILE"
    text = f"[upstream]\ntoken_file = '{secret_file}'\n" + MINIMAL
    s = load(tmp_path, text, USEAPI_TOKEN="<unset>")
    assert s.upstream.token.reveal() == TOKEN
    assert s.upstream.token_source == "upstream.token_file"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"USEAPI_TOKEN": "<unset>"}, "USEAPI_TOKEN: no upstream token"),
        ({"USEAPI_TOKEN": "   "}, "USEAPI_TOKEN: the upstream token is empty"),
        ({"USEAPI_TOKEN": "has space"}, "USEAPI_TOKEN: the upstream token must be visible ASCII"),
        ({"USEAPI_TOKEN_FILE": "/x"}, "USEAPI_TOKEN: set either USEAPI_TOKEN or USEAPI_TOKEN_FILE"),
    ],
)
def test_token_errors(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    assert expected in error_of(tmp_path, MINIMAL, **env)


def test_unreadable_and_empty_token_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    message = error_of(tmp_path, MINIMAL, USEAPI_TOKEN="<unset>", USEAPI_TOKEN_FILE=str(empty))
    assert message == "USEAPI_TOKEN_FILE: the upstream token is empty"
    message = error_of(
        tmp_path, MINIMAL, USEAPI_TOKEN="<unset>", USEAPI_TOKEN_FILE=str(tmp_path / "missing")
    )
    assert message.startswith("USEAPI_TOKEN_FILE: cannot read")


def test_secret_never_shows_itself(tmp_path: Path) -> None:
    s = load(tmp_path, MINIMAL)
    assert TOKEN not in repr(s)
    assert TOKEN not in str(s.upstream)
    assert TOKEN not in json.dumps(s.describe())
    assert repr(Secret("abc")) == "Secret('********')"


def test_metrics_section(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"scrape").hexdigest()
    text = (
        MINIMAL + f"[metrics]\nallow = ['10.0.0.0/8', '::1']\ntoken_sha256 = '{digest.upper()}'\n"
    )
    settings = load(tmp_path, text)
    assert settings.metrics == MetricsSettings(("10.0.0.0/8", "::1"), (digest,))
    assert settings.describe()["metrics"] == {
        "allow": ["10.0.0.0/8", "::1"],
        "token_sha256": [digest],
        "access": "restricted",
    }
    assert load(tmp_path, MINIMAL).metrics == MetricsSettings()
    assert load(tmp_path, MINIMAL).metrics_access == "open"  # open mode: open by default
    keyed = MINIMAL + f"[[clients]]\nname = 'web'\nkey_sha256 = '{digest}'\nusers = ['*']\n"
    assert load(tmp_path, keyed).metrics_access == "closed"  # keys: closed by default


def full_settings() -> Settings:
    """Every section configured, every value off its default, secrets in every secret field."""
    return Settings(
        upstream=UpstreamSettings(
            token=Secret(TOKEN),
            token_source="USEAPI_TOKEN_FILE",
            base_url="https://upstream.test/v1/tempolor",
            connect_timeout=1.5,
            read_timeout=7.0,
            retries=1,
            max_body_bytes=2_000_000,
            deadline=6.0,
            max_cooldown=45.0,
            auth_failure_cooldown=5.0,
            breaker_failures=4,
            breaker_open=12.0,
        ),
        users={"studio": "1001", "label": "1002"},
        default_user="studio",
        cache=CacheSettings(ttl=20.0, max_entries=64, stale_if_error=120.0),
        clients=(
            ClientSettings("web", ("a" * 64, "b" * 64), frozenset({"studio", "label"}), "5/second"),
            ClientSettings("batch", ("c" * 64,), frozenset({"*"})),
        ),
        limits=LimitSettings(default="60/minute", per_address="10/minute"),
        cors_origins=("https://app.test", "https://admin.test"),
        proxy_hops=1,
        trusted_proxies=("10.0.0.0/8",),
        redis=RedisSettings(
            url=Secret("redis://user:url-pass@cache:6379/0"),
            password=Secret("file-pass"),
            prefix="mf",
            timeout=0.5,
            backoff_max=10.0,
            max_connections=8,
        ),
        bulkhead=BulkheadSettings(max_concurrent_calls=20, max_wait=2.0),
        library=LibrarySettings(
            max_items=100,
            max_pages=10,
            max_seconds=30.0,
            max_streams=2,
            send_timeout=5.0,
            pages_per_address="30/minute",
        ),
        events=EventsSettings(heartbeat=5.0, max_streams=50),
        oidc=OidcSettings(
            issuer="https://idp.test",
            audience="music",
            algorithms=("RS256", "ES256"),
            leeway=10.0,
            scope_claim="roles",
            subject_claim="email",
            scopes={"editors": frozenset({"studio", "label"})},
        ),
        metrics=MetricsSettings(allow=("127.0.0.1/32",), token_sha256=("d" * 64,)),
        mirror=MirrorSettings(
            database=Secret("postgresql://music:url-pass@db:5432/music"),
            password=Secret("mirror-file-pass"),
            interval=30.0,
            active_interval=5.0,
            reconcile_every=3600.0,
            max_calls_per_minute=12,
            changes_retention=86400.0,
            max_pages=500,
        ),
    )


def test_describe_shows_a_full_configuration_in_order_with_secrets_masked() -> None:
    shown = full_settings().describe()
    # The printed JSON, keys in this order, is what check-config and the start-up line show.
    assert json.dumps(shown) == json.dumps(
        {
            "default_user": "studio",
            "upstream": {
                "base_url": "https://upstream.test/v1/tempolor",
                "token": "******** (from USEAPI_TOKEN_FILE)",
                "connect_timeout": 1.5,
                "read_timeout": 7.0,
                "retries": 1,
                "max_body_bytes": 2_000_000,
                "deadline": 6.0,
                "max_cooldown": 45.0,
                "auth_failure_cooldown": 5.0,
                "breaker_failures": 4,
                "breaker_open": 12.0,
                "allow_http_links": False,
                "max_concurrent_calls": 20,
                "max_wait": 2.0,
            },
            "users": {"studio": "1001", "label": "1002"},
            "cache": {"ttl": 20.0, "max_entries": 64, "stale_if_error": 120.0},
            "clients": [
                {
                    "name": "web",
                    "key_sha256": ["a" * 64, "b" * 64],
                    "users": ["label", "studio"],
                    "rate_limit": "5/second",
                },
                {
                    "name": "batch",
                    "key_sha256": ["c" * 64],
                    "users": ["*"],
                    "rate_limit": "60/minute",
                },
            ],
            "limits": {"default": "60/minute", "per_address": "10/minute"},
            "cors": {"origins": ["https://app.test", "https://admin.test"]},
            "server": {"proxy_hops": 1, "trusted_proxies": ["10.0.0.0/8"]},
            "redis": {
                "url": "redis://user:********@cache:6379/0",
                "password": "******** (from MUSIC_REDIS_PASSWORD_FILE)",
                "prefix": "mf",
                "timeout": 0.5,
                "backoff_max": 10.0,
                "max_connections": 8,
            },
            "library": {
                "max_items": 100,
                "max_pages": 10,
                "max_seconds": 30.0,
                "max_streams": 2,
                "send_timeout": 5.0,
                "pages_per_address": "30/minute",
            },
            "events": {"heartbeat": 5.0, "max_streams": 50, "max_streams_per_client": 5},
            "oidc": {
                "issuer": "https://idp.test",
                "audience": "music",
                "jwks_url": "(discovered from the issuer)",
                "algorithms": ["RS256", "ES256"],
                "leeway": 10.0,
                "scope_claim": "roles",
                "subject_claim": "email",
                "scopes": {"editors": ["label", "studio"]},
            },
            "metrics": {
                "allow": ["127.0.0.1/32"],
                "token_sha256": ["d" * 64],
                "access": "restricted",
            },
            "mirror": {
                "database": "postgresql://music:********@db:5432/music",
                "password": "******** (from MUSIC_MIRROR_PASSWORD_FILE)",
                "interval": 30.0,
                "active_interval": 5.0,
                "reconcile_every": 3600.0,
                "max_calls_per_minute": 12,
                "changes_retention": 86400.0,
                "max_pages": 500,
            },
            "webhooks": [],
        }
    )


def test_describe_without_the_optional_sections() -> None:
    full = full_settings()
    shown = replace(full, redis=None, oidc=None, default_user=None, mirror=None).describe()
    assert (shown["redis"], shown["oidc"], shown["default_user"]) == (None, None, None)
    assert shown["mirror"] is None
    assert full.mirror is not None
    assert replace(full.mirror, password=None).describe()["password"] is None
    assert full.oidc is not None
    assert full.redis is not None
    oidc = replace(full.oidc, jwks_url="https://idp.test/keys")
    assert oidc.describe()["jwks_url"] == "https://idp.test/keys"
    assert replace(full.redis, password=None).describe()["password"] is None
