"""The example web app (examples/web) in a real browser, served by the real `music-facade demo`:
headless Chromium (Debian's chromium + chromedriver, via Selenium) signs in with the demo's key,
sees covers, searches, plays a track, watches a track generate; reads each problem the service
really answers (401 wrong and revoked keys, 403, 409, 429 with its wait, 503) as a message; and
follows the live stream across a restart of the service's workers, missing nothing.

The app's origin is the demo's --app-port, the service another port: every call is a real
cross-origin fetch, so the page working at all proves CORS. One demo and one browser serve every
test here (module scope); each test opens the page afresh. Screenshots of each step go under
pytest's temporary directory, printed at the start (pytest shows it when a test fails).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from music_facade.auth import mint_key
from tests.support.browser import MEDIA_FLAGS, chromium, webdriver
from tests.support.demo import Demo, running_demo
from tests.support.keys import bearer
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

# Two clients of the operator's beside the demo's own: one that may read the studio account
# only (403 for any other), and one with a rate limit a few clicks exhaust (429).
STUDIO_ONLY_KEY, STUDIO_ONLY_SHA = mint_key()
TIGHT_KEY, TIGHT_SHA = mint_key()
STUDIO_ONLY = f"""
[[clients]]
name = "studio-only"
key_sha256 = "{STUDIO_ONLY_SHA}"
users = ["studio"]
"""
TIGHT = f"""
[[clients]]
name = "tight"
key_sha256 = "{TIGHT_SHA}"
users = ["*"]
rate_limit = "5/minute"
"""

# Recorded for the test before the page's own scripts run: every EventSource the page opens,
# its URL (the ticket and since=) and every event it receives. The page's code is unchanged:
# it still gets the browser's real EventSource, only watched.
STREAM_RECORDER = """
window.streams = [];
const RealEventSource = window.EventSource;
window.EventSource = class extends RealEventSource {
  constructor(url, init) {
    super(url, init);
    const seen = { url: String(url), events: [] };
    window.streams.push(seen);
    for (const name of ["track.created", "track.progress", "track.completed",
                        "track.failed", "track.updated", "track.deleted"]) {
      this.addEventListener(name, (e) => {
        seen.events.push({ name, id: e.lastEventId, data: e.data });
      });
    }
  }
};
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


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Under pytest's base temporary directory: it keeps the last three runs' to be looked at, and
    # removes older ones, so runs never pile screenshots up.
    return tmp_path_factory.mktemp("example-app")


@pytest.fixture(scope="module")
def settings(tmp: Path) -> Path:
    """The --config file; a test may rewrite it and reload the demo."""
    path = tmp / "mine.toml"
    path.write_text(FAST + STUDIO_ONLY + TIGHT)
    return path


@pytest.fixture(scope="module")
def demo(tmp: Path, settings: Path) -> Iterator[Demo]:
    argv = ["--port", "0", "--app-port", "0", "--config", str(settings)]
    with running_demo(argv, tmp) as running:
        assert running.app_url != running.url  # two origins: every call is cross-origin
        wait_until(
            lambda: (
                requests.get(running.url + "/readyz", timeout=5).json()["checks"]["mirror"] == "ok"
            ),
            timeout=30,
        )
        yield running


@pytest.fixture(scope="module")
def browser(tmp: Path) -> Iterator[webdriver.Chrome]:
    with chromium(tmp / "chromium-profile", *MEDIA_FLAGS) as driver:
        driver.set_window_size(1100, 1400)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": STREAM_RECORDER})
        yield driver


@pytest.fixture(scope="module")
def shots(browser: webdriver.Chrome, tmp: Path) -> Screenshots:
    directory = tmp / "screenshots"
    directory.mkdir()
    print(f"screenshots of the example app: {directory}")
    return Screenshots(browser, directory)


@pytest.fixture
def page(demo: Demo, browser: webdriver.Chrome) -> webdriver.Chrome:
    """The app, freshly loaded and signed out (the tab's sessionStorage keeps a key otherwise)."""
    # A page of the app's origin that runs none of its scripts (the app itself would sign in
    # again with the key it kept, while it is being cleared).
    browser.get(demo.app_url + "/README.md")
    js(browser, "sessionStorage.clear();")
    browser.get(demo.app_url + "/")
    js(browser, "window.notReloaded = true;")
    return browser


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


def cards(driver: webdriver.Chrome, attribute: str) -> list[str]:
    """One data-* attribute (id, user, status) of every card in the library's list."""
    found: list[str] = js(
        driver,
        "return [...document.querySelectorAll('#tracks .track')]"
        ".map(t => t.dataset[arguments[0]]);",
        attribute,
    )
    return found


