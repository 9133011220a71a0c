"""The sandbox's media in a real browser: headless Chromium shows a cover and plays the mp3 and
the wav of a track straight from the sandbox, from a page on another origin.

Needs the Debian packages `chromium` and `chromium-driver`: skipped without them, except in CI
(CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from music_facade.sandbox import SANDBOX_TOKEN, SandboxServer
from music_facade.sandbox.data import job_id
from tests.support.browser import MEDIA_FLAGS, PageServer, chromium, webdriver

pytestmark = pytest.mark.browser

DONE = "6dc9a08fa3e7d6a"  # account 1001's third song: completed

# What a page's script can tell of an <img> and an <audio> it was given.
PAGE = """<!doctype html><meta charset="utf-8"><title>sandbox media</title>
<script>
window.cover = (url) => new Promise((resolve) => {
  const img = new Image();
  img.onload = () => resolve({width: img.naturalWidth, height: img.naturalHeight});
  img.onerror = () => resolve({error: "the image did not load"});
  img.src = url;
  document.body.appendChild(img);
});
window.play = (url) => new Promise((resolve) => {
  const audio = new Audio();
  const report = (extra) => resolve(Object.assign({
    time: audio.currentTime, duration: audio.duration,
    code: audio.error ? audio.error.code : null,
  }, extra));
  audio.addEventListener("error", () => report({error: "the audio did not load"}));
  audio.addEventListener("timeupdate", () => { if (audio.currentTime > 0.5) report({}); });
  setTimeout(() => report({error: "timed out"}), 10000);
  audio.src = url;
  document.body.appendChild(audio);
  audio.play().catch((e) => report({error: String(e)}));
});
</script><body></body>"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    with chromium(tmp_path / "chromium-profile", *MEDIA_FLAGS) as driver:
        yield driver


def run(driver: webdriver.Chrome, function: str, url: str) -> Any:
    script = f"const done = arguments[arguments.length - 1]; {function}(arguments[0]).then(done);"
    return driver.execute_async_script(script, url)


def link(sandbox: SandboxServer, file_format: str) -> str:
    resp = requests.get(
        f"{sandbox.base_url}/music/download/{job_id('1001', DONE)}",
        params={"file_format": file_format},
        headers={"Authorization": f"Bearer {SANDBOX_TOKEN}"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    url: str = resp.json()["url"]
    return url


def test_a_cover_shows_and_both_audio_files_play(
    browser: webdriver.Chrome, sandbox: SandboxServer
) -> None:
    record = requests.get(
        f"{sandbox.base_url}/music/{job_id('1001', DONE)}",
        headers={"Authorization": f"Bearer {SANDBOX_TOKEN}"},
        timeout=10,
    ).json()
    with PageServer(PAGE) as page:
        browser.get(page.origin + "/")
        shown = run(browser, "cover", record["cover"])
        assert shown == {"width": 256, "height": 256}, shown
        for file_format in ("mp3", "wav"):
            played = run(browser, "play", link(sandbox, file_format))
            assert "error" not in played, (file_format, played)
            assert played["time"] > 0.5, (file_format, played)
            assert 2 <= played["duration"] <= 4.5, (file_format, played)
