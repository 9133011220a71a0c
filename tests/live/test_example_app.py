"""The example web app (examples/web) in a real browser, served by the real `music-facade demo`:
headless Chromium (Debian's chromium + chromedriver, via Selenium) signs in with the demo's key,
sees covers, searches, plays a track, watches a track generate, and reads a 401 as a message.

The app's origin is the demo's --app-port, the service another port: every call is a real
cross-origin fetch, so the page working at all proves CORS. Screenshots of each step go to a
temporary directory, printed at the start (pytest shows it when the test fails).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By

from tests.support.browser import MEDIA_FLAGS, chromium, webdriver
from tests.support.demo import Demo, running_demo
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.live, pytest.mark.browser]

# Merged over the demo's configuration (--config): a mirror and a stream quick enough that a
# track generating for a few seconds shows several steps of progress.
FAST = """
[mirror]
interval = 1
active_interval = 0.5
max_calls_per_minute = 1000

[events]
heartbeat = 0.5
"""


class Screenshots:
    """Numbered screenshots of the page, one per step, in one directory."""

    def __init__(self, driver: webdriver.Chrome, directory: Path) -> None:
        self.driver = driver
        self.directory = directory
        self.count = 0

    def take(self, step: str) -> None:
        self.count += 1
        self.driver.save_screenshot(str(self.directory / f"{self.count:02d}-{step}.png"))


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    fast = tmp_path / "fast.toml"
    fast.write_text(FAST)
    argv = ["--port", "0", "--app-port", "0", "--config", str(fast)]
    with running_demo(argv, tmp_path) as running:
        yield running


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    with chromium(tmp_path / "chromium-profile", *MEDIA_FLAGS) as driver:
        driver.set_window_size(1100, 1400)
        yield driver


@pytest.fixture
def shots(browser: webdriver.Chrome, tmp_path: Path) -> Screenshots:
    # Under tmp_path: pytest keeps the last three runs' directories to be looked at, and removes
    # older ones, so runs never pile screenshots up.
    directory = tmp_path / "screenshots"
    directory.mkdir()
    print(f"screenshots of the example app: {directory}")
    return Screenshots(browser, directory)


def js(driver: webdriver.Chrome, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def text(driver: webdriver.Chrome, selector: str) -> str:
    found: str = js(
        driver, "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
        selector,
    )  # fmt: skip
    return found


def total(driver: webdriver.Chrome) -> int:
    """The number of matches the page says /tracks found."""
    summary = text(driver, "#summary").split()
    return int(summary[0]) if summary else -1


def sign_in(driver: webdriver.Chrome, key: str) -> None:
    field = driver.find_element(By.ID, "key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()


def until(condition: Callable[[], bool], timeout: float, shots: Screenshots, step: str) -> None:
    """wait_until, with a screenshot of the page as it was when it gave up."""
    try:
        wait_until(condition, timeout)
    except AssertionError:
        shots.take(f"{step}-timed-out")
        raise


def test_the_example_app_in_a_real_browser(
    demo: Demo, browser: webdriver.Chrome, shots: Screenshots
) -> None:
    assert demo.app_url != demo.url  # two origins: every call the page makes is cross-origin
    wait_until(
        lambda: requests.get(demo.url + "/readyz", timeout=5).json()["checks"]["mirror"] == "ok",
        timeout=30,
    )
    browser.get(demo.app_url + "/")
    js(browser, "window.notReloaded = true;")
    shots.take("signed-out")

    # A wrong key: the 401 problem, as a sentence with its title.
    sign_in(browser, "mf_not-a-key-this-demo-minted")
    until(lambda: "401" in text(browser, "#message"), 10, shots, "wrong-key")
    assert "The credential is not valid" in text(browser, "#message")
    assert js(browser, "return document.getElementById('library').hidden;")
    shots.take("wrong-key")

    # The demo's key: the library, from another origin (CORS), with covers.
    sign_in(browser, demo.key)
    until(lambda: total(browser) > 12, 15, shots, "library")
    assert text(browser, "#message") == ""
    # The studio account's covers (the edge account's records are broken on purpose).
    covers = "#tracks .track[data-user=studio] img.cover"
    until(
        lambda: js(
            browser,
            "const imgs = [...document.querySelectorAll(arguments[0])];"
            "return imgs.length >= 5 && imgs.every(i => i.complete && i.naturalWidth > 0);",
            covers,
        ),
        15,
        shots,
        "covers",
    )
    shots.take("library")

    # Paging with next_cursor: the next page shows other tracks.
    def shown() -> list[str]:
        ids: list[str] = js(browser, "return [...document.querySelectorAll('#tracks .track')]"
                                     ".map(t => t.dataset.id);")  # fmt: skip
        return ids

    first_page = shown()
    browser.find_element(By.ID, "next-page").click()
    until(lambda: bool(shown()) and not set(shown()) & set(first_page), 10, shots, "next-page")
    shots.take("next-page")
    browser.find_element(By.ID, "first-page").click()
    until(lambda: shown() == first_page, 10, shots, "first-page")

    # Play: the JSON audio link into the <audio> element, and time advances.
    browser.find_element(By.CSS_SELECTOR, "#tracks .track[data-status=completed] .play").click()
    until(
        lambda: js(browser, "const p = document.getElementById('player');"
                            "return !p.paused && p.currentTime > 0.5;"),
        15,
        shots,
        "play",
    )  # fmt: skip
    assert text(browser, "#now-playing").startswith("Playing: ")
    shots.take("playing")

    # A track still generating: the 409 problem, as a sentence.
    browser.find_element(By.CSS_SELECTOR, "#tracks .track[data-status=generating] .play").click()
    until(lambda: "409" in text(browser, "#message"), 10, shots, "not-ready")
    assert "The track is not completed" in text(browser, "#message")
    shots.take("not-ready")

    # A search narrows the list.
    everything = total(browser)
    browser.find_element(By.ID, "q").send_keys("neon")
    until(lambda: 0 < total(browser) < everything, 10, shots, "search")
    titles = js(browser, "return [...document.querySelectorAll('#tracks .track')].length;")
    assert titles == total(browser)
    shots.take("search")

    # A track started in the sandbox: its progress rises on the page, then it completes.
    control, _ = demo.add_track
    made = requests.post(
        control, json={"type": "song", "title": "Browser Sunrise", "seconds": 6}, timeout=5
    )
    assert made.status_code == 201, made.text
    entry = f"#live-list .track[data-id='{made.json()['id']}'] .status"
    seen: list[str] = []

    def completed() -> bool:
        now = text(browser, entry)
        if now and now not in seen:
            seen.append(now)
        return now == "completed"

    until(completed, 30, shots, "generating")
    shots.take("completed")
    progress = [int(s.split()[1].rstrip("%")) for s in seen if s.startswith("generating ")]
    assert len(progress) >= 2, seen
    assert progress == sorted(progress), seen
    assert seen[-1] == "completed"
    assert js(browser, "return window.notReloaded === true;")
