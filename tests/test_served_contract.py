"""The served contract describes its deployment; /docs works offline against the same origin."""

from __future__ import annotations

import json

import yaml
from flask.testing import FlaskClient

from service.config import ClientSettings

from .helpers import AppFactory

CLIENT = ClientSettings(name="a", key_sha256=("0" * 64,), users=frozenset({"*"}))


def test_open_mode_has_no_security_and_names_the_request_host(make_app: AppFactory) -> None:
    resp = make_app().test_client().get("/openapi.json", base_url="http://music.internal:9000")
    doc = json.loads(resp.data)
    assert "security" not in doc
    assert "securitySchemes" not in doc["components"]
    assert doc["servers"] == [
        {"url": "http://music.internal:9000", "description": "This deployment."}
    ]
    assert doc["components"]["parameters"]["User"]["schema"]["enum"] == sorted(
        ["studio", "edge", "empty", "norecords", "ghost"]
    )
    assert resp.headers["Vary"] == "Host"


def test_keyed_mode_requires_the_key_in_yaml_and_json(make_app: AppFactory) -> None:
    client = make_app(clients=(CLIENT,)).test_client()
    as_yaml = yaml.safe_load(client.get("/openapi.yaml").data)
    as_json = json.loads(client.get("/openapi.json").data)
    assert as_yaml == as_json
    assert as_json["security"] == [{"clientKey": []}]
    assert "clientKey" in as_json["components"]["securitySchemes"]


def test_forwarded_scheme_is_honoured_only_from_trusted_proxies(make_app: AppFactory) -> None:
    app = make_app(proxy_hops=1, trusted_proxies=("127.0.0.1/32",))
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    trusted = app.test_client().get("/openapi.json", headers=headers, base_url="http://m.example")
    assert json.loads(trusted.data)["servers"][0]["url"] == "https://m.example"
    stranger = app.test_client().get(
        "/openapi.json", headers=headers, base_url="http://m.example",
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )  # fmt: skip
    assert json.loads(stranger.data)["servers"][0]["url"] == "http://m.example"


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
