"""The served contract describes its deployment; /docs works offline against the same origin."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient

from music_facade.auth import mint_key
from music_facade.config import ClientSettings
from tests.support.helpers import AppFactory

CLIENT = ClientSettings(name="a", key_sha256=("0" * 64,), users=frozenset({"*"}))


def test_open_mode_has_no_security_and_names_the_request_host(make_app: AppFactory) -> None:
    resp = make_app().test_client().get("/openapi.json", base_url="http://music.internal:9000")
    doc = json.loads(resp.data)
    assert "security" not in doc
    assert "securitySchemes" not in doc["components"]
    [server] = doc["servers"]
    assert server["url"] == "{baseUrl}"
    assert server["variables"]["baseUrl"]["default"] == "http://music.internal:9000"
    assert _listed(doc) == sorted(["studio", "edge", "empty", "norecords", "ghost"])
    assert resp.headers["Vary"] == "Host"
    # Without [mirror] its paths are 404s: not served, nor any component only they used.
    assert not {"/tracks", "/changes", "/events"} & set(doc["paths"])
    text = json.dumps(doc)
    for kind in ("parameters", "headers", "schemas", "responses"):
        for name in doc["components"][kind]:
            assert f'"#/components/{kind}/{name}' in text, (kind, name)
    assert "mirror" not in {tag["name"] for tag in doc["tags"]}


def test_keyed_mode_requires_the_key_in_yaml_and_json(make_app: AppFactory) -> None:
    # Served YAML is read with libyaml's safe loader: a tenth of the pure-Python one's time.
    client = make_app(clients=(CLIENT,)).test_client()
    as_yaml = yaml.load(client.get("/openapi.yaml").data, Loader=yaml.CSafeLoader)
    as_json = json.loads(client.get("/openapi.json").data)
    assert as_yaml == as_json
    assert as_json["security"] == [{"clientKey": []}]
    assert "clientKey" in as_json["components"]["securitySchemes"]


# Aliases the repository's document never mentions (its examples use the demo's), so finding
# one in a served document can only mean it was listed.
SECRET_USERS = {"payroll-x": "1001", "board-y": "1002", "studio-z": "1003"}
ALL_KEY, ALL_DIGEST = mint_key()
ONE_KEY, ONE_DIGEST = mint_key()
SCOPED = (
    ClientSettings(name="all", key_sha256=(ALL_DIGEST,), users=frozenset({"*"})),
    ClientSettings(name="one", key_sha256=(ONE_DIGEST,), users=frozenset({"studio-z"})),
)


def _served(client: FlaskClient, key: str | None, kind: str = "json") -> tuple[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = client.get(f"/openapi.{kind}", headers=headers)
    assert resp.status_code == 200
    text = resp.get_data(as_text=True)
    doc = json.loads(text) if kind == "json" else yaml.load(text, Loader=yaml.CSafeLoader)
    return text, (doc, resp.headers)


def _listed(doc: dict[str, Any]) -> list[str] | None:
    """The aliases the served `user` description names (None: it names none). Never an enum or
    an example: the parameter stays the plain Alias schema."""
    user = doc["components"]["parameters"]["User"]
    assert user["schema"] == {"$ref": "#/components/schemas/Alias"}
    assert "enum" not in doc["components"]["schemas"]["Alias"]
    assert "example" not in user
    assert "examples" not in user
    found = re.search(
        r"The aliases you may read here: (.*?)(?: \(`[^`]+` when|\.\n)", user["description"]
    )
    return None if found is None else re.findall(r"`([^`]+)`", found.group(1))


def _base_url(served: bytes) -> str:
    """The default of the served `servers` template: the address the request came to."""
    default: str = json.loads(served)["servers"][0]["variables"]["baseUrl"]["default"]
    return default


@pytest.mark.parametrize("kind", ["json", "yaml"])
def test_the_served_contract_lists_only_the_aliases_the_caller_may_read(
    make_app: AppFactory, kind: str
) -> None:
    client = make_app(clients=SCOPED, users=SECRET_USERS).test_client()
    # The scoped callers first: their documents must not be what a stranger is served next.
    text, (doc, headers) = _served(client, ALL_KEY, kind)
    assert _listed(doc) == sorted(SECRET_USERS)
    assert headers["Cache-Control"] == "private, no-cache"
    assert headers["Vary"] == "Host, Authorization"
    text, (doc, headers) = _served(client, ONE_KEY, kind)
    assert _listed(doc) == ["studio-z"]
    assert "payroll-x" not in text
    assert "board-y" not in text
    for stranger in (None, "mf_not-a-key", "not a bearer credential"):
        text, (doc, headers) = _served(client, stranger, kind)
        assert _listed(doc) is None, stranger
        assert not [alias for alias in SECRET_USERS if alias in text], stranger
        assert headers["Cache-Control"] == "public, max-age=300"
        assert headers["Vary"] == "Host, Authorization"


def test_the_served_contract_lists_a_tokens_aliases(make_app: AppFactory) -> None:
    from tests.support.idp import oidc_settings, running_idp

    with running_idp() as idp:
        client = make_app(oidc=oidc_settings(idp)).test_client()
        _, (doc, _) = _served(client, idp.token(groups=["music-studio"]))
        assert _listed(doc) == ["studio"]
        _, (doc, _) = _served(client, idp.token(groups=["music-admin"]))
        assert _listed(doc) == sorted(["studio", "edge", "empty", "norecords", "ghost"])
        _, (doc, _) = _served(client, idp.token(groups=["music-studio"], lifetime=-600))
        assert _listed(doc) is None


def test_forwarded_scheme_is_honoured_only_from_trusted_proxies(make_app: AppFactory) -> None:
    app = make_app(proxy_hops=1, trusted_proxies=("127.0.0.1/32",))
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    trusted = app.test_client().get("/openapi.json", headers=headers, base_url="http://m.example")
    assert _base_url(trusted.data) == "https://m.example"
    stranger = app.test_client().get(
        "/openapi.json", headers=headers, base_url="http://m.example",
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )  # fmt: skip
    assert _base_url(stranger.data) == "http://m.example"


def test_docs_page_is_offline_and_reads_the_same_origin(make_app: AppFactory) -> None:
    client = make_app().test_client()
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '"url": "/openapi.json"' in html
    assert '"validatorUrl": null' in html
    assert "https://" not in html.split("<script>", 1)[0]  # no CDN for scripts or styles
    # The assets are not API paths (the contract checker would want 404): a plain client.
    assets = FlaskClient(client.application)
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"):
        resp = assets.get(f"/docs/{asset}")
        assert resp.status_code == 200, asset
        resp.close()
