"""Schemathesis against the live service: every operation in openapi.yaml, valid and invalid input.

The service runs under gunicorn (as in test_e2e.py) against the sandbox upstream, with one
client key (minted here, scope `studio`), a rate limit no run can reach, and one CORS origin.
Schemathesis generates requests from openapi.yaml for every operation (GET, HEAD and OPTIONS
of each path) in its examples, coverage and fuzzing phases, in positive and negative mode, and
sends them with the key as the bearer token. Every response must pass all of schemathesis's
checks (no 5xx, documented status, content type, headers and body; invalid input refused,
valid input accepted; undocumented methods answered 405 with `Allow`) and the project's own,
stricter contract checker (tests/support/contract.py).

Runs are bounded and reproducible: a fixed number of examples per operation, derandomized
generation and no example database.

A failure names the check and ends with a curl command that reproduces it (the key shown as
`$MUSIC_KEY`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from schemathesis import Case
from schemathesis.core.transport import Response

from music_facade.auth import mint_key
from music_facade.sandbox import SandboxServer
from tests.support import contract
from tests.support.helpers import live_service

# The service under gunicorn, driven over HTTP.
pytestmark = pytest.mark.live

ORIGIN = "https://app.example.com"

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "mode": "all",  # positive and negative
            # Generated cases per operation, on top of the spec's examples and the coverage
            # phase's fixed boundary cases (a whole run takes about 10 s).
            "max-examples": 50,
            # Hypothesis' derandomize: the seed comes from the test itself, so every run (and
            # CI) sends exactly the same requests.
            "deterministic": True,
            "database": "none",  # nothing remembered between runs
            # The key is sent explicitly below; generated Authorization values add nothing.
            "with-security-parameters": False,
        },
        "checks": {
            # Valid-looking requests that the service may still refuse. `user` is free text in
            # the spec (the aliases are configuration, not contract), so a generated alias is
            # almost never configured: 400 `unknown_user`; leaving `user` out is 400
            # `invalid_query` (this configuration has two aliases and no default); a generated
            # `cursor` is well-formed but was never issued by the upstream: 400
            # `upstream_rejected`; and an alias outside the key's scope is 403
            # `user_not_allowed`. Anything else (401 with a valid key, 429, 5xx) still fails.
            "positive_data_acceptance": {"expected-statuses": ["2xx", "304", "400", "403"]},
            # Invalid parameters (sent with a valid key) must be refused as the service
            # documents: `400 invalid_query`, or, for an alias outside the key's scope
            # (configured or not: a key holder must not learn which aliases exist), `403
            # user_not_allowed`, which is checked before the alias is looked up.
            "negative_data_rejection": {"expected-statuses": ["400", "403"]},
        },
        "operations": [
            {
                # GET / sends a browser (Accept preferring text/html) to /docs: a 302 is an
                # answer there, as documented.
                "include-path-regex": "^/$",
                "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "302"]}},
            },
            {
                # A track id is the upstream's opaque itemId: a well-formed one the generator
                # made up is 404 `track_not_found`; a track still generating has no audio yet
                # (409 `track_not_ready`); without `Accept: application/json` the link is a 302.
                # A malformed id is 400 `invalid_query` for GET and HEAD; for OPTIONS it names
                # no route: 404.
                "include-path-regex": "^/music/\\{id\\}",
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "302", "304", "400", "403", "404", "409"]
                    },
                    "negative_data_rejection": {"expected-statuses": ["400", "403", "404"]},
                },
            },
            {
                # A malformed id names no route, so its OPTIONS is a preflight for another path:
                # from the configured origin the any-path answer (200, no Allow;
                # x-preflight-any-path, tested in test_cors), without it 404 (tested in
                # test_track_audio_library). Only valid ids are this operation's cases.
                "include-operation-id-regex": "^preflightTrack(Audio)?$",
                "generation": {"mode": "positive"},
            },
            {
                # A `ticket` is a single-use secret the service made: one the generator made
                # up (or one sent with a key) is `401 invalid_ticket`, as documented.
                "include-path-regex": "^/events$",
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "304", "400", "401", "403"]
                    },
                    "negative_data_rejection": {"expected-statuses": ["400", "401", "403"]},
                },
            },
            {
                # GET /events answers a valid request with a stream that never ends by itself:
                # its refusals, HEAD and OPTIONS are generated here, the stream itself is read
                # by tests/integration/test_events.py and tests/live/test_events_live.py.
                "include-operation-id": "streamEvents",
                "enabled": False,
            },
        ],
    }
)
schema = schemathesis.openapi.from_path(contract.SPEC_PATH, config=CONFIG)


@dataclass(frozen=True)
class LiveApi:
    """The running service: where it is, and the headers every generated request carries."""

    url: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


EXTRA_CONFIG = """
[[clients]]
name = "schemathesis"
key_sha256 = "{key_sha256}"
users = ["studio"]
rate_limit = "100000/minute"   # never reached: a 429 would be a finding, not noise

[limits]
default = "100000/minute"

[cors]
origins = ["{origin}"]

# The whole contract, /tracks and /changes included: a mirror on SQLite.
[mirror]
database = "sqlite:///{database}"
"""


@pytest.fixture(scope="module")
def api(
    sandbox_server: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveApi]:
    sandbox_server.state.reset()  # no faults left armed by other tests
    key, digest = mint_key()
    tmp = tmp_path_factory.mktemp("schemathesis")
    extra = EXTRA_CONFIG.format(key_sha256=digest, origin=ORIGIN, database=tmp / "mirror.db")
    with live_service(sandbox_server, tmp, extra) as server:
        yield LiveApi(server.url, key)
    sandbox_server.state.reset()


def _reproduce(case: Case[Any], api: LiveApi) -> str:
    curl = case.as_curl_command(headers=api.headers)
    return curl.replace(api.url, "$MUSIC_URL").replace(api.key, "$MUSIC_KEY")


def _check_contract(case: Case[Any], response: Response, api: LiveApi) -> None:
    """tests/support/contract.py's checks, which are stricter than schemathesis's in places."""
    headers = {name: ", ".join(values) for name, values in response.headers.items()}
    try:
        contract.check_response(
            case.method, case.formatted_path, response.status_code, headers, response.content
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n\nReproduce with:\n  {_reproduce(case, api)}") from None


@schema.parametrize()
def test_openapi_contract_holds_for_generated_requests(case: Case[Any], api: LiveApi) -> None:
    response = case.call_and_validate(base_url=api.url, headers=api.headers, timeout=10)
    _check_contract(case, response, api)
