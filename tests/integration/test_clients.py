"""Client keys and alias scopes: who may call /music, and which accounts each may read."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from music_facade.auth import Authenticator, ClientRegistry, mint_key
from music_facade.config import ClientSettings, ConfigError, load_settings
from music_facade.sandbox import SandboxServer
from tests.support.helpers import AppFactory
from tests.support.keys import (
    ADMIN_KEY,
    ADMIN_SHA,
    CLIENTS,
    OLD_KEY,
    OLD_SHA,
    WEB_KEY,
    WEB_SHA,
    bearer,
)
from tests.support.problem import problem


@pytest.fixture
def guarded(make_app: AppFactory) -> FlaskClient:
    return make_app(clients=CLIENTS).test_client()


def test_mint_key() -> None:
    key, digest = mint_key()
    assert key.startswith("mf_")
    assert len(key) > 40
    assert hashlib.sha256(key.encode()).hexdigest() == digest
    assert mint_key()[0] != key


def test_known_key_reads_its_alias(guarded: FlaskClient) -> None:
    resp = guarded.get("/music?user=studio", headers=bearer(WEB_KEY))
    assert resp.status_code == 200


def test_rotation_both_keys_work(guarded: FlaskClient) -> None:
    for key in (WEB_KEY, OLD_KEY):
        assert guarded.get("/music?user=studio", headers=bearer(key)).status_code == 200


def test_missing_key(guarded: FlaskClient, sandbox: SandboxServer) -> None:
    resp = guarded.get("/music?user=studio")
    problem(resp, 401, "credential_missing")
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="music"'
    assert sandbox.state.call_count() == 0


@pytest.mark.parametrize(
    "header",
    [
        "Basic d2ViOnNlY3JldA==",
        "Bearer",
        "Bearer ",
        "Bearer two words",
        "Bearer k\u00e9y",
        "Bearer " + "a" * 300,
        "Token abc",
    ],
)
def test_malformed_authorization(guarded: FlaskClient, header: str) -> None:
    resp = guarded.get("/music?user=studio", headers={"Authorization": header})
    problem(resp, 401, "credential_malformed")
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="music", error="invalid_request"'


def test_unknown_key(guarded: FlaskClient) -> None:
    resp = guarded.get("/music?user=studio", headers=bearer("mf_not-a-real-key"))
    problem(resp, 401, "credential_invalid")
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="music", error="invalid_token"'


def test_scheme_is_case_insensitive(guarded: FlaskClient) -> None:
    resp = guarded.get("/music?user=studio", headers={"Authorization": f"bearer {WEB_KEY}"})
    assert resp.status_code == 200


def test_auth_comes_before_validation(guarded: FlaskClient) -> None:
    problem(guarded.get("/music?type=jazz&nope=1"), 401, "credential_missing")


def test_alias_outside_scope(guarded: FlaskClient, sandbox: SandboxServer) -> None:
    resp = guarded.get("/music?user=edge", headers=bearer(WEB_KEY))
    body = problem(resp, 403, "user_not_allowed")
    assert "web" in body["detail"]
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="music", error="insufficient_scope"'
    assert sandbox.state.call_count() == 0


def test_star_scope_reads_everything(guarded: FlaskClient) -> None:
    for alias in ("studio", "edge", "empty"):
        assert guarded.get(f"/music?user={alias}", headers=bearer(ADMIN_KEY)).status_code == 200


def test_scope_is_checked_before_the_cache(guarded: FlaskClient, sandbox: SandboxServer) -> None:
    assert guarded.get("/music?user=edge", headers=bearer(ADMIN_KEY)).status_code == 200
    # The page is cached now; a client without the scope still may not have it.
    problem(guarded.get("/music?user=edge", headers=bearer(WEB_KEY)), 403, "user_not_allowed")
    assert sandbox.state.call_count() == 1


def test_implicit_user_is_scoped_too(make_app: AppFactory) -> None:
    client = make_app(clients=CLIENTS, default_user="edge").test_client()
    problem(client.get("/music", headers=bearer(WEB_KEY)), 403, "user_not_allowed")


def test_unknown_alias_vs_scope(guarded: FlaskClient) -> None:
    # A key holder cannot list the configured aliases: outside its scope, a configured alias
    # and an unconfigured one get the same 403.
    configured = guarded.get("/music?user=edge", headers=bearer(WEB_KEY))
    unconfigured = guarded.get("/music?user=finance-secret", headers=bearer(WEB_KEY))
    one = problem(configured, 403, "user_not_allowed")
    other = problem(unconfigured, 403, "user_not_allowed")
    assert one["title"] == other["title"]
    assert one["detail"].replace("edge", "X") == other["detail"].replace("finance-secret", "X")
    assert configured.headers["WWW-Authenticate"] == unconfigured.headers["WWW-Authenticate"]
    # A caller whose scope is every alias may learn which exist.
    problem(guarded.get("/music?user=nobody", headers=bearer(ADMIN_KEY)), 400, "unknown_user")


def test_open_mode(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    client = make_app().test_client()
    assert "no [[clients]] or [oidc] configured" in caplog.text
    assert client.get("/music?user=studio").status_code == 200
    # A caller's Authorization header is ignored, whatever it holds.
    assert client.get("/music?user=edge", headers=bearer("anything")).status_code == 200


def test_health_and_spec_need_no_key(guarded: FlaskClient) -> None:
    assert guarded.get("/healthz").status_code == 200
    assert guarded.get("/openapi.yaml").status_code == 200


def test_registry_compares_every_digest() -> None:
    auth = Authenticator(ClientRegistry(CLIENTS))
    assert auth.identify(f"Bearer {ADMIN_KEY}").client == CLIENTS[1]
    assert auth.identify(f"Bearer {OLD_KEY}").client == CLIENTS[0]
    assert auth.identify("Bearer x").problem is not None
    assert Authenticator(ClientRegistry(())).identify(None).client is None


# --- configuration -------------------------------------------------------------------------


BASE = '[users]\nstudio = "1"\nedge = "2"\n'


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "music.toml"
    path.write_text(text)
    return load_settings({"MUSIC_CONFIG": str(path), "USEAPI_TOKEN": "t"})


def client_block(**fields: str) -> str:
    values = {"name": '"web"', "key_sha256": f'"{WEB_SHA}"', "users": '["studio"]', **fields}
    return "[[clients]]\n" + "".join(f"{k} = {v}\n" for k, v in values.items() if v)


def test_clients_config(tmp_path: Path) -> None:
    text = BASE + client_block(key_sha256=f'["{WEB_SHA.upper()}", "{OLD_SHA}"]')
    text += client_block(name='"admin"', key_sha256=f'"{ADMIN_SHA}"', users='["*"]',
                         rate_limit='"10/second;500/hour"')  # fmt: skip
    text += '[limits]\ndefault = "60/minute"\nper_address = "5/second"\n'
    text += '[cors]\norigins = ["https://app.example.com", "http://localhost:5173"]\n'
    text += '[server]\nproxy_hops = 1\ntrusted_proxies = ["10.0.0.0/8"]\n'
    settings = load(tmp_path, text)
    web, admin = settings.clients  # type: ignore[attr-defined]
    assert web.key_sha256 == (WEB_SHA, OLD_SHA)  # normalised to lower case
    assert web.users == frozenset({"studio"})
    assert web.rate_limit is None
    assert admin.may_read("edge")
    assert admin.rate_limit == "10/second;500/hour"
    assert settings.limits.default == "60/minute"  # type: ignore[attr-defined]
    assert settings.cors_origins == ("https://app.example.com", "http://localhost:5173")  # type: ignore[attr-defined]
    assert settings.proxy_hops == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (client_block(key_sha256='"' + WEB_KEY + '"'), "clients.0.key_sha256: must be the 64-hex"),
        (client_block(key_sha256="[]"), "clients.0.key_sha256: must be a SHA-256"),
        (client_block(key_sha256="5"), "clients.0.key_sha256"),
        (client_block(users='["nobody"]'), "clients.0: users: 'nobody' is not an alias"),
        (client_block(users="[]"), "clients.0.users"),
        (client_block(name='"bad name"'), "clients.0.name"),
        (client_block(rate_limit='"lots"'), "clients.0.rate_limit: 'lots' is not a rate limit"),
        (client_block(colour='"red"'), "clients.0.colour: Unknown field."),
        (client_block() + client_block(key_sha256=f'"{OLD_SHA}"'), "clients.1: 'web' is used by"),
        (client_block() + client_block(name='"b"'), "clients.1: key_sha256: a key is listed twice"),
        ("[limits]\ndefault = '3 per fortnight'\n", "limits.default"),
        ("[cors]\norigins = ['*']\n", "cors.origins.0: '*' is not an origin"),
        ("[cors]\norigins = ['https://a.example.com/path']\n", "cors.origins.0"),
        ("[server]\nproxy_hops = -1\n", "server.proxy_hops"),
    ],
)
def test_bad_clients_config(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, BASE + text)
    assert expected in str(info.value)
    assert WEB_KEY not in str(info.value) or "must be the 64-hex" in str(info.value)


def test_mint_key_command_output_configures_a_working_client(
    tmp_path: Path, make_app: AppFactory
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "music_facade", "mint-key", "--name", "kiosk"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    key = re.search(r"^    (mf_\S+)$", done.stdout, re.MULTILINE)
    digest = re.search(r'key_sha256 = "([0-9a-f]{64})"', done.stdout)
    assert key is not None
    assert digest is not None
    kiosk = ClientSettings("kiosk", (digest.group(1),), frozenset({"studio"}))
    client = make_app(clients=(kiosk,)).test_client()
    assert client.get("/music?user=studio", headers=bearer(key.group(1))).status_code == 200
