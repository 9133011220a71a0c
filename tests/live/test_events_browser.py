"""/events in a real browser: headless Chromium (Debian's chromium + chromedriver, via Selenium)
runs a page on another origin that asks the service under gunicorn for a ticket, with the key
in a header, and follows `new EventSource(url)` while the sandbox generates a track.

Needs the Debian packages `chromium` and `chromium-driver`: skipped without them, except in CI
(CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from music_facade.auth import mint_key
from music_facade.sandbox import SandboxServer
from tests.support.browser import PageServer, chromium, webdriver
from tests.support.helpers import live_service
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.live, pytest.mark.browser]

# follow(base, key): a ticket by POST with the key in a header, then EventSource on its url;
# every event (and the ticket request's outcome) lands in window.seen for the test to read.
PAGE = """<!doctype html><meta charset="utf-8"><title>music-facade events test</title>
<script>
window.seen = [];
window.follow = async (base, key) => {
  const r = await fetch(base + "/events/tickets", {
    method: "POST",
    headers: {Authorization: "Bearer " + key, "Content-Type": "application/json"},
    body: JSON.stringify({user: "studio", type: "song"}),
  });
  const ticket = await r.json();
  window.seen.push({kind: "ticket", status: r.status, url: ticket.url || null});
  if (r.status !== 201) return;
  const source = new EventSource(base + ticket.url);
  window.source = source;
  source.onopen = () => window.seen.push({kind: "open"});
  source.onerror = () => window.seen.push({kind: "error", state: source.readyState});
  for (const name of ["track.created", "track.progress", "track.completed"]) {
    source.addEventListener(name, (e) => {
      const data = JSON.parse(e.data);
      window.seen.push({kind: name, id: e.lastEventId, track: data.track.id});
    });
  }
};
</script>"""

EVENTS_CONFIG = """
[[clients]]
name = "web"
key_sha256 = "{digest}"
users = ["studio"]

[cors]
origins = ["{origin}"]

[mirror]
database = "sqlite:///{database}"
interval = 1
active_interval = 0.5
reconcile_every = 86400
max_calls_per_minute = 1000

[events]
heartbeat = 0.5
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver


def seen(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = driver.execute_script("return window.seen;")
    return found


def test_a_page_on_another_origin_follows_a_generating_track_with_a_ticket(
    browser: webdriver.Chrome, sandbox: SandboxServer, tmp_path: Path
) -> None:
    key, digest = mint_key()
    with PageServer(PAGE) as page:
        extra = EVENTS_CONFIG.format(
            digest=digest, origin=page.origin, database=tmp_path / "mirror.db"
        )
        with live_service(sandbox, tmp_path, extra) as server:
            wait_until(
                lambda: (
                    requests.get(server.url + "/readyz", timeout=5).json()["checks"]["mirror"]
                    == "ok"
                ),
                timeout=30,
            )
            browser.get(page.origin + "/")
            browser.execute_script("window.follow(arguments[0], arguments[1]);", server.url, key)
            wait_until(lambda: any(s["kind"] == "open" for s in seen(browser)), timeout=10)
            ticket = next(s for s in seen(browser) if s["kind"] == "ticket")
            assert ticket["status"] == 201
            assert ticket["url"].startswith("/events?ticket=")

            made = requests.post(
                sandbox.origin + "/_sandbox/accounts/1001/tracks",
                json={"type": "song", "title": "Harbour Lights Browser", "seconds": 3},
                timeout=5,
            )
            assert made.status_code == 201, made.text
            item = made.json()["id"]

            def mine() -> list[str]:
                return [s["kind"] for s in seen(browser) if s.get("track") == item]

            wait_until(lambda: "track.completed" in mine(), timeout=30)
            assert "track.progress" in mine()
            assert mine()[-1] == "track.completed"
            assert not any(s["kind"] == "error" for s in seen(browser))
            browser.execute_script("window.source.close();")
            # The page's ticket is spent: the same URL opens nothing now.
            again = requests.get(server.url + ticket["url"], timeout=5)
            assert again.status_code == 401
            assert again.json()["code"] == "invalid_ticket"
        log = (tmp_path / "gunicorn.log").read_text()
    assert ticket["url"].split("ticket=")[1].split("&")[0] not in log
