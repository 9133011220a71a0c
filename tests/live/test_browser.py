"""A real browser: headless Chromium (Debian's chromium + chromedriver, via Selenium) runs a page on
an allowed origin that calls the service under gunicorn with fetch, and reports what it could read.

Proves what issue 10 asks of browsers: a cached 200 is never reused for another credential, a
typo'd path and gunicorn's own 431/414 are readable problems, a signed-in user's token reads its
aliases and is refused others, common fetch wrappers pass the preflight, and a page on another
origin reads nothing. Needs the Debian packages `chromium` and `chromium-driver`: skipped without
them, except in CI (CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from music_facade.auth import mint_key
from music_facade.sandbox import SandboxServer
from tests.support.browser import PageServer, chromium, webdriver
from tests.support.deploy_render import nginx_binary, render_nginx, running_nginx
from tests.support.helpers import live_service
from tests.support.idp import AUDIENCE, TestIdP, running_idp
from tests.support.programs import free_port, missing_program

pytestmark = pytest.mark.browser

# The page's one function: fetch, then report what a script can read of the answer.
PAGE = """<!doctype html><meta charset="utf-8"><title>music-facade browser test</title>
<script>
window.call = async (url, headers) => {
  try {
    const r = await fetch(url, {headers: headers || {}});
    const text = await r.text();
    let body = null;
    try { body = JSON.parse(text); } catch (e) {}
    return {
      status: r.status,
      code: body && !Array.isArray(body) ? (body.code || null) : null,
      items: body && body.items ? body.items.length : null,
      www: r.headers.get("WWW-Authenticate"),
      rid: r.headers.get("X-Request-ID"),
    };
  } catch (e) {
    return {error: String(e)};
  }
};
</script>"""


WEB_KEY, WEB_SHA = mint_key()
EDGE_KEY, EDGE_SHA = mint_key()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def call(driver: webdriver.Chrome, url: str, headers: dict[str, str] | None = None) -> Any:
    """Run the page's fetch in the browser and return what its script could read."""
    script = (
        "const done = arguments[arguments.length - 1]; call(arguments[0], arguments[1]).then(done);"
    )
    return driver.execute_async_script(script, url, headers or {})


def test_a_page_in_a_real_browser(
    browser: webdriver.Chrome, sandbox: SandboxServer, tmp_path: Path
) -> None:
    with running_idp() as idp, PageServer(PAGE) as page, PageServer(PAGE) as stranger:
        extra = f"""
[[clients]]
name = "web"
key_sha256 = "{WEB_SHA}"
users = ["studio"]

[[clients]]
name = "edge-app"
key_sha256 = "{EDGE_SHA}"
users = ["edge"]

[cors]
origins = ["{page.origin}"]

[oidc]
issuer = "{idp.issuer}"
audience = "{AUDIENCE}"
jwks_url = "{idp.jwks_url}"
algorithms = ["RS256", "ES256"]

[oidc.scopes]
"music-studio" = ["studio"]
"""
        with live_service(sandbox, tmp_path, extra) as service:
            browser.get(page.origin + "/")
            _check_the_page(browser, service.url, idp)
            browser.get(stranger.origin + "/")
            # Another origin: the browser lets its script read nothing, not even an error.
            for url in (service.url + "/music?user=studio", service.url + "/healthz"):
                assert "error" in call(browser, url, {"Authorization": f"Bearer {WEB_KEY}"})
            assert "error" in call(browser, service.url + "/healthz")


def _check_the_page(driver: webdriver.Chrome, base: str, idp: TestIdP) -> None:
    music = base + "/music?user=studio"
    web = {"Authorization": f"Bearer {WEB_KEY}"}

    # A 200 the browser's HTTP cache holds ...
    first = call(driver, music, web)
    assert (first["status"], first["items"] is not None) == (200, True), first
    # ... is not reused for no credential, nor for a key outside the scope.
    assert call(driver, music) | {"rid": None} == {
        "status": 401, "code": "credential_missing", "items": None,
        "www": 'Bearer realm="music"', "rid": None,
    }  # fmt: skip
    refused = call(driver, music, {"Authorization": f"Bearer {EDGE_KEY}"})
    assert (refused["status"], refused["code"]) == (403, "user_not_allowed"), refused
    # The right key again: revalidated (a 304 to the browser), a 200 with the page to the script.
    again = call(driver, music, web)
    assert (again["status"], again["items"] is not None) == (200, True), again
    # A fetch wrapper that adds Content-Type and Cache-Control to every GET still passes.
    wrapped = call(
        driver,
        music,
        web | {"Content-Type": "application/json", "Cache-Control": "no-cache", "traceparent":
               "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )  # fmt: skip
    assert wrapped["status"] == 200, wrapped

    # A typo'd path: the page reads the 404 problem, not a CORS failure.
    for path in ("/musics?user=studio", "/music/?user=studio"):
        typo = call(driver, base + path, web)
        assert (typo["status"], typo["code"]) == (404, "not_found"), (path, typo)
        assert typo["rid"], typo

    # gunicorn's own refusals are readable, request id included.
    too_large = call(driver, music, web | {"X-Request-ID": "r" * 9000})
    assert (too_large["status"], too_large["code"]) == (431, "request_header_fields_too_large")
    assert too_large["rid"], too_large
    # (Without custom headers: a preflight for that URL would be refused as 414 itself, and a
    # preflight that is not a 2xx fails the fetch before the request is sent.)
    too_long = call(driver, base + "/music?user=studio&cursor=" + "c" * 5000)
    assert (too_long["status"], too_long["code"]) == (414, "uri_too_long"), too_long

    # A signed-in user's token reads its aliases and is refused others.
    token = {"Authorization": "Bearer " + idp.token("alice", ["music-studio"])}
    assert call(driver, music, token)["status"] == 200
    edge = call(driver, base + "/music?user=edge", token)
    assert (edge["status"], edge["code"]) == (403, "user_not_allowed"), edge
    expired = call(driver, music, {"Authorization": "Bearer " + idp.token(lifetime=-300)})
    assert (expired["status"], expired["code"]) == (401, "credential_expired"), expired
    assert "invalid_token" in expired["www"]  # WWW-Authenticate is exposed


@pytest.mark.nginx
def test_a_page_reads_nginxs_own_problem_when_no_replica_answers(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    """deploy/nginx with no replica able to answer: a keyed fetch (so a preflight first) from
    an allowed origin reads the 503 problem and its request id, not "Failed to fetch"."""
    if nginx_binary() is None:
        missing_program("nginx", "nginx")
    with (
        PageServer(PAGE) as page,
        PageServer(PAGE) as stranger,
        socket.socket() as refusing,  # bound, never listening: every connection refused
    ):
        refusing.bind(("127.0.0.1", 0))
        listen = f"127.0.0.1:{free_port()}"
        replica = f"127.0.0.1:{refusing.getsockname()[1]}"
        rendered = render_nginx(tmp_path / "nginx", listen, [replica], cors_origins=[page.origin])
        with running_nginx(rendered, listen, tmp_path / "nginx.log"):
            base = f"http://{listen}"
            browser.get(page.origin + "/")
            keyed = call(
                browser, base + "/music?user=studio", {"Authorization": f"Bearer {WEB_KEY}"}
            )
            assert (keyed.get("status"), keyed.get("code")) == (503, "service_unavailable"), keyed
            assert keyed["rid"], keyed
            plain = call(browser, base + "/healthz")
            assert (plain.get("status"), plain.get("code")) == (503, "service_unavailable"), plain
            browser.get(stranger.origin + "/")
            assert "error" in call(browser, base + "/healthz")
