"""Identity-provider tokens: verified against a real JWKS over loopback HTTP, scoped by claims."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from music_facade.auth import oidc
from music_facade.config import ConfigError, parse_settings
from music_facade.sandbox import SandboxServer
from tests.support.clock import Clock
from tests.support.helpers import AppFactory
from tests.support.idp import AUDIENCE, SigningKey, TestIdP, oidc_settings, running_idp
from tests.support.keys import CLIENTS, WEB_KEY, bearer
from tests.support.problem import problem
from tests.support.waiting import wait_until


@pytest.fixture
def idp() -> Iterator[TestIdP]:
    with running_idp() as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens(make_app: AppFactory, idp: TestIdP, clock: Clock) -> FlaskClient:
    """An app taking both client keys and the test IdP's tokens."""
    return make_app(clock=clock, clients=CLIENTS, oidc=oidc_settings(idp)).test_client()


def test_token_reads_its_aliases_only(tokens: FlaskClient, idp: TestIdP) -> None:
    token = idp.token(groups=["music-studio", "other-team"])
    ok = tokens.get("/music?user=studio", headers=bearer(token))
    assert ok.status_code == 200
    assert ok.headers["Cache-Control"] == "private, no-cache"
    assert "Authorization" in ok.headers["Vary"]
    problem(tokens.get("/music?user=edge", headers=bearer(token)), 403, "user_not_allowed")


def test_ec_key_and_admin_group(tokens: FlaskClient, idp: TestIdP) -> None:
    token = idp.token(groups=["music-admin"], key=idp.keys[1])
    for alias in ("studio", "edge"):
        assert tokens.get(f"/music?user={alias}", headers=bearer(token)).status_code == 200


def test_space_separated_scope_claim(make_app: AppFactory, idp: TestIdP) -> None:
    app = make_app(oidc=oidc_settings(idp, scope_claim="scope"))
    token = idp.token(scope="openid music-studio")
    assert app.test_client().get("/music?user=studio", headers=bearer(token)).status_code == 200


def test_keys_still_work_beside_tokens(tokens: FlaskClient) -> None:
    assert tokens.get("/music?user=studio", headers=bearer(WEB_KEY)).status_code == 200
    problem(tokens.get("/music?user=studio"), 401, "credential_missing")


def test_no_scope_no_alias(tokens: FlaskClient, idp: TestIdP) -> None:
    token = idp.token(groups=["somebody-else"])
    problem(tokens.get("/music?user=studio", headers=bearer(token)), 403, "user_not_allowed")


def test_out_of_scope_answer_does_not_reveal_configured_aliases(
    tokens: FlaskClient, idp: TestIdP
) -> None:
    token = idp.token(groups=["music-studio"])
    configured = problem(
        tokens.get("/music?user=edge", headers=bearer(token)), 403, "user_not_allowed"
    )
    unknown = problem(
        tokens.get("/music?user=payroll", headers=bearer(token)), 403, "user_not_allowed"
    )
    assert configured["detail"].replace("edge", "X") == unknown["detail"].replace("payroll", "X")


def _none_token(idp: TestIdP) -> str:
    def seg(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    claims = {"iss": idp.issuer, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 60}
    header = {"alg": "none", "kid": idp.keys[0].kid}
    return f"{seg(header)}.{seg(claims | {'groups': ['music-admin']})}."


def _hs256_with_public_key(idp: TestIdP) -> str:
    """The classic confusion: HS256 with the IdP's public key (as published) as the secret."""
    public = idp.keys[0].private.public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"iss": idp.issuer, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 60}
    header = {"alg": "HS256", "kid": idp.keys[0].kid, "typ": "JWT"}
    signing_input = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
        for part in (header, claims | {"groups": ["music-admin"]})
    )
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def _forged(idp: TestIdP) -> str:
    """Signed by a key the IdP never published, under a published kid."""
    impostor = SigningKey("RS256")
    impostor.kid = idp.keys[0].kid
    return idp.token(groups=["music-admin"], key=impostor)


