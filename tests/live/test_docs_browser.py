"""/docs in a real browser (headless Chromium via Selenium, Debian's chromium + chromedriver):
"Try it out" starts with every optional input empty, and the HEAD/OPTIONS tag is last and closed.

Swagger UI 5 fills an input from the parameter's `example` or `examples` or the schema's
`example`, not from the schema's `examples` (where openapi.yaml keeps them): this is the proof.
Skipped without the browser, except in CI (CI=true), where that is a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from music_facade.sandbox import SandboxServer
from tests.support.browser import chromium, webdriver
from tests.support.helpers import live_service
from tests.support.waiting import wait_until

pytestmark = pytest.mark.browser

# Every input of GET /music's "Try it out", by (location, name). All optional.
MUSIC_INPUTS = [
    ("query", "user"),
    ("query", "cursor"),
    ("header", "If-None-Match"),
    ("header", "X-Request-ID"),
    ("header", "traceparent"),
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    with chromium(profile, "--window-size=1280,2000") as driver:
        yield driver


@pytest.fixture(scope="module")
def docs_url(
    sandbox_server: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with live_service(sandbox_server, tmp_path_factory.mktemp("docs")) as server:
        yield server.url


def _input_value(driver: webdriver.Chrome, location: str, name: str) -> str:
    """The value of the "Try it out" input (or select) for one parameter of the open operation."""
    row = driver.find_element(
        By.CSS_SELECTOR, f'tr[data-param-name="{name}"][data-param-in="{location}"]'
    )
    field = row.find_element(By.CSS_SELECTOR, "input, select")
    value: str = driver.execute_script("return arguments[0].value;", field)
    return value


def test_try_it_out_starts_empty_and_variants_are_last_and_closed(
    browser: webdriver.Chrome, docs_url: str, tmp_path: Path
) -> None:
    # A browser asking for / is sent to the docs page.
    browser.get(f"{docs_url}/")
    try:
        wait_until(lambda: bool(browser.find_elements(By.ID, "operations-music-listMusic")), 20)
        assert browser.current_url.split("#")[0] == f"{docs_url}/docs"
        _check_the_page(browser)
    finally:
        browser.save_screenshot(str(tmp_path / "docs.png"))  # to look at when it failed


def _check_the_page(driver: webdriver.Chrome) -> None:
    tags = [
        h.get_attribute("data-tag") for h in driver.find_elements(By.CSS_SELECTOR, "h3.opblock-tag")
    ]
    assert tags[0] == "music", tags
    assert tags[-1] == "HEAD and OPTIONS", tags
    variants = driver.find_element(By.CSS_SELECTOR, 'h3.opblock-tag[data-tag="HEAD and OPTIONS"]')
    # Closed once the document is rendered: none of its operations is on the page.
    wait_until(lambda: variants.get_attribute("data-is-open") == "false", 10)
    assert not driver.find_elements(By.CSS_SELECTOR, '[id^="operations-HEAD"]')
    assert driver.find_elements(By.ID, "operations-meta-getIndex")

    block = driver.find_element(By.ID, "operations-music-listMusic")
    block.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    wait_until(lambda: bool(block.find_elements(By.CSS_SELECTOR, ".try-out__btn")), 10)
    block.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    cursor = 'tr[data-param-name="cursor"] input'
    wait_until(lambda: bool(block.find_elements(By.CSS_SELECTOR, cursor)), 10)
    values = {name: _input_value(driver, where, name) for where, name in MUSIC_INPUTS}
    assert values == dict.fromkeys(values, ""), values
    # `type` shows its default: the service assumes it when absent, so sending it changes nothing.
    assert _input_value(driver, "query", "type") == "song"
