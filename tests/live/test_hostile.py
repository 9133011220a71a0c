"""Hostile requests against the service under gunicorn, sent as raw bytes over a socket.

Whoever refuses a request, gunicorn's parser (through music_facade.worker.ProblemWorker) or the app,
the answer is one application/problem+json response, and the process goes on serving. Raw
sockets, so that no client library normalises, encodes or refuses the bytes first.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from music_facade.launch import GunicornProcess
from music_facade.sandbox import SandboxServer
from tests.support import contract, problem_codes
from tests.support.helpers import live_service

HEX_ID = re.compile(r"\A[0-9a-f]{32}\Z")
# Planted in requests gunicorn refuses: its own error pages quote the offending bytes; ours must
# not, in the answer or in the log.
SECRET = b"Bearer-s3cr3t-hostile-7f3a"


@pytest.fixture(scope="module")
def live(
    sandbox_server: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornProcess]:
    # One worker: "still serving" then means this very process survived every request.
    with live_service(sandbox_server, tmp_path_factory.mktemp("hostile")) as server:
        yield server


@dataclass(frozen=True)
class RawResponse:
    """One HTTP response as read off the wire, and whatever followed it before the close."""

    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    trailing: bytes
    raw: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


def request(
    target: bytes = b"/healthz",
    *,
    method: bytes = b"GET",
    version: bytes = b"HTTP/1.1",
    headers: Sequence[bytes] = (),
    body: bytes = b"",
) -> bytes:
    """A request's bytes, exactly as given, with Host and Connection: close added."""
    lines = [b" ".join((method, target, version)), b"Host: 127.0.0.1", *headers]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body


def exchange(live: GunicornProcess, raw: bytes, head: bool = False) -> RawResponse:
    """Send raw bytes on a new connection and read everything until the server closes it."""
    host, port = live.sock.getsockname()[:2]
    chunks = []
    with socket.create_connection((host, port), timeout=5) as conn:
        # Refused before it read everything? The answer may still be waiting.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(raw)
        while True:
            try:
                data = conn.recv(65536)
            except ConnectionResetError:
                break  # an incomplete answer then fails the parsing below
            if not data:
                break
            chunks.append(data)
    return parse(b"".join(chunks), head)


def parse(data: bytes, head: bool) -> RawResponse:
    """Split one response off the bytes read; what follows it is kept as trailing."""
    head_bytes, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data[:300]!r}"
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    version, status, reason = status_line.split(" ", 2)
    assert version == "HTTP/1.1", status_line
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        assert colon, f"malformed header line {line!r}"
        assert name.lower() not in headers, f"header {name} sent twice"
        headers[name.lower()] = value.strip(" \t")
    length = 0 if head else int(headers["content-length"])
    assert len(rest) >= length, f"body cut short: {len(rest)} of {length} bytes"
    return RawResponse(int(status), reason, headers, rest[:length], rest[length:], data)


def log_text(live: GunicornProcess) -> str:
    assert live.log_path is not None
    return live.log_path.read_text(encoding="utf-8", errors="replace")


def log_entries(live: GunicornProcess) -> list[dict[str, Any]]:
    lines = log_text(live).splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def assert_still_serving(live: GunicornProcess) -> None:
    """/healthz answers 200, from the worker that booted first (it never died)."""
    assert requests.get(live.url + "/healthz", timeout=5).status_code == 200
    boots = [e for e in log_entries(live) if e["message"].startswith("Booting worker")]
    assert len(boots) == 1, [e["message"] for e in boots]


def assert_problem(resp: RawResponse, status: int, code: str) -> dict[str, Any]:
    """One problem+json answer with the common headers; returns the document."""
    assert resp.status == status, resp.raw[:600]
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["x-content-type-options"] == "nosniff"
    doc: dict[str, Any] = resp.json()
    contract.check_schema("/components/schemas/Problem", doc, "the problem document")
    problem_codes.record(doc, f"a {status} off the wire")
    assert doc["status"] == status
    assert doc["code"] == code
    assert doc["request_id"] == resp.headers["x-request-id"]
    assert resp.trailing == b"", f"more than one response on the connection: {resp.trailing!r}"
    return doc


def _bad(name: str, raw: bytes, code: str = "bad_request", status: int = 400) -> Any:
    return pytest.param(raw, status, code, id=name)


