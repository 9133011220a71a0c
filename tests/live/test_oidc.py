"""Identity-provider tokens under gunicorn: a dripping JWKS holds requests one deadline at most."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from music_facade.auth import oidc
from music_facade.sandbox import SandboxServer
from tests.support.helpers import live_service
from tests.support.idp import AUDIENCE, TestIdP, running_idp
from tests.support.keys import bearer


@pytest.fixture
def idp() -> Iterator[TestIdP]:
    with running_idp() as server:
        yield server


def test_under_gunicorn_a_dripping_idp_holds_requests_one_deadline_at_most(
    sandbox: SandboxServer, idp: TestIdP, tmp_path: Path
) -> None:
    # The production worker (gevent), the real 5 s deadline: the watchdog is a greenlet there.
    extra = f"""
[oidc]
issuer = "{idp.issuer}"
audience = "{AUDIENCE}"
jwks_url = "{idp.jwks_url}"

[oidc.scopes]
"music-studio" = ["studio"]
"""
    idp.drip, idp.drip_from = 0.2, "body"
    token = idp.token(groups=["music-studio"])
    with live_service(sandbox, tmp_path, extra) as server:

        def get(_: int) -> tuple[int, float]:
            started = time.monotonic()
            resp = requests.get(
                server.url + "/music?user=studio", headers=bearer(token), timeout=30
            )
            return resp.status_code, time.monotonic() - started

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(get, range(4)))
    assert [status for status, _ in answers] == [503] * 4
    assert max(seconds for _, seconds in answers) < oidc.FETCH_DEADLINE + 1.5
    assert idp.jwks_fetches == 1
