"""[[webhooks]] settings: the URL's scheme, the secret from a file or a variable and its
format, the aliases and events checked, [mirror] required, and the secret never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from music_facade.config import ConfigError, Settings, load_settings
from music_facade.core.change_events import EVENTS
from tests.support.config_files import MINIMAL, TOKEN, write
from tests.support.webhook_receiver import new_secret

MIRROR = MINIMAL + "[mirror]\ndatabase = 'sqlite:////var/lib/m.db'\n"


def load(tmp_path: Path, text: str, **env: str) -> Settings:
    environ = {"MUSIC_CONFIG": write(tmp_path, text), "USEAPI_TOKEN": TOKEN, **env}
    return load_settings(environ)


def error_of(tmp_path: Path, text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **env)
    return str(info.value)


def table(url: str = "https://hooks.test/in", extra: str = "", secret: str | None = None) -> str:
    source = secret if secret is not None else 'secret_env = "HOOK"'
    return f'[[webhooks]]\nname = "crm"\nurl = "{url}"\n{source}\nusers = ["studio"]\n{extra}'


def test_a_webhook_from_a_variable_with_every_event_by_default(tmp_path: Path) -> None:
    secret = new_secret()
    (hook,) = load(tmp_path, MIRROR + table(), HOOK=secret).webhooks
    assert (hook.name, hook.url, hook.users, hook.events) == (
        "crm",
        "https://hooks.test/in",
        frozenset({"studio"}),
        EVENTS,
    )
    assert hook.secret.reveal() == secret


def test_a_secret_file_and_chosen_events(tmp_path: Path) -> None:
    secret = new_secret()
    path = tmp_path / "hook-secret"
    path.write_text(secret + "\n")
    text = MIRROR + table(
        extra='events = ["track.completed", "track.failed"]\n',
        secret=f'secret_file = "{path}"',
    )
    (hook,) = load(tmp_path, text).webhooks
    assert hook.secret.reveal() == secret
    assert hook.events == ("track.completed", "track.failed")


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9000/in", "http://localhost/in", "http://[::1]:8080/in", "https://x.test"],
)
def test_https_or_plain_http_to_loopback(tmp_path: Path, url: str) -> None:
    assert load(tmp_path, MIRROR + table(url), HOOK=new_secret()).webhooks[0].url == url


@pytest.mark.parametrize(
    "url",
    ["http://hooks.test/in", "ftp://hooks.test/", "https://user:pw@hooks.test/", "hooks.test"],
)
def test_other_urls_are_refused_without_echoing_them(tmp_path: Path, url: str) -> None:
    message = error_of(tmp_path, MIRROR + table(url), HOOK=new_secret())
    assert message.startswith("webhooks.0.url: must be")
    assert "pw" not in message


def test_webhooks_need_the_mirror(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + table(), HOOK=new_secret())
    assert message == "webhooks: needs a [mirror] section: webhooks send the mirror's changes"


def test_every_mistake_at_once(tmp_path: Path) -> None:
    text = (
        MIRROR
        + table()
        + (
            '[[webhooks]]\nname = "crm"\nurl = "https://b.test/"\nsecret_env = "HOOK"\n'
            'users = ["nobody"]\nevents = ["track.moved"]\n'
            '[[webhooks]]\nname = "both"\nurl = "https://c.test/"\nusers = ["*"]\n'
        )
    )
    lines = error_of(tmp_path, text, HOOK=new_secret()).splitlines()
    assert "webhooks.1.events.0: track.moved is not one of " + ", ".join(EVENTS) in lines
    assert "webhooks.1: 'crm' is used by another webhook" in lines
    assert "webhooks.1: users: 'nobody' is not an alias in [users]" in lines
    assert "webhooks.2.secret_file: give exactly one of secret_file and secret_env" in lines


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not-a-secret", "the secret must be whsec_ followed by base64"),
        ("whsec_!!!", "the secret after whsec_ is not valid base64"),
        ("whsec_c2hvcnQ=", "the secret's key is shorter than 24 bytes"),
    ],
)
def test_an_unusable_secret_is_refused_without_quoting_it(
    tmp_path: Path, value: str, problem: str
) -> None:
    message = error_of(tmp_path, MIRROR + table(), HOOK=value)
    assert message.startswith(f"webhooks.0.secret_env: {problem}")
    assert value not in message


def test_a_missing_variable_or_file(tmp_path: Path) -> None:
    assert error_of(tmp_path, MIRROR + table()) == (
        "webhooks.0.secret_env: the variable HOOK is not set or empty"
    )
    missing = tmp_path / "absent"
    message = error_of(tmp_path, MIRROR + table(secret=f'secret_file = "{missing}"'))
    assert message.startswith(f"webhooks.0.secret_file: cannot read {missing}")


def test_the_secret_is_never_shown(tmp_path: Path) -> None:
    secret = new_secret()
    settings = load(tmp_path, MIRROR + table(), HOOK=secret)
    shown = json.dumps(settings.describe()) + repr(settings) + str(settings.webhooks)
    assert secret not in shown
    assert settings.describe()["webhooks"] == [
        {
            "name": "crm",
            "url": "https://hooks.test/in",
            "secret": "******** (from secret_env HOOK)",
            "users": ["studio"],
            "events": list(EVENTS),
        }
    ]
