"""Cache keys through the app: a list page and a track never share an entry, in memory or Redis."""

from __future__ import annotations

import json
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from music_facade.config import RedisSettings, Secret
from music_facade.sandbox.data import SONG, full_record
from tests.support.helpers import AppFactory
from tests.support.redis_server import RedisServer
from tests.support.serving import serving

ITEM = full_record("song", SONG, 0)["itemId"]


class _TwoAccounts(BaseHTTPRequestHandler):
    """An upstream whose accounts' user ids are `track` and `song` (the sandbox has neither):
    each lists one record, whatever the cursor; any one-record read is `song`'s first."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path.rstrip("/").endswith("/music"):  # the list; else a one-record read
            user = parse_qs(url.query)["user_id"][0]
            doc: dict[str, Any] = {"records": [full_record(user, SONG, 0)], "hasNext": False}
        else:
            doc = full_record("song", SONG, 0)
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.mark.parametrize(
    "shared",
    [
        pytest.param(False, id="memory"),
        # Two in-process replicas sharing a real redis-server.
        pytest.param(True, id="redis", marks=[pytest.mark.live, pytest.mark.redis]),
    ],
)
def test_a_list_page_and_a_track_never_share_an_entry(make_app: AppFactory, shared: bool) -> None:
    # The old keys: user_id␟type␟cursor and track␟user_id␟item. The list of account `track`
    # at cursor ITEM and the track ITEM of account `song` were both "track␟song␟ITEM".
    with ExitStack() as stack:
        url = stack.enter_context(serving(ThreadingHTTPServer(("127.0.0.1", 0), _TwoAccounts)))
        changes: dict[str, Any] = {"upstream_base_url": url, "users": {"t": "track", "s": "song"}}
        if shared:
            redis = stack.enter_context(RedisServer())
            changes["redis"] = RedisSettings(url=Secret(redis.url), prefix="keys")
        apps = [make_app(**changes) for _ in range(2)]
        for app in apps if shared else []:
            stack.callback(app.extensions["store"].close)
            stack.callback(app.extensions["music"].cache.fleet.close)
        # With Redis, two replicas: the second meets the first's entry only in Redis.
        lister, reader = (apps[0], apps[1]) if shared else (apps[0], apps[0])
        page = lister.test_client().get(f"/music?user=t&cursor={ITEM}")
        assert page.status_code == 200
        assert [item["id"] for item in page.get_json()["items"]] != [ITEM]
        track = reader.test_client().get(f"/music/{ITEM}?user=s")
        assert track.status_code == 200, track.get_data(as_text=True)
        assert track.get_json()["id"] == ITEM
        assert track.headers["Cache-Status"].startswith("music-facade; fwd=miss")
