"""Headless Chromium for the browser tests: Debian's chromium and chromedriver, through Selenium
(no driver download). A module calls require_browser() first, at import."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.support.programs import missing_program

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# Quiet, headless and self-contained: no GPU, no background fetches, no first-run screens.
BASE_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def require_browser() -> None:
    """Skip the module (fail in CI) when chromium or its driver is not installed."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        missing_program("chromium with its driver", "chromium chromium-driver")


@contextmanager
def chromium(profile: Path, extra_args: Sequence[str] = ()) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with its profile in `profile`, quit on exit."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*BASE_ARGS, *extra_args, f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