# Refused by gunicorn's parser, before the app runs: answered by ProblemWorker.
GUNICORN_REJECTS = [
    _bad(
        "request-line-10000-bytes",
        request(b"/music?cursor=" + SECRET + b"a" * 10_000),
        "uri_too_long",
        414,
    ),
    _bad(
        "200-headers",
        request(headers=[b"X-Hostile-%d: %s" % (i, SECRET) for i in range(200)]),
        "request_header_fields_too_large",
        431,
    ),
    _bad(
        "one-20000-byte-header",
        request(headers=[b"X-Big: " + SECRET * (20_000 // len(SECRET))]),
        "request_header_fields_too_large",
        431,
    ),
    _bad("header-name-with-space", request(headers=[b"X-" + SECRET + b" Name: 1"])),
    _bad("header-line-without-colon", request(headers=[SECRET])),
    _bad("header-name-empty", request(headers=[b": " + SECRET])),
    _bad("header-value-with-control-char", request(headers=[b"X-A: " + SECRET + b"\x01"])),
    _bad("header-obsolete-line-folding", request(headers=[b"X-A: 1", b" " + SECRET])),
    _bad("bare-lf-line-endings", b"GET /healthz?" + SECRET + b" HTTP/1.1\nHost: x\n\n"),
    _bad("method-invalid-token", request(b"/healthz?" + SECRET, method=b"G@T")),
    _bad("method-lower-case", request(b"/healthz?" + SECRET, method=b"get")),
    _bad("http-version-9.9", request(b"/healthz?" + SECRET, version=b"HTTP/9.9")),
    _bad("http-version-garbage", request(b"/healthz?" + SECRET, version=b"HTXP/1.1")),
    _bad("space-in-target", request(b"/music?user=a " + SECRET)),
    _bad("nul-byte-in-target", request(b"/music?user=\x00" + SECRET)),
    _bad("cr-in-target", request(b"/music?user=a\r" + SECRET)),
    # A raw byte >= 0x80 in the target never reaches the app's UTF-8 check: gunicorn refuses
    # anything but printable ASCII there (RFC 9112 3.2).
    _bad("raw-0xff-in-query", request(b"/music?user=\xff" + SECRET)),
    _bad("raw-utf8-in-query", request(b"/music?user=st\xc3\xbcdio" + SECRET)),
    _bad("authority-form-target-on-get", request(b"example.com:80")),
    # gzip without a final chunked leaves the body's length unknown: 400 (RFC 9112 6.3).
    _bad(
        "transfer-encoding-gzip",
        request(b"/music", method=b"POST", headers=[b"Transfer-Encoding: gzip"]),
    ),
    _bad(
        "transfer-encoding-unknown",
        request(b"/music", method=b"POST", headers=[b"Transfer-Encoding: " + SECRET]),
        "not_implemented",
        501,
    ),
    _bad(
        "chunked-and-content-length",
        request(
            b"/music",
            method=b"POST",
            headers=[b"Transfer-Encoding: chunked", b"Content-Length: 5"],
            body=b"0\r\n\r\n",
        ),
    ),
    _bad(
        "chunked-on-http-1.0",
        request(
            b"/music",
            method=b"POST",
            version=b"HTTP/1.0",
            headers=[b"Transfer-Encoding: chunked"],
            body=b"0\r\n\r\n",
        ),
    ),
    _bad("content-length-twice", request(headers=[b"Content-Length: 0", b"Content-Length: 0"])),
    _bad("content-length-negative", request(headers=[b"Content-Length: -1"])),
    _bad("content-length-not-a-number", request(headers=[b"Content-Length: " + SECRET])),
    _bad("host-twice", request(headers=[b"Host: evil.example"])),
    _bad(
        "expect-unknown",
        request(headers=[b"Expect: " + SECRET]),
        "expectation_failed",
        417,
    ),
]


@pytest.mark.parametrize(("raw", "status", "code"), GUNICORN_REJECTS)
def test_gunicorn_rejection_is_a_problem(
    live: GunicornProcess, raw: bytes, status: int, code: str
) -> None:
    resp = exchange(live, raw)
    assert 400 <= status < 500 or (status, code) == (501, "not_implemented")
    doc = assert_problem(resp, status, code)
    assert doc["type"] == "about:blank"
    assert doc["title"] == resp.reason
    assert HEX_ID.match(doc["request_id"])
    assert resp.headers["connection"] == "close"
    assert SECRET not in resp.raw
    # One warning naming the exception class, under the answer's request id, never the bytes.
    warnings = [e for e in log_entries(live) if e.get("request_id") == doc["request_id"]]
    assert [e["level"] for e in warnings] == ["WARNING"]
    assert re.fullmatch(r"invalid request from 127\.0\.0\.1: [A-Za-z]+", warnings[0]["message"])
    assert SECRET.decode() not in log_text(live)
    assert_still_serving(live)


def test_head_rejection_has_no_body(live: GunicornProcess) -> None:
    # gunicorn attaches the request to this error, so its method is known.
    raw = request(method=b"HEAD", headers=[b"Content-Length: 0", b"Content-Length: 0"])
    resp = exchange(live, raw, head=True)
    assert resp.status == 400
    assert resp.headers["content-type"] == "application/problem+json"
    assert int(resp.headers["content-length"]) > 0
    assert resp.body == resp.trailing == b""
    assert_still_serving(live)


def test_malformed_chunked_body_the_app_did_not_read(live: GunicornProcess) -> None:
    # The app answers before reading the body (405), then gunicorn fails draining it. Stock
    # gunicorn writes a second (HTML 400) response after the first; ProblemWorker only logs it,
    # and gunicorn closes the connection.
    raw = request(
        b"/music",
        method=b"POST",
        headers=[b"Transfer-Encoding: chunked"],
        body=b"zz\r\n" + SECRET + b"\r\n0\r\n\r\n",
    )
    resp = exchange(live, raw)
    assert_problem(resp, 405, "method_not_allowed")
    assert SECRET.decode() not in log_text(live)
    assert_still_serving(live)


def test_gunicorn_failure_is_a_500_problem(live: GunicornProcess) -> None:
    # A trusted proxy (loopback, by gunicorn's forwarded_allow_ips) may set SCRIPT_NAME; a path
    # outside it is gunicorn's ConfigurationProblem, which it answers 500 from handle_error.
    resp = exchange(live, request(b"/music", headers=[b"SCRIPT_NAME: /elsewhere"]))
    doc = assert_problem(resp, 500, "internal_error")
    assert doc["type"] == "tag:music-facade,2026:problem/internal_error"
    assert HEX_ID.match(doc["request_id"])
    errors = [e for e in log_entries(live) if e.get("request_id") == doc["request_id"]]
    assert [e["level"] for e in errors] == ["ERROR"]
    assert "ConfigurationProblem" in errors[0]["exc_info"]
    assert_still_serving(live)


def test_proxy_protocol_from_an_address_not_allowed_is_403(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only with gunicorn's PROXY protocol on (an operator's GUNICORN_CMD_ARGS): a PROXY header
    # from an address outside proxy_allow_ips is refused before the request is read.
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--proxy-protocol v1 --proxy-allow-from 192.0.2.1")
    with live_service(sandbox, tmp_path) as server:
        proxied = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 8080\r\n" + request(b"/healthz")
        resp = exchange(server, proxied)
        doc = assert_problem(resp, 403, "forbidden")
        assert doc["type"] == "about:blank"
        assert resp.headers["connection"] == "close"
        # Without a PROXY header the same worker still serves.
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    warnings = [e for e in log_entries(server) if e.get("request_id") == doc["request_id"]]
    assert [e["message"] for e in warnings] == [
        "invalid request from 127.0.0.1: ForbiddenProxyRequest"
    ]


def _query(name: str, query: bytes, *bad: str) -> Any:
    return pytest.param(query, bad, id=name)


# Well-formed HTTP with a hostile /music query: refused by the app, 400 invalid_query.
HOSTILE_QUERIES = [
    _query("overlong-utf8-slash", b"user=studio&cursor=%C0%AF", "cursor"),
    _query("percent-ff", b"user=studio&type=%FF", "type"),
    _query("percent-ff-in-name", b"user=studio&%FF=1", "\ufffd"),
    _query("utf8-surrogate", b"user=%ED%A0%80", "user"),
    _query("crlf-in-cursor", b"user=studio&cursor=a%0D%0Ab", "cursor"),
    _query("cursor-600-chars", b"user=studio&cursor=" + b"c" * 600, "cursor"),
    _query("control-char-in-user", b"user=stu%01dio", "user"),
    _query("del-in-user", b"user=studio%7F", "user"),
    _query("control-char-in-type", b"user=studio&type=so%1Bng", "type"),
    _query("tab-in-type", b"user=studio&type=%09song", "type"),
    _query("double-encoded-type", b"user=studio&type=%2573ong", "type"),
    _query("nul-before-user", b"user=%00studio", "user"),
    _query("nul-after-type", b"user=studio&type=song%00", "type"),
    _query("plus-as-space-in-user", b"user=+studio", "user"),
    _query("repeated-user", b"user=studio&user=studio", "user"),
]


@pytest.mark.parametrize(("query", "bad"), HOSTILE_QUERIES)
def test_hostile_query_is_invalid_query(
    live: GunicornProcess, query: bytes, bad: tuple[str, ...]
) -> None:
    resp = exchange(live, request(b"/music?" + query))
    doc = assert_problem(resp, 400, "invalid_query")
    contract.check_response("GET", "/music", resp.status, resp.headers, resp.body)
    assert sorted(doc["errors"]) == sorted(bad)
    assert_still_serving(live)


def test_500_parameters_report_at_most_10(live: GunicornProcess) -> None:
    query = b"&".join(b"p%d=1" % i for i in range(500))
    resp = exchange(live, request(b"/music?user=studio&" + query))
    doc = assert_problem(resp, 400, "invalid_query")
    contract.check_response("GET", "/music", resp.status, resp.headers, resp.body)
    assert 1 <= len(doc["errors"]) <= 10
    assert len(doc["detail"]) < 200
    assert_still_serving(live)


@pytest.mark.parametrize(
    "method", ["PUT", "DELETE", "PATCH", "POST", "TRACE", "CONNECT", "PROPFIND", "FOO"]
)
def test_other_methods_are_405(live: GunicornProcess, method: str) -> None:
    resp = exchange(live, request(b"/music?user=studio", method=method.encode()))
    assert_problem(resp, 405, "method_not_allowed")
    contract.check_response(method, "/music", resp.status, resp.headers, resp.body)
    assert {"GET", "HEAD"} <= {m.strip() for m in resp.headers["allow"].split(",")}
    assert_still_serving(live)


def test_connect_authority_form_is_404(live: GunicornProcess) -> None:
    # CONNECT host:port has no path, so it matches no route: 404, not 405. gunicorn closes the
    # connection after any CONNECT (the rest would be tunnel bytes).
    raw = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    assert_problem(exchange(live, raw), 404, "not_found")
    assert_still_serving(live)


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(b"<script>alert(1)</script>", id="script-tag"),
        pytest.param(b"r" * 200, id="200-chars"),
        pytest.param(b"id-\xc3\xa9\xff", id="non-ascii-bytes"),
        pytest.param(b"a b", id="space"),
        pytest.param(b"../../etc/passwd", id="path"),
        pytest.param(b"", id="empty"),
    ],
)
def test_unsafe_request_id_is_replaced(live: GunicornProcess, given: bytes) -> None:
    raw = request(b"/music?user=studio&type=jazz", headers=[b"X-Request-ID: " + given])
    resp = exchange(live, raw)
    doc = assert_problem(resp, 400, "invalid_query")
    assert HEX_ID.match(resp.headers["x-request-id"])
    if given:
        assert given not in resp.raw
    assert doc["request_id"] == resp.headers["x-request-id"]
    assert_still_serving(live)


def test_safe_request_id_is_kept(live: GunicornProcess) -> None:
    raw = request(b"/music?user=studio&type=jazz", headers=[b"X-Request-ID: caller-42.a_b"])
    resp = exchange(live, raw)
    assert assert_problem(resp, 400, "invalid_query")["request_id"] == "caller-42.a_b"


def test_request_id_is_fresh_when_gunicorn_refuses(live: GunicornProcess) -> None:
    raw = request(method=b"G@T", headers=[b"X-Request-ID: caller-42"])
    resp = exchange(live, raw)
    doc = assert_problem(resp, 400, "bad_request")
    assert HEX_ID.match(doc["request_id"])


# Hostile /library queries: refused like /music's, never a stream, never a 500.
HOSTILE_LIBRARY_QUERIES = [
    _query("limit-zero", b"user=studio&limit=0", "limit"),
    _query("limit-negative", b"user=studio&limit=-1", "limit"),
    _query("limit-exponent", b"user=studio&limit=1e3", "limit"),
    _query("limit-8-digits", b"user=studio&limit=99999999", "limit"),
    _query("limit-past-max-items", b"user=studio&limit=5001", "limit"),
    _query("limit-fullwidth-digit", b"user=studio&limit=%EF%BC%91", "limit"),
    _query("limit-nul", b"user=studio&limit=%00", "limit"),
    _query("limit-repeated", b"user=studio&limit=1&limit=2", "limit"),
    _query("cursor-is-not-a-parameter", b"user=studio&cursor=abc", "cursor"),
    _query("type-unknown", b"user=studio&type=jazz", "type"),
]


@pytest.mark.parametrize(("query", "bad"), HOSTILE_LIBRARY_QUERIES)
def test_hostile_library_query_is_invalid_query(
    live: GunicornProcess, query: bytes, bad: tuple[str, ...]
) -> None:
    resp = exchange(live, request(b"/library?" + query))
    doc = assert_problem(resp, 400, "invalid_query")
    contract.check_response("GET", "/library", resp.status, resp.headers, resp.body)
    assert sorted(doc["errors"]) == sorted(bad)
    assert_still_serving(live)


# --- callers that hang up or stop reading in the middle of a /library stream --------------------

STREAM_BOUNDS = """
[library]
max_pages = 100000
max_seconds = 600
pages_per_address = "100000/minute"
max_streams = 1
send_timeout = 1
"""
LIBRARY_REQUEST = request(b"/library?user=studio")


def _calls_settle(sandbox: SandboxServer, quiet: float, within: float) -> int:
    """The sandbox's call count once it stayed the same for `quiet` seconds; fails after
    `within` seconds of growth."""
    deadline = time.monotonic() + within
    count = sandbox.state.call_count()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = sandbox.state.call_count()
        if now == count:
            return count
        count = now
    raise AssertionError(f"the upstream was still being called after {within} s: {count} calls")


def test_a_caller_that_hangs_up_stops_the_walk(sandbox: SandboxServer, tmp_path: Path) -> None:
    # Empty pages with a new cursor every time: nothing is ever written, so no failed write
    # can tell the worker the caller left; it used to go on calling the upstream for good.
    sandbox.state.set_fault("1001", {"kind": "endless"})
    with live_service(sandbox, tmp_path, extra=STREAM_BOUNDS) as server:
        host, port = server.sock.getsockname()[:2]
        with socket.create_connection((host, port), timeout=5) as conn:
            conn.sendall(LIBRARY_REQUEST)
            while sandbox.state.call_count() < 20:  # the walk is well under way
                time.sleep(0.01)
        settled = _calls_settle(sandbox, quiet=0.3, within=5)
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
        # The slot is free again: another stream starts (and hangs up at once).
        sandbox.state.clear_fault("1001")
        assert requests.get(f"{server.url}/library?user=edge", timeout=5).status_code == 200
    assert settled >= 20  # it was under way when the caller left, and then it stopped
    assert "library caller hung up after 0 tracks" in log_text(server)


def test_a_caller_that_stops_reading_is_dropped_and_frees_its_slot(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    sandbox.state.set_fault("1001", {"kind": "endless", "records": 20})
    with live_service(sandbox, tmp_path, extra=STREAM_BOUNDS) as server:
        host, port = server.sock.getsockname()[:2]
        stalled = socket.socket()
        try:
            # A small receive window, never read: the worker's writes fill it and block.
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.connect((host, port))
            stalled.sendall(LIBRARY_REQUEST)
            _calls_settle(sandbox, quiet=0.3, within=5)
            stuck = time.monotonic()
            # max_streams = 1: while it is stuck, another stream is refused, not queued.
            busy = exchange(server, request(b"/library?user=edge"))
            assert_problem(busy, 503, "library_busy")
            contract.check_response("GET", "/library", busy.status, busy.headers, busy.body)
            assert busy.headers["retry-after"] == "10"
            # Within the send timeout (1 s) the stuck stream is dropped and its slot freed.
            library = f"{server.url}/library?user=edge"
            while (status := requests.get(library, timeout=5).status_code) == 503:
                assert time.monotonic() - stuck < 3, "the stuck stream still holds its slot"
                time.sleep(0.05)
            assert status == 200
            # What the stuck caller got: the head and some tracks, then the close, no summary.
            stalled.settimeout(5)
            received = b""
            while chunk := stalled.recv(65536):
                received += chunk
        finally:
            stalled.close()
    assert received.startswith(b"HTTP/1.1 200")
    assert b'"summary"' not in received
    entries = log_entries(server)
    assert "dropped a connection whose caller stopped reading" in [e["message"] for e in entries]
    assert not [e for e in entries if e["level"] == "ERROR"]