def _studio(**kw: Any) -> Any:
    """A maker of a music-studio token with these changes."""
    return lambda idp: idp.token(groups=["music-studio"], **kw)


def _not_yet_valid(idp: TestIdP) -> str:
    """Valid ten minutes from when the test runs (not from when the module was collected)."""
    return idp.token(groups=["music-studio"], nbf=int(time.time()) + 600)


REFUSED = [
    ("expired", _studio(lifetime=-120), "credential_expired"),
    ("wrong issuer", _studio(iss="https://evil.example"), "credential_invalid"),
    ("wrong audience", _studio(aud="another-app"), "credential_invalid"),
    ("not yet valid", _not_yet_valid, "credential_invalid"),
    ("bad signature", _forged, "credential_invalid"),
    ("unknown kid", _studio(headers={"kid": "nope"}), "credential_invalid"),
    ("alg none", _none_token, "credential_invalid"),
    ("HS256 with the public key", _hs256_with_public_key, "credential_invalid"),
    ("no exp", _studio(exp=None), "credential_invalid"),
    ("no subject", _studio(sub=None), "credential_invalid"),
    ("garbage segments", lambda idp: "eyJub3QiOiJqc29u.bm9wZQ.c2ln", "credential_malformed"),
    ("oversized", _studio(pad="x" * 9000), "credential_malformed"),
    # Header shapes PyJWT itself refuses (with an InvalidTokenError, not a DecodeError).
    ("kid a number", lambda idp: idp.raw_token({"alg": "RS256", "kid": 123}), "credential_invalid"),
    ("kid a list", lambda idp: idp.raw_token({"alg": "RS256", "kid": [idp.keys[0].kid]}),
     "credential_invalid"),
    ("crit unsupported", lambda idp: idp.raw_token(
        {"alg": "RS256", "kid": idp.keys[0].kid, "crit": ["exp"], "exp": 1}), "credential_invalid"),
    ("crit not a list", lambda idp: idp.raw_token(
        {"alg": "RS256", "kid": idp.keys[0].kid, "crit": "b64"}), "credential_invalid"),
    ("b64 false", lambda idp: idp.raw_token(
        {"alg": "RS256", "kid": idp.keys[0].kid, "b64": False, "crit": ["b64"]}),
     "credential_malformed"),
    ("alg a list", lambda idp: idp.raw_token({"alg": ["RS256"], "kid": idp.keys[0].kid}),
     "credential_invalid"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "code"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_tokens(
    tokens: FlaskClient, idp: TestIdP, sandbox: SandboxServer, case: str, make: Any, code: str
) -> None:
    token = make(idp)
    resp = tokens.get("/music?user=studio", headers=bearer(token))
    body = problem(resp, 401, code)
    assert token not in resp.get_data(as_text=True)
    assert "WWW-Authenticate" in resp.headers
    assert body["code"] == code, case
    assert sandbox.state.call_count() == 0


# Any JSON value a header may carry (json.loads also reads NaN and Infinity, so they are in).
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
# RFC 7515's registered header names (and a few of PyJWT's), plus anything else.
HEADER_NAMES = st.sampled_from(
    ["alg", "kid", "typ", "cty", "crit", "b64", "jku", "jwk", "x5u", "x5c", "x5t", "zip", "enc"]
) | st.text(max_size=8)
HEADERS = st.dictionaries(HEADER_NAMES, JSON_VALUES, max_size=5)
# 150 fixed examples: each signs a token and answers a request (about 20 ms), and these two
# fuzzers were a fifth of the in-process suite's time at 300.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def unlimited(make_app: AppFactory, idp: TestIdP) -> FlaskClient:
    """An app taking the test IdP's tokens with a rate limit no fuzzing run reaches."""
    from music_facade.config import LimitSettings

    limits = LimitSettings(default="1000000/minute")
    return make_app(oidc=oidc_settings(idp), limits=limits).test_client()


@FUZZ
@given(changes=HEADERS, path=st.sampled_from(["/music?user=studio", "/openapi.json"]))
def test_no_header_a_stranger_sends_reaches_a_500(
    unlimited: FlaskClient, idp: TestIdP, changes: dict[str, Any], path: str
) -> None:
    # Signed with the IdP's real key over a valid header with the fuzzed parameters on top, so
    # a token gets as far as the header lets it: through the fast handler and a Flask route.
    header = {"alg": "RS256", "kid": idp.keys[0].kid, "typ": "JWT"} | changes
    resp = unlimited.get(path, headers=bearer(idp.raw_token(header)))
    assert resp.status_code in (200, 401), resp.get_data(as_text=True)
    if resp.status_code == 401:
        assert resp.get_json()["code"] in ("credential_invalid", "credential_malformed")


CLAIM_NAMES = st.sampled_from(
    ["iss", "aud", "sub", "exp", "nbf", "iat", "jti", "groups", "scope", "email"]
) | st.text(max_size=8)


@FUZZ
@given(changes=st.dictionaries(CLAIM_NAMES, JSON_VALUES, max_size=5))
def test_no_claims_a_signed_token_carries_reach_a_500(
    unlimited: FlaskClient, idp: TestIdP, changes: dict[str, Any]
) -> None:
    now = int(time.time())
    claims = {"iss": idp.issuer, "aud": AUDIENCE, "sub": "alice", "exp": now + 300} | changes
    token = idp.raw_token({"alg": "RS256", "kid": idp.keys[0].kid}, claims)
    resp = unlimited.get("/music?user=studio", headers=bearer(token))
    assert resp.status_code in (200, 401, 403), resp.get_data(as_text=True)


def test_rotation_and_the_refetch_floor(tokens: FlaskClient, idp: TestIdP, clock: Clock) -> None:
    first = idp.token(groups=["music-studio"])
    assert tokens.get("/music?user=studio", headers=bearer(first)).status_code == 200
    assert idp.jwks_fetches == 1
    # A flood of made-up kids within the floor: refused without asking the IdP again.
    for i in range(50):
        flood = idp.token(groups=["music-studio"], headers={"kid": f"made-up-{i}"})
        resp = tokens.get("/music?user=studio", headers=bearer(flood))
        problem(resp, 401, "credential_invalid")
    assert idp.jwks_fetches == 1
    # The IdP rotates; once the floor has passed, the new kid is fetched and accepted.
    new = idp.rotate()
    clock.now += oidc.REFETCH_FLOOR + 1
    rotated = idp.token(groups=["music-studio"], key=new)
    assert tokens.get("/music?user=studio", headers=bearer(rotated)).status_code == 200
    assert idp.jwks_fetches == 2
    # Tokens signed with the old key still verify.
    assert tokens.get("/music?user=studio", headers=bearer(first)).status_code == 200


def test_idp_down_with_cached_keys_changes_nothing(
    tokens: FlaskClient, idp: TestIdP, clock: Clock
) -> None:
    token = idp.token(groups=["music-studio"])
    assert tokens.get("/music?user=studio", headers=bearer(token)).status_code == 200
    idp.down = True
    clock.now += oidc.REFRESH_AFTER + 1  # due for a refresh, which fails
    for _ in range(3):
        assert tokens.get("/music?user=studio", headers=bearer(token)).status_code == 200
    assert idp.jwks_fetches == 2  # one refresh tried; the floor holds the rest


def test_idp_down_without_keys_is_503(tokens: FlaskClient, idp: TestIdP, clock: Clock) -> None:
    idp.down = True
    token = idp.token(groups=["music-studio"])
    resp = tokens.get("/music?user=studio", headers=bearer(token))
    problem(resp, 503, "identity_provider_unavailable")
    assert int(resp.headers["Retry-After"]) >= 1
    started = time.monotonic()
    problem(
        tokens.get("/music?user=studio", headers=bearer(token)),
        503,
        "identity_provider_unavailable",
    )
    assert time.monotonic() - started < 0.5  # within the floor: no second wait on the IdP
    assert idp.jwks_fetches == 1
    # Keys keep working for client keys meanwhile.
    assert tokens.get("/music?user=studio", headers=bearer(WEB_KEY)).status_code == 200
    idp.down = False
    clock.now += oidc.REFETCH_FLOOR + 1
    assert tokens.get("/music?user=studio", headers=bearer(token)).status_code == 200


def test_unreachable_idp_is_bounded(make_app: AppFactory, idp: TestIdP) -> None:
    # A port nobody listens on: refused at once, 503, never a 500.
    dead = oidc_settings(idp, jwks_url="http://127.0.0.1:9/certs")
    client = make_app(oidc=dead).test_client()
    token = idp.token(groups=["music-studio"])
    problem(
        client.get("/music?user=studio", headers=bearer(token)),
        503,
        "identity_provider_unavailable",
    )


DEADLINE = 1.0  # the fetch deadline in these tests (seconds), for speed


@pytest.mark.parametrize("drip_from", ["headers", "body"])
def test_a_dripping_jwks_is_cut_at_the_deadline(
    make_app: AppFactory, idp: TestIdP, monkeypatch: pytest.MonkeyPatch, drip_from: str
) -> None:
    # A byte every 0.1 s: each read gets its byte long before the 3 s read timeout, so only a
    # deadline for the whole fetch ends it (the JWKS would take minutes at this pace).
    monkeypatch.setattr(oidc, "FETCH_DEADLINE", DEADLINE)
    idp.drip, idp.drip_from = 0.1, drip_from
    client = make_app(oidc=oidc_settings(idp)).test_client()
    started = time.monotonic()
    resp = client.get("/music?user=studio", headers=bearer(idp.token(groups=["music-studio"])))
    problem(resp, 503, "identity_provider_unavailable")
    assert time.monotonic() - started < DEADLINE + 0.5


def test_one_fetch_in_flight_however_long_it_takes(
    make_app: AppFactory, idp: TestIdP, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oidc, "FETCH_DEADLINE", DEADLINE)
    idp.drip, idp.drip_from = 0.1, "body"
    app = make_app(clock=clock, oidc=oidc_settings(idp))
    token = idp.token(groups=["music-studio"])
    answers: list[tuple[int, float]] = []

    def get() -> None:
        started = time.monotonic()
        resp = app.test_client().get("/music?user=studio", headers=bearer(token))
        answers.append((resp.status_code, time.monotonic() - started))

    first = threading.Thread(target=get)
    first.start()
    wait_until(lambda: idp.jwks_fetches == 1)
    # The floor has passed while the first fetch still drips: later requests neither start a
    # fetch of their own nor queue for one after it; they take the first one's outcome.
    clock.now += oidc.REFETCH_FLOOR + 1
    later = [threading.Thread(target=get) for _ in range(4)]
    for thread in later:
        thread.start()
    for thread in [first, *later]:
        thread.join()
    assert [status for status, _ in answers] == [503] * 5
    assert max(seconds for _, seconds in answers) < DEADLINE + 0.5
    assert idp.jwks_fetches == 1
    # The IdP recovers: after the floor, one fetch, and the token is accepted.
    idp.drip = None
    clock.now += oidc.REFETCH_FLOOR + 1
    assert app.test_client().get("/music?user=studio", headers=bearer(token)).status_code == 200
    assert idp.jwks_fetches == 2


def test_keys_of_odd_shapes_in_the_jwks_are_skipped_or_a_503_never_a_500(
    tokens: FlaskClient, idp: TestIdP, clock: Clock
) -> None:
    token = idp.token(groups=["music-studio"])
    good = idp.keys[0].jwk
    # A kid that is a list (unhashable) beside the good keys: skipped, the good ones verify.
    idp.extra_jwks = [good | {"kid": ["list"]}, good | {"kid": 7}]
    assert tokens.get("/music?user=studio", headers=bearer(token)).status_code == 200
    # An `alg` that is a list makes PyJWT itself raise a TypeError: the JWKS is unusable.
    idp.extra_jwks = [good | {"alg": ["RS256"]}]
    clock.now += oidc.REFETCH_FLOOR + 1
    other = idp.token(groups=["music-studio"], key=idp.rotate())  # an unknown kid: a refetch
    problem(
        tokens.get("/music?user=studio", headers=bearer(other)),
        503,
        "identity_provider_unavailable",
    )
    assert idp.jwks_fetches == 2


def test_discovery(make_app: AppFactory, idp: TestIdP) -> None:
    client = make_app(oidc=oidc_settings(idp, jwks_url=None)).test_client()
    token = idp.token(groups=["music-studio"])
    assert client.get("/music?user=studio", headers=bearer(token)).status_code == 200
    assert idp.discovery_fetches == 1
    assert idp.jwks_fetches == 1


def test_rate_limits_and_logs_count_per_subject(
    make_app: AppFactory, idp: TestIdP, caplog: pytest.LogCaptureFixture
) -> None:
    from music_facade.config import LimitSettings

    client = make_app(
        oidc=oidc_settings(idp), limits=LimitSettings(default="2/minute")
    ).test_client()
    alice = idp.token("alice", ["music-studio"])
    bob = idp.token("bob", ["music-studio"])
    caplog.set_level(logging.INFO, logger="music_facade.access")
    for _ in range(2):
        assert client.get("/music?user=studio", headers=bearer(alice)).status_code == 200
    problem(client.get("/music?user=studio", headers=bearer(alice)), 429, "rate_limited")
    assert client.get("/music?user=studio", headers=bearer(bob)).status_code == 200
    clients = {
        getattr(r, "client", None) for r in caplog.records if r.name == "music_facade.access"
    }
    assert {"oidc:alice", "oidc:bob"} <= clients
    assert alice not in caplog.text
    assert bob not in caplog.text


def test_subject_claim_is_configurable(
    make_app: AppFactory, idp: TestIdP, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_app(oidc=oidc_settings(idp, subject_claim="email")).test_client()
    caplog.set_level(logging.INFO, logger="music_facade.access")
    token = idp.token(groups=["music-studio"], email="alice@example.com")
    assert client.get("/music?user=studio", headers=bearer(token)).status_code == 200
    assert any(getattr(r, "client", None) == "oidc:alice@example.com" for r in caplog.records)
    problem(
        client.get("/music?user=studio", headers=bearer(idp.token(groups=["music-studio"]))),
        401,
        "credential_invalid",
    )


BASE = {"users": {"studio": "1001"}}
ENV = {"USEAPI_TOKEN": "t"}


def _oidc(**section: Any) -> dict[str, Any]:
    return BASE | {
        "oidc": {"issuer": "https://login.example.com/realms/corp", "audience": "music-facade"}
        | section
    }


def test_config_parses_the_issue_example() -> None:
    settings = parse_settings(
        _oidc(
            jwks_url="https://login.example.com/realms/corp/protocol/openid-connect/certs",
            algorithms=["RS256", "ES256"],
            leeway=30,
            scope_claim="groups",
            subject_claim="sub",
            scopes={"music-studio": ["studio"], "music-admin": ["*"]},
        ),
        ENV,
    )
    assert settings.oidc is not None
    assert settings.oidc.algorithms == ("RS256", "ES256")
    assert settings.oidc.scopes["music-admin"] == frozenset({"*"})
    assert settings.describe()["oidc"]["jwks_url"].endswith("/certs")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"algorithms": ["HS256"]}, "oidc.algorithms"),
        ({"algorithms": ["none"]}, "oidc.algorithms"),
        ({"scopes": {"g": ["finance"]}}, "oidc.scopes"),
        ({"issuer": "http://login.example.com"}, "oidc.issuer"),
        ({"jwks_url": "ftp://x"}, "oidc.jwks_url"),
        ({"leeway": "30"}, "oidc.leeway"),
        ({"surprise": 1}, "oidc.surprise"),
    ],
)
def test_config_refuses(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(_oidc(**section), ENV)


def test_config_needs_issuer_and_audience() -> None:
    with pytest.raises(ConfigError, match=r"oidc\.audience"):
        parse_settings(BASE | {"oidc": {"issuer": "https://login.example.com"}}, ENV)
