"""Readiness under gunicorn: SIGTERM turns /readyz 503 at once, and in-flight requests finish."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from pathlib import Path

import requests

from music_facade.sandbox import SandboxServer
from tests.support.helpers import live_service


def test_sigterm_flips_readiness_and_lets_in_flight_requests_finish(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    # The in-flight call is held open on purpose: a deadline longer than any busy machine needs.
    with live_service(sandbox, tmp_path, workers=1, read_timeout=20) as live:
        assert live.proc is not None
        host, port = live.url.removeprefix("http://").split(":")
        keepalive = http.client.HTTPConnection(host, int(port), timeout=10)
        keepalive.request("GET", "/readyz")
        first = keepalive.getresponse()
        assert first.status == 200
        first.read()
        # A request in flight: the upstream hangs until the sandbox is released.
        sandbox.state.set_fault("1001", {"kind": "hang", "seconds": 30})
        in_flight: list[requests.Response] = []
        caller = threading.Thread(
            target=lambda: in_flight.append(
                requests.get(live.url + "/music?user=studio", timeout=30)
            )
        )
        caller.start()
        deadline = time.monotonic() + 10
        while sandbox.state.call_count() == 0:  # the call reached the upstream
            assert time.monotonic() < deadline
            time.sleep(0.01)  # poll interval
        live.proc.send_signal(signal.SIGTERM)
        # On the open keep-alive connection (new ones are refused now), readiness turns 503
        # as soon as the worker has the signal.
        statuses = []
        while True:
            keepalive.request("GET", "/readyz")
            resp = keepalive.getresponse()
            body = resp.read()
            statuses.append(resp.status)
            if resp.status == 503:
                assert json.loads(body)["code"] == "shutting_down"
                break
            assert time.monotonic() < deadline
            time.sleep(0.01)  # poll interval
        keepalive.close()
        sandbox.state.release()  # the upstream answers: the in-flight request finishes
        caller.join(30)
        assert [r.status_code for r in in_flight] == [200]
        assert live.proc.wait(timeout=30) == 0