def only_completed_studio_tracks(driver: webdriver.Chrome) -> bool:
    """The list shows the filter user=studio, status=completed (and not an earlier answer)."""
    return set(cards(driver, "user")) == {"studio"} and set(cards(driver, "status")) == {
        "completed"
    }


def hidden(driver: webdriver.Chrome, element_id: str) -> bool:
    found: bool = js(driver, "return document.getElementById(arguments[0]).hidden;", element_id)
    return found


def sign_in(driver: webdriver.Chrome, key: str) -> None:
    field = driver.find_element(By.ID, "key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()


def signed_in(driver: webdriver.Chrome) -> bool:
    """The library is shown (the summary alone may be left from an earlier sign-in)."""
    return not hidden(driver, "library") and total(driver) > 0


def sign_out(driver: webdriver.Chrome) -> None:
    driver.find_element(By.ID, "sign-out").click()
    wait_until(lambda: not hidden(driver, "sign-in"), 5)


def filter_by(driver: webdriver.Chrome, element_id: str, value: str) -> None:
    """Type into a filter field and leave it (its change event), as a user does."""
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(value)
    js(driver, "arguments[0].dispatchEvent(new Event('change'));", field)


def until(condition: Callable[[], bool], timeout: float, shots: Screenshots, step: str) -> None:
    """wait_until, with a screenshot of the page as it was when it gave up."""
    try:
        wait_until(condition, timeout)
    except AssertionError:
        shots.take(f"{step}-timed-out")
        raise


def reload_demo(demo: Demo) -> None:
    """The demo's reload (SIGHUP): it merges --config again and gunicorn replaces its workers,
    whose open /events streams end."""
    os.kill(demo.proc.pid, signal.SIGHUP)


def sandbox_origin(demo: Demo) -> str:
    control, _ = demo.add_track
    return control.split("/_sandbox/", 1)[0]


def test_the_example_app_in_a_real_browser(
    demo: Demo, page: webdriver.Chrome, shots: Screenshots
) -> None:
    browser = page
    shots.take("signed-out")

    # A wrong key: the 401 problem, as a sentence with its title.
    sign_in(browser, "mf_not-a-key-this-demo-minted")
    until(lambda: "401" in text(browser, "#message"), 10, shots, "wrong-key")
    assert "The credential is not valid" in text(browser, "#message")
    assert hidden(browser, "library")
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
        return cards(browser, "id")

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


def test_each_problem_the_service_answers_reads_as_a_message(
    demo: Demo, settings: Path, page: webdriver.Chrome, shots: Screenshots
) -> None:
    browser = page

    def message() -> str:
        return text(browser, "#message")

    # 403: a key whose client may read the studio account only, asking for another account.
    sign_in(browser, STUDIO_ONLY_KEY)
    until(lambda: signed_in(browser), 15, shots, "studio-only")
    assert set(cards(browser, "user")) == {"studio"}  # its scope, without asking
    filter_by(browser, "user", "edge")
    until(lambda: "403" in message(), 10, shots, "forbidden")
    refused = requests.get(
        demo.url + "/tracks", params={"user": "edge"}, headers=bearer(STUDIO_ONLY_KEY), timeout=5
    )
    assert refused.status_code == 403
    assert message().startswith("Not allowed (403): " + refused.json()["title"])
    shots.take("forbidden")
    filter_by(browser, "user", "studio")  # its own account again: the message goes
    until(lambda: message() == "" and total(browser) > 0, 10, shots, "own-account")

    # 401 for a key that worked: the operator takes its client out of the configuration and
    # reloads. The page finds out at its next call (its live stream reconnecting to the new
    # workers) and is back at the sign-in form.
    settings.write_text(FAST + TIGHT)
    reload_demo(demo)
    wait_until(
        lambda: (
            requests.get(
                demo.url + "/tracks", headers=bearer(STUDIO_ONLY_KEY), timeout=5
            ).status_code
            == 401
        ),
        20,
    )
    until(lambda: "401" in message(), 15, shots, "revoked")
    assert message().startswith("Not signed in (401): ")
    assert not hidden(browser, "sign-in")
    assert hidden(browser, "library")
    shots.take("revoked")

    # 429 with its wait: a client allowed 5 requests a minute, searching until it is refused.
    sign_in(browser, TIGHT_KEY)
    until(lambda: signed_in(browser), 15, shots, "tight")
    search = browser.find_element(By.CSS_SELECTOR, "#search button[type=submit]")
    searched: list[float] = []

    def refused_for_now() -> bool:
        if "429" in message():
            return True
        if not searched or time.monotonic() - searched[-1] > 0.25:  # a user's pace, not a flood
            search.click()
            searched.append(time.monotonic())
        return False

    until(refused_for_now, 15, shots, "rate-limited")
    limited = requests.get(demo.url + "/tracks", headers=bearer(TIGHT_KEY), timeout=5)
    assert limited.status_code == 429
    said = re.fullmatch(r"Slow down \(429\): (.+)\. Try again in (\d+) s\.", message())
    assert said, message()
    assert said[1].startswith(limited.json()["title"])
    assert 1 <= int(said[2]) <= 60
    shots.take("rate-limited")
    sign_out(browser)

    # 503 with its wait: the upstream rate-limits the studio account (the sandbox's fault), so
    # the service answers the page's Play with 503 upstream_rate_limited and Retry-After.
    sign_in(browser, demo.key)
    until(lambda: signed_in(browser), 15, shots, "demo-key")
    filter_by(browser, "user", "studio")
    Select(browser.find_element(By.ID, "status")).select_by_value("completed")
    until(lambda: message() == "" and only_completed_studio_tracks(browser), 10, shots, "completed")
    sandbox = sandbox_origin(demo)
    downloaded = {
        call["path"].rsplit("-job:", 1)[-1]
        for call in requests.get(sandbox + "/_sandbox/calls", timeout=5).json()["calls"]
        if "/download/" in call["path"]
    }
    # Tracks whose audio link the service has never asked for, so none is cached.
    fresh = [track for track in cards(browser, "id") if track not in downloaded]
    assert fresh
    armed = requests.put(
        sandbox + "/_sandbox/faults/1001",
        json={"fault": {"kind": "rate_limited", "seconds": 3}},
        timeout=5,
    )
    assert armed.status_code == 200, armed.text
    try:
        browser.find_element(By.CSS_SELECTOR, f"#tracks .track[data-id='{fresh[0]}'] .play").click()
        until(lambda: "503" in message(), 10, shots, "unavailable")
    finally:
        requests.delete(sandbox + "/_sandbox/faults/1001", timeout=5)
    said = re.fullmatch(
        r"The service is unavailable right now \(503\): (.+)\. Try again in (\d+) s\.", message()
    )
    assert said, message()
    assert 1 <= int(said[2]) <= 3
    shots.take("unavailable")


@dataclass(frozen=True)
class OneTrack:
    """A signed-in page, live, listing the studio's completed tracks; one of them to change."""

    state: Callable[[], str]  # the live stream's state as the page shows it
    track: str
    title: str  # the CSS selector of its card's title
    rename: Callable[[str], None]  # retitle it in the sandbox (the mirror's sync sees it)


def live_on_one_track(
    demo: Demo, browser: webdriver.Chrome, shots: Screenshots, step: str
) -> OneTrack:
    """Sign in, wait for the stream, filter to the studio's completed tracks, take the first."""
    sign_in(browser, demo.key)

    def state() -> str:
        found: str = js(browser, "return document.getElementById('live-state').dataset.state;")
        return found

    until(lambda: state() == "live", 15, shots, f"{step}live")
    filter_by(browser, "user", "studio")
    Select(browser.find_element(By.ID, "status")).select_by_value("completed")
    until(lambda: only_completed_studio_tracks(browser), 10, shots, f"{step}studio")
    track = cards(browser, "id")[0]
    edit = f"{sandbox_origin(demo)}/_sandbox/accounts/1001/tracks/{track}"

    def rename(new: str) -> None:
        done = requests.patch(edit, json={"title": new}, timeout=5)
        assert done.status_code == 200, done.text

    return OneTrack(state, track, f"#tracks .track[data-id='{track}'] .title", rename)


@contextmanager
def dropped_and_offline(
    demo: Demo, browser: webdriver.Chrome, one: OneTrack, shots: Screenshots, step: str
) -> Iterator[None]:
    """The demo's workers restart and the page's stream drops; the browser goes offline before
    the page's retry (RECONNECT_MS, 3 s) comes due, so it cannot come back until the block
    ends."""
    browser.execute_cdp_cmd("Network.enable", {})
    reload_demo(demo)
    until(lambda: one.state() == "reconnecting", 15, shots, f"{step}dropped")
    conditions = {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", conditions)
    try:
        yield
    finally:
        online = {**conditions, "offline": False}
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", online)


def logged(demo: Demo, since: str, track: str, title: str) -> Callable[[], bool]:
    """Whether /changes after `since` holds the track retitled `title`."""

    def found() -> bool:
        changes = requests.get(
            demo.url + "/changes", params={"since": since}, headers=demo.auth, timeout=5
        ).json()["changes"]
        return any(c["id"] == track and c["track"]["title"] == title for c in changes)

    return found


def test_the_live_stream_resumes_after_a_drop_and_misses_nothing(
    demo: Demo, page: webdriver.Chrome, shots: Screenshots
) -> None:
    """The service's workers restart (the demo's reload) while the browser is offline, and a
    track changes meanwhile: once back, the page asks for a new ticket, resumes with since= the
    last event it saw, and the change arrives exactly once."""
    browser = page
    one = live_on_one_track(demo, browser, shots, "")
    state, track, title, rename = one.state, one.track, one.title, one.rename
    # A change while live: the card follows it, and the page now has a position to resume from.
    before = f"Before {uuid.uuid4().hex[:8]}"
    rename(before)
    until(lambda: text(browser, title) == before, 15, shots, "live-change")
    last = js(browser, "const s = window.streams; return s[s.length - 1].events.at(-1).id;")
    opened = js(browser, "return window.streams.length;")

    with dropped_and_offline(demo, browser, one, shots, ""):
        assert js(browser, "return window.streams.length;") == opened  # not back before that
        away = f"While away {uuid.uuid4().hex[:8]}"
        rename(away)
        wait_until(logged(demo, last, track, away), 20)  # in the log while the page is away
        assert state() == "reconnecting"
        assert text(browser, title) == before
        shots.take("away")

    until(lambda: text(browser, title) == away, 20, shots, "resumed")
    until(lambda: state() == "live", 10, shots, "live-again")
    shots.take("resumed")
    streams = js(browser, "return window.streams;")
    resumed = streams[-1]
    assert len(streams) > opened
    assert f"since={last}" in resumed["url"]  # a new ticket, resuming after the last event
    assert (
        resumed["url"].split("ticket=")[1].split("&")[0]
        != (streams[opened - 1]["url"].split("ticket=")[1].split("&")[0])
    )

    def arrivals(new: str) -> list[int]:
        """Which streams (by number) brought the change that titled the track `new`."""
        found = js(browser, "return window.streams;")
        return [
            number
            for number, stream in enumerate(found)
            for event in stream["events"]
            if json.loads(event["data"]).get("track", {}).get("title") == new
        ]

    # Exactly once: the resumed stream's replay brought it; a later change arriving after it
    # shows the stream has gone past it without bringing it again.
    after = f"After {uuid.uuid4().hex[:8]}"
    rename(after)
    until(lambda: text(browser, title) == after, 15, shots, "after")
    assert arrivals(away) == [len(streams) - 1]
    assert arrivals(after) == [len(streams) - 1]
    assert js(browser, "return window.notReloaded === true;")


def test_a_position_the_change_log_no_longer_holds_reads_the_list_again(
    demo: Demo, settings: Path, page: webdriver.Chrome, shots: Screenshots
) -> None:
    """Away long enough for the change log to drop the page's last position (410
    changes_expired): once back, the page opens a stream from now, without since=, and reads
    the list again, so the change made while away shows without a reload."""
    browser = page
    one = live_on_one_track(demo, browser, shots, "expired-")
    state, track, title, rename = one.state, one.track, one.title, one.rename
    before = f"Seen {uuid.uuid4().hex[:8]}"
    rename(before)
    until(lambda: text(browser, title) == before, 15, shots, "expired-seen")
    last = js(browser, "const s = window.streams; return s[s.length - 1].events.at(-1).id;")
    opened = js(browser, "return window.streams.length;")

    # The log keeps a superseded change 1 s from now on (the reload applies it and drops the
    # stream).
    original = settings.read_text()
    settings.write_text(original.replace("[mirror]\n", "[mirror]\nchanges_retention = 1\n", 1))
    try:
        with dropped_and_offline(demo, browser, one, shots, "expired-"):
            # Two changes while away: once the second supersedes the first, the log drops the
            # first, which comes after the page's position: the position no longer resumes.
            first = f"First while away {uuid.uuid4().hex[:8]}"
            rename(first)
            wait_until(logged(demo, last, track, first), 20)
            away = f"Then while away {uuid.uuid4().hex[:8]}"
            rename(away)

            def expired() -> bool:
                answer = requests.get(
                    demo.url + "/changes", params={"since": last}, headers=demo.auth, timeout=5
                )
                return answer.status_code == 410 and answer.json()["code"] == "changes_expired"

            wait_until(expired, 20)
            assert state() == "reconnecting"
            assert text(browser, title) == before
            shots.take("expired-away")
    finally:
        settings.write_text(original)

    until(lambda: state() == "live", 20, shots, "expired-live-again")
    until(lambda: text(browser, title) == away, 15, shots, "expired-read-again")
    shots.take("expired-read-again")
    streams = js(browser, "return window.streams;")
    assert len(streams) > opened
    assert "since=" not in streams[-1]["url"]  # from now: its old position is gone
    assert js(browser, "return window.notReloaded === true;")
    reload_demo(demo)  # the module's other tests run with the usual retention again
    until(lambda: state() == "live", 20, shots, "expired-restored")
