"""[mirror] settings: the database URL from the file or the environment, the password from a
file, every key checked, and the password masked wherever the settings are shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from music_facade.config import ConfigError, MirrorSettings, Secret, Settings, load_settings
from tests.support.config_files import MINIMAL, TOKEN, write

PG_URL = "postgresql://music@db.internal:5432/music?sslmode=require"


def load(tmp_path: Path, text: str, **env: str) -> Settings:
    environ = {"MUSIC_CONFIG": write(tmp_path, text), "USEAPI_TOKEN": TOKEN, **env}
    return load_settings(environ)


def error_of(tmp_path: Path, text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **env)
    return str(info.value)


def mirror_of(tmp_path: Path, text: str, **env: str) -> MirrorSettings:
    mirror = load(tmp_path, text, **env).mirror
    assert mirror is not None
    return mirror


def test_no_section_no_mirror(tmp_path: Path) -> None:
    settings = load(tmp_path, MINIMAL)
    assert settings.mirror is None
    assert settings.describe()["mirror"] is None


def test_defaults_with_a_sqlite_file(tmp_path: Path) -> None:
    mirror = mirror_of(tmp_path, MINIMAL + "[mirror]\ndatabase = 'sqlite:////var/lib/m.db'\n")
    assert mirror == MirrorSettings(database=Secret("sqlite:////var/lib/m.db"))
    assert (mirror.interval, mirror.active_interval, mirror.reconcile_every) == (60, 10, 86400)
    assert (mirror.max_calls_per_minute, mirror.changes_retention) == (30, 604800)
    assert (mirror.max_pages, mirror.password, mirror.dialect) == (10000, None, "sqlite")


def test_every_key(tmp_path: Path) -> None:
    text = MINIMAL + (
        f"[mirror]\ndatabase = '{PG_URL}'\ninterval = 30\nactive_interval = 2.5\n"
        "reconcile_every = 3600\nmax_calls_per_minute = 12\nchanges_retention = 86400\n"
        "max_pages = 50\n"
    )
    mirror = mirror_of(tmp_path, text)
    assert mirror == MirrorSettings(
        database=Secret(PG_URL),
        interval=30.0,
        active_interval=2.5,
        reconcile_every=3600.0,
        max_calls_per_minute=12,
        changes_retention=86400.0,
        max_pages=50,
    )
    assert mirror.dialect == "postgresql"
    assert isinstance(mirror.interval, float)


def test_the_environment_names_the_database_and_the_password_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "mirror-password"
    secret_file.write_text("pg-pass-from-file\n")
    text = MINIMAL + "[mirror]\ndatabase = 'sqlite:///mirror.db'\ninterval = 5\n"
    mirror = mirror_of(
        tmp_path,
        text,
        MUSIC_MIRROR_DATABASE_URL=PG_URL,
        MUSIC_MIRROR_PASSWORD_FILE=str(secret_file),
    )
    assert mirror.database.reveal() == PG_URL  # the variable wins over the file's key
    assert mirror.password is not None
    assert mirror.password.reveal() == "pg-pass-from-file"
    assert mirror.interval == 5.0  # the section's other keys still apply
    # An empty [mirror] with the variable: the variable is the database.
    mirror = mirror_of(tmp_path, MINIMAL + "[mirror]\n", MUSIC_MIRROR_DATABASE_URL=PG_URL)
    assert mirror.database.reveal() == PG_URL


def test_postgresql_urls_that_libpq_accepts(tmp_path: Path) -> None:
    for url in (
        "postgresql://music@/music?host=/run/postgresql",  # a Unix socket
        "postgresql://music@[::1]:5433/music",
        "postgresql://db/music",
    ):
        assert mirror_of(tmp_path, MINIMAL + f"[mirror]\ndatabase = '{url}'\n").database.reveal()


def test_the_password_is_masked_wherever_the_settings_are_shown(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("pass-in-file")
    text = MINIMAL + "[mirror]\ndatabase = 'postgresql://music:p%40ss-in-url@db:5432/music'\n"
    settings = load(tmp_path, text, MUSIC_MIRROR_PASSWORD_FILE=str(secret_file))
    shown = json.dumps(settings.describe()) + repr(settings) + str(settings.mirror)
    for secret in ("p%40ss-in-url", "p@ss-in-url", "pass-in-file"):
        assert secret not in shown
    described = settings.describe()["mirror"]
    assert described["database"] == "postgresql://music:********@db:5432/music"
    assert described["password"] == "******** (from MUSIC_MIRROR_PASSWORD_FILE)"
    assert settings.mirror is not None
    assert set(settings.mirror.secrets()) == {"p@ss-in-url", "p%40ss-in-url", "pass-in-file"}
    assert mirror_of(tmp_path, MINIMAL + f"[mirror]\ndatabase = '{PG_URL}'\n").secrets() == []


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("", "mirror.database: required in [mirror] (or set MUSIC_MIRROR_DATABASE_URL)"),
        ("database = 'mysql://u:hunter2@db/music'", "mirror.database: must be sqlite:///"),
        ("database = 'postgres://u:hunter2@db/music'", "mirror.database: must be"),
        ("database = 'sqlite://'", "(a SQLite file: no host, no query)"),
        ("database = 'sqlite:///'", "mirror.database: must be"),
        ("database = 'sqlite:///:memory:'", "mirror.database: must be"),
        ("database = 'sqlite://host/m.db'", "mirror.database: must be"),
        ("database = 'sqlite:///m.db?mode=ro'", "mirror.database: must be"),
        ("database = 'postgresql://u:hunter2@db:99999/music'", "(with a valid port)"),
        ("database = 'postgresql://u:hunter2@/music'", "(with a host)"),
        ("database = 'postgresql://u:hunter2@db'", "(with one database name)"),
        ("database = 'postgresql://u:hunter2@db/a/b'", "(with one database name)"),
        ("database = 'postgresql://u@db/m?password=hunter2'", "belongs in MUSIC_MIRROR_PASSWORD"),
        ("database = 3", "mirror.database: Not a valid string."),
        ("interval = 0", "mirror.interval: must be greater than 0"),
        ("interval = -1", "mirror.interval:"),
        ("interval = 86401", "mirror.interval:"),
        ("interval = '60'", "mirror.interval: Not a valid number."),
        ("active_interval = 0", "mirror.active_interval:"),
        ("reconcile_every = 0", "mirror.reconcile_every:"),
        ("changes_retention = 0", "mirror.changes_retention:"),
        ("max_calls_per_minute = 0", "mirror.max_calls_per_minute:"),
        ("max_calls_per_minute = 1.5", "mirror.max_calls_per_minute: Not a valid integer."),
        ("max_pages = 0", "mirror.max_pages:"),
        ("max_page = 5", "mirror.max_page: Unknown field. Did you mean `max_pages`?"),
    ],
)
def test_bad_mirror_sections_name_the_key_and_never_echo_the_url(
    tmp_path: Path, section: str, expected: str
) -> None:
    if "database" not in section and section:
        section += "\ndatabase = 'sqlite:///m.db'"
    message = error_of(tmp_path, MINIMAL + f"[mirror]\n{section}\n")
    assert expected in message
    assert "hunter2" not in message
    assert "mirror.database: required" not in message or section == ""


def test_every_mirror_error_at_once(tmp_path: Path) -> None:
    text = MINIMAL + "[mirror]\ndatabase = 'x'\ninterval = 0\nmax_pages = 0\n"
    errors = error_of(tmp_path, text).splitlines()
    assert [line.split(":")[0] for line in errors] == [
        "mirror.database",
        "mirror.interval",
        "mirror.max_pages",
    ]


def test_bad_environment(tmp_path: Path) -> None:
    sqlite = MINIMAL + "[mirror]\ndatabase = 'sqlite:///m.db'\n"
    message = error_of(tmp_path, sqlite, MUSIC_MIRROR_DATABASE_URL="postgresql//u:hunter2@db")
    assert message.startswith("MUSIC_MIRROR_DATABASE_URL: must be")
    assert "hunter2" not in message
    missing = str(tmp_path / "missing")
    message = error_of(tmp_path, sqlite, MUSIC_MIRROR_PASSWORD_FILE=missing)
    assert message.startswith("MUSIC_MIRROR_PASSWORD_FILE: cannot read")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    pg = MINIMAL + f"[mirror]\ndatabase = '{PG_URL}'\n"
    message = error_of(tmp_path, pg, MUSIC_MIRROR_PASSWORD_FILE=str(empty))
    assert message == "MUSIC_MIRROR_PASSWORD_FILE: the file is empty"
    password = tmp_path / "pw"
    password.write_text("hunter2")
    message = error_of(tmp_path, sqlite, MUSIC_MIRROR_PASSWORD_FILE=str(password))
    assert message == "MUSIC_MIRROR_PASSWORD_FILE: set, but a SQLite database has no password"


def test_the_variables_without_the_section_are_an_error_not_ignored(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("hunter2")
    env = {"MUSIC_MIRROR_DATABASE_URL": PG_URL, "MUSIC_MIRROR_PASSWORD_FILE": str(password)}
    message = error_of(tmp_path, MINIMAL, **env)
    assert message.splitlines() == [
        "MUSIC_MIRROR_DATABASE_URL: set, but the configuration has no [mirror] section (add one "
        "to turn the mirror on, or unset the variable)",
        "MUSIC_MIRROR_PASSWORD_FILE: set, but the configuration has no [mirror] section (add one "
        "to turn the mirror on, or unset the variable)",
    ]
    # Empty variables count as unset, as for every other variable.
    assert load(tmp_path, MINIMAL, MUSIC_MIRROR_DATABASE_URL="").mirror is None


def test_a_mirror_that_is_not_a_table(tmp_path: Path) -> None:
    assert "mirror: Invalid input type." in error_of(tmp_path, "mirror = 3\n" + MINIMAL)
