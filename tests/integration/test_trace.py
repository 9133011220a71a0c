"""Trace ids: W3C traceparent in, a child span to the upstream, trace_id in every log line."""

from __future__ import annotations

import pytest

from music_facade import trace
from music_facade.sandbox import SandboxServer
from tests.support.helpers import AppFactory

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def fields(header: str) -> list[str]:
    parts = header.split("-")
    assert len(parts) == 4, header
    assert trace.parse(header) is not None, header
    return parts


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (PARENT, (TRACE_ID, "01")),
        (f"00-{TRACE_ID}-00f067aa0ba902b7-00", (TRACE_ID, "00")),
        (f"00-{TRACE_ID}-00f067aa0ba902b7-03", (TRACE_ID, "01")),  # unknown flag bits dropped
        (f"01-{TRACE_ID}-00f067aa0ba902b7-01-future", (TRACE_ID, "01")),  # a later version
        (None, None),
        ("", None),
        ("garbage", None),
        (PARENT.upper(), None),
        (f"ff-{TRACE_ID}-00f067aa0ba902b7-01", None),
        (f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra", None),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
        (f"00-{TRACE_ID}-{'0' * 16}-01", None),
        (f"00-{TRACE_ID[:-1]}-00f067aa0ba902b7-01", None),
    ],
)
def test_parse(header: str | None, expected: tuple[str, str] | None) -> None:
    assert trace.parse(header) == expected


def test_music_continues_the_callers_trace_and_passes_a_child_upstream(
    make_app: AppFactory, sandbox: SandboxServer
) -> None:
    client = make_app().test_client()
    resp = client.get(
        "/music?user=studio", headers={"traceparent": PARENT, "X-Request-ID": "keep-me"}
    )
    assert resp.status_code == 200
    assert resp.headers["X-Request-ID"] == "keep-me"  # unchanged by tracing
    version, trace_id, span, flags = fields(resp.headers["traceparent"])
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert span != "00f067aa0ba902b7"  # the service's own span
    [call] = sandbox.state.calls()
    upstream = {k.lower(): v for k, v in call.headers.items()}["traceparent"]
    _, up_trace, up_span, up_flags = fields(upstream)
    assert (up_trace, up_flags) == (TRACE_ID, "01")
    assert up_span not in (span, "00f067aa0ba902b7")  # a child span of its own
    assert {k.lower(): v for k, v in call.headers.items()}["x-request-id"] == "keep-me"


def test_a_missing_or_malformed_traceparent_starts_a_new_trace(make_app: AppFactory) -> None:
    client = make_app().test_client()
    seen = set()
    for headers in ({}, {"traceparent": "00-nonsense"}, {"traceparent": PARENT.upper()}):
        resp = client.get("/music?user=studio", headers=headers)
        _, trace_id, _, _ = fields(resp.headers["traceparent"])
        assert trace_id != TRACE_ID.upper()
        seen.add(trace_id)
    assert len(seen) == 3  # a new trace each time


def test_flask_routes_and_problems_carry_traceparent_too(make_app: AppFactory) -> None:
    client = make_app().test_client()
    for path in ("/healthz", "/openapi.yaml", "/metrics", "/no/such/path"):
        resp = client.get(path, headers={"traceparent": PARENT})
        assert fields(resp.headers["traceparent"])[1] == TRACE_ID, path
    problem = client.get("/music?user=nobody", headers={"traceparent": PARENT})
    assert problem.status_code == 400
    assert fields(problem.headers["traceparent"])[1] == TRACE_ID
