"""Trace ids under gunicorn: every log line of a request carries its trace_id, no other does."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from music_facade.sandbox import SandboxServer
from tests.support.helpers import live_service

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_every_log_line_of_a_request_carries_its_trace_id(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    sandbox.state.set_fault("1001", {"kind": "status", "status": 500}, times=1)
    with live_service(sandbox, tmp_path) as server:
        headers = {"traceparent": PARENT, "X-Request-ID": "traced-1"}
        resp = requests.get(server.url + "/music?user=studio", headers=headers, timeout=5)
        assert resp.status_code == 502
        requests.get(server.url + "/openapi.yaml", timeout=5)  # another trace
    assert server.log_path is not None
    lines = [json.loads(x) for x in server.log_path.read_text().splitlines() if x.startswith("{")]
    mine = [x for x in lines if x.get("trace_id") == TRACE_ID]
    messages = {x["message"] for x in mine}
    # The warning about the upstream's answer, and the access line reporting the call: all in
    # the trace.
    assert "upstream error status 500" in messages
    assert any(
        x.get("request_id") == "traced-1" and x.get("status") == 502
        and x.get("upstream_status") == 500 and x.get("upstream_calls") == 1
        for x in mine
    )  # fmt: skip
    spec = [x for x in lines if x.get("path") == "/openapi.yaml"]
    assert spec
    assert spec[0]["trace_id"] != TRACE_ID
    # Lines outside any request (gunicorn's own) carry no stale trace id.
    booting = [x for x in lines if x.get("logger") == "gunicorn.error"]
    assert booting
    assert all("trace_id" not in x for x in booting)
