"""Headless Chromium for the browser tests (Debian's chromium + chromedriver, via Selenium), and
a page of a test's own served from an origin of its own.

Import it only from a module marked `browser`: importing skips the module when the browser is
not installed (a failure in CI, which must install it).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.programs import missing_program

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    missing_program("chromium with its driver", "chromium chromium-driver")

from selenium import webdriver as webdriver  # noqa: E402 - only once the browser is there
from selenium.webdriver.chrome.service import Service  # noqa: E402

MEDIA_FLAGS = ("--autoplay-policy=no-user-gesture-required", "--mute-audio")
"""For a page that plays audio with no user gesture, silently."""


@contextmanager
def chromium(profile: Path, *flags: str, script_timeout: float = 20) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with its profile in `profile` (a temporary directory), plus `flags`."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *flags,
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(script_timeout)
    try:
        yield driver
    finally:
        driver.quit()


class PageServer:
    """Serves one HTML page at / on a random loopback port: a browser origin of its own."""

    def __init__(self, page: str) -> None:
        body = page.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
