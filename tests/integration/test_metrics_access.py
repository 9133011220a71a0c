"""Who may read /metrics by default: anyone in open mode, nobody once callers need a credential
(the metrics name every alias and client), unless [metrics] says who."""

from __future__ import annotations

import hashlib

import pytest

from music_facade.auth import mint_key
from music_facade.config import ClientSettings, MetricsSettings, OidcSettings
from tests.support.helpers import AppFactory
from tests.support.problem import problem

KEY, DIGEST = mint_key()
CLIENTS = (ClientSettings("web", (DIGEST,), frozenset({"*"})),)
OIDC = OidcSettings(issuer="https://idp.example.com", audience="music")
SCRAPE_TOKEN = "scrape-token-0123456789"
SCRAPE_DIGEST = hashlib.sha256(SCRAPE_TOKEN.encode()).hexdigest()


@pytest.mark.parametrize(
    "credentials", [{"clients": CLIENTS}, {"oidc": OIDC}, {"clients": CLIENTS, "oidc": OIDC}]
)
def test_closed_by_default_once_callers_need_a_credential(
    make_app: AppFactory, credentials: dict[str, object]
) -> None:
    client = make_app(**credentials).test_client()
    for headers in ({}, {"Authorization": f"Bearer {KEY}"}):  # a key holder neither
        doc = problem(client.get("/metrics", headers=headers), 403, "metrics_forbidden")
        assert "[metrics] allow" in doc["detail"]
        assert "studio" not in str(doc)


def test_open_mode_stays_open(make_app: AppFactory) -> None:
    assert make_app().test_client().get("/metrics").status_code == 200


def test_allow_or_a_token_opens_it_with_keys_configured(make_app: AppFactory) -> None:
    by_address = make_app(clients=CLIENTS, metrics=MetricsSettings(allow=("127.0.0.0/8",)))
    assert by_address.test_client().get("/metrics").status_code == 200
    problem(
        by_address.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.1"}),
        403,
        "metrics_forbidden",
    )
    by_token = make_app(oidc=OIDC, metrics=MetricsSettings(token_sha256=(SCRAPE_DIGEST,)))
    scrape = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
    assert by_token.test_client().get("/metrics", headers=scrape).status_code == 200
    problem(by_token.test_client().get("/metrics"), 403, "metrics_forbidden")
