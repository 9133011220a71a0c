"""deploy/nginx/nginx.conf: renders for given addresses, passes `nginx -t`, logs no secrets, and
answers its own failures (no replica, a replica too slow, requests it refuses) with problem+json
a page on an allowed origin can read.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from music_facade import cors
from tests.support import problem_codes
from tests.support.deploy_render import (
    LISTEN,
    NGINX_TEMPLATE,
    REPLICA,
    gunicorn_setting,
    nginx_binary,
    nginx_check,
    nginx_cors_map,
    render_nginx,
    render_nginx_text,
    running_nginx,
)
from tests.support.programs import free_port, missing_program

TEMPLATE = NGINX_TEMPLATE.read_text(encoding="utf-8")
# Variables that carry the query string or credentials; none may reach a log line.
FORBIDDEN_IN_LOGS = re.compile(
    r"\$(request|request_uri|args|query_string|arg_\w+|http_authorization|http_cookie"
    r"|cookie_\w+|request_body|is_args)\b"
)


def _directives(text: str) -> str:
    """The configuration without its comments."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def _log_formats(text: str) -> dict[str, str]:
    """log_format name → its format string (the quoted pieces joined)."""
    found = re.findall(r"log_format\s+(\w+)(?:\s+escape=\w+)?((?:\s+'[^']*')+)\s*;", text)
    return {name: "".join(re.findall(r"'([^']*)'", body)) for name, body in found}


@pytest.fixture
def nginx() -> str:
    """The nginx binary; CI must have it (.ci/run installs it), elsewhere the test may skip."""
    binary = nginx_binary()
    if binary is None:
        missing_program("nginx", "nginx")
    return binary


@pytest.mark.nginx
@pytest.mark.usefixtures("nginx")
def test_rendered_for_two_loopback_replicas_passes_nginx_t(tmp_path: Path) -> None:
    rendered = render_nginx(tmp_path, "127.0.0.1:18080", ["127.0.0.1:18081", "127.0.0.1:18082"])
    result = nginx_check(rendered)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    text = rendered.conf.read_text(encoding="utf-8")
    body = _directives(text)
    assert "${" not in body
    assert "listen 127.0.0.1:18080;" in body
    servers = re.findall(r"^\s*server (\S+) max_fails=0;", body, re.MULTILINE)
    assert servers == ["127.0.0.1:18081", "127.0.0.1:18082"]
    assert f"proxy_temp_path {tmp_path / 'temp' / 'proxy'};" in body


@pytest.mark.nginx
@pytest.mark.usefixtures("nginx")
def test_nginx_t_bites_on_a_broken_configuration(tmp_path: Path) -> None:
    broken = tmp_path / "broken.conf"
    broken.write_text(
        TEMPLATE.replace("proxy_next_upstream_tries 2;", "proxy_next_upstream_tries;")
    )
    rendered = render_nginx(tmp_path / "out", "127.0.0.1:18080", ["127.0.0.1:1"], broken)
    result = nginx_check(rendered)
    assert result.returncode != 0
    assert "proxy_next_upstream_tries" in result.stderr


def test_renderer_repeats_the_replica_line_and_refuses_a_template_without_placeholders() -> None:
    text = render_nginx_text(TEMPLATE, "9000", ["a:1", "b:2", "c:3"], Path("/x"))
    assert re.findall(r"^\s*server (\S+) max_fails=0;", text, re.MULTILINE) == ["a:1", "b:2", "c:3"]
    assert "listen 9000;" in text
    with pytest.raises(ValueError, match="at least one replica"):
        render_nginx_text(TEMPLATE, "9000", [], Path("/x"))
    with pytest.raises(ValueError, match="exactly one"):
        render_nginx_text(TEMPLATE.replace(REPLICA, "x:1"), "9000", ["a:1"], Path("/x"))
    with pytest.raises(ValueError, match="exactly one"):
        render_nginx_text(TEMPLATE.replace(LISTEN, "80"), "9000", ["a:1"], Path("/x"))


def test_access_log_format_has_no_query_string_or_credentials() -> None:
    body = _directives(TEMPLATE)
    formats = _log_formats(body)
    assert set(formats) == {"music"}
    fmt = formats["music"]
    assert FORBIDDEN_IN_LOGS.search(fmt) is None, fmt
    assert "$uri" in fmt
    assert "$music_request_id" in fmt
    # Every access_log uses that format (a bare access_log would use nginx's "combined",
    # which logs $request: the query string).
    logs = re.findall(r"^\s*access_log\s+([^;]+);", body, re.MULTILINE)
    assert logs
    assert all(entry.split()[-1] in ("music", "off") for entry in logs), logs
    # The error log quotes request lines at error/warn level: only crit and above.
    assert re.findall(r"^\s*error_log\s+([^;]+);", body, re.MULTILINE) == ["stderr crit"]


def test_the_forbidden_variable_check_bites() -> None:
    for bad in ("$request", "$request_uri", "$args", "$arg_key", "$http_authorization"):
        assert FORBIDDEN_IN_LOGS.search(f'"x":"{bad}"'), bad
    assert FORBIDDEN_IN_LOGS.search('"path":"$uri","m":"$request_method"') is None


def test_retries_and_timeouts_match_the_service() -> None:
    body = _directives(TEMPLATE)

    def value(directive: str) -> str:
        found = re.findall(rf"^\s*{directive}\s+([^;]+);", body, re.MULTILINE)
        assert len(found) == 1, directive
        return str(found[0])

    assert value("proxy_next_upstream").split() == [
        "error",
        "timeout",
        "http_502",
        "http_503",
        "http_504",
    ]
    assert "non_idempotent" not in body
    assert value("proxy_next_upstream_tries") == "2"
    assert value("proxy_next_upstream_timeout") == "5s"
    # The service's slowest answer with default [upstream] settings: 3 connects of 3.05 s with
    # backoff, then read_timeout for headers and again for the body.
    slowest = 3 * 3.05 + 0.4 + 10 + 10
    assert int(value("proxy_read_timeout").rstrip("s")) > slowest
    # Idle upstream connections close before gunicorn's keepalive closes them.
    upstream = re.search(r"upstream music \{(.*?)\n    \}", body, re.DOTALL)
    assert upstream is not None
    idle = re.findall(r"keepalive_timeout (\d+)s;", upstream.group(1))
    assert len(idle) == 1
    assert int(idle[0]) < gunicorn_setting("keepalive")
    assert value("proxy_http_version") == "1.1"
    assert value("proxy_set_header X-Forwarded-For") == "$proxy_add_x_forwarded_for"


ALLOWED = "https://app.example.com"
OTHER = "https://elsewhere.example.com"
HEX_ID = re.compile(r"\A[0-9a-f]{32}\Z")


@dataclass(frozen=True)
class Edge:
    """nginx running the template, in front of replicas that cannot answer."""

    url: str
    listen: str


@contextlib.contextmanager
def _edge(tmp_path: Path, replica: str, template: Path = NGINX_TEMPLATE) -> Iterator[Edge]:
    listen = f"127.0.0.1:{free_port()}"
    rendered = render_nginx(tmp_path / "nginx", listen, [replica], template, [ALLOWED])
    with running_nginx(rendered, listen, tmp_path / "nginx.log"):
        yield Edge(f"http://{listen}", listen)


@pytest.fixture
def no_replica(nginx: str, tmp_path: Path) -> Iterator[Edge]:
    """nginx whose one replica refuses connections: a socket bound but not listening."""
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        port = refusing.getsockname()[1]
        with _edge(tmp_path, f"127.0.0.1:{port}") as edge:
            yield edge


def _problem(resp: requests.Response, status: int, code: str) -> dict[str, object]:
    """The answer's problem document, after checking what every nginx problem carries."""
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    doc = json.loads(resp.text)
    assert isinstance(doc, dict)
    assert (doc["status"], doc["code"]) == (status, code)
    assert set(doc) == {"type", "title", "status", "detail", "code", "request_id"}
    assert doc["request_id"] == resp.headers["X-Request-ID"]
    problem_codes.record(doc, f"nginx's {status}")
    return doc


def _cors_for(resp: requests.Response, origin: str | None) -> None:
    """The service's CORS headers (music_facade/cors.py) for an allowed origin, none otherwise."""
    assert "Origin" in resp.headers["Vary"]
    if origin == ALLOWED:
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert resp.headers["Access-Control-Expose-Headers"] == ", ".join(cors.EXPOSE_HEADERS)
    else:
        assert not any(h.lower().startswith("access-control-") for h in resp.headers), resp.headers


@pytest.mark.live
@pytest.mark.nginx
@pytest.mark.parametrize("origin", [ALLOWED, OTHER, None])
def test_no_replica_answers_a_problem_a_page_on_an_allowed_origin_can_read(
    no_replica: Edge, origin: str | None
) -> None:
    headers = {"X-Request-ID": "page-42"} | ({"Origin": origin} if origin else {})
    resp = requests.get(no_replica.url + "/music?user=studio", headers=headers, timeout=10)
    doc = _problem(resp, 503, "service_unavailable")
    assert doc["type"] == "tag:music-facade,2026:problem/service_unavailable"
    assert doc["request_id"] == "page-42"  # the caller's id, as the service would keep it
    assert resp.headers["Retry-After"] == "5"
    _cors_for(resp, origin)


@pytest.mark.live
@pytest.mark.nginx
def test_a_request_id_that_breaks_the_services_rule_is_replaced(no_replica: Edge) -> None:
    # A quote would break the JSON body nginx writes; the service's rule refuses it too.
    for given in ('a"b', "x" * 65, "spaces are not allowed"):
        resp = requests.get(no_replica.url + "/music", headers={"X-Request-ID": given}, timeout=10)
        doc = _problem(resp, 503, "service_unavailable")
        assert HEX_ID.match(str(doc["request_id"])), doc


@pytest.mark.live
@pytest.mark.nginx
def test_no_replica_answers_an_allowed_origins_preflight_so_the_real_request_is_sent(
    no_replica: Edge,
) -> None:
    preflight = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization,x-request-id",
    }
    resp = requests.options(
        no_replica.url + "/music", headers=preflight | {"Origin": ALLOWED}, timeout=10
    )
    assert resp.status_code == 204, resp.text
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert resp.headers["Access-Control-Allow-Methods"] == cors.ALLOW_METHODS
    assert resp.headers["Access-Control-Allow-Headers"] == ", ".join(cors.ALLOW_HEADERS)
    assert resp.headers["Access-Control-Max-Age"] == cors.MAX_AGE
    assert "Retry-After" not in resp.headers
    # Another origin's preflight, and a plain OPTIONS, get the problem (no CORS headers).
    other = requests.options(
        no_replica.url + "/music", headers=preflight | {"Origin": OTHER}, timeout=10
    )
    _problem(other, 503, "service_unavailable")
    _cors_for(other, OTHER)
    plain = requests.options(no_replica.url + "/music", headers={"Origin": ALLOWED}, timeout=10)
    _problem(plain, 503, "service_unavailable")
    _cors_for(plain, ALLOWED)


@pytest.mark.live
@pytest.mark.nginx
def test_a_replica_that_never_answers_gets_a_readable_504(nginx: str, tmp_path: Path) -> None:
    # A socket that listens but never accepts: the kernel completes the handshake, nothing
    # answers. nginx's read timeout shortened from 35 s to 1 s for the test.
    template = tmp_path / "slow.conf"
    text = NGINX_TEMPLATE.read_text(encoding="utf-8")
    assert text.count("proxy_read_timeout 35s;") == 1
    template.write_text(text.replace("proxy_read_timeout 35s;", "proxy_read_timeout 1s;"))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        with _edge(tmp_path, f"127.0.0.1:{silent.getsockname()[1]}", template) as edge:
            resp = requests.get(edge.url + "/music", headers={"Origin": ALLOWED}, timeout=20)
    doc = _problem(resp, 504, "service_timeout")
    assert doc["type"] == "tag:music-facade,2026:problem/service_timeout"
    assert "Retry-After" not in resp.headers
    _cors_for(resp, ALLOWED)


def _raw(edge: Edge, request: bytes) -> requests.Response:
    """Send bytes as they are (requests would fix what these tests break); parse the answer."""
    host, port = edge.listen.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    resp = requests.Response()
    resp.status_code = int(status_line.split()[1])
    resp.headers.update(dict(line.split(": ", 1) for line in lines))
    resp._content = body
    return resp


@pytest.mark.live
@pytest.mark.nginx
@pytest.mark.parametrize(
    ("request_bytes", "status", "code", "origin"),
    [
        # A body over client_max_body_size (16k).
        (
            b"POST /music HTTP/1.1\r\nHost: x\r\nOrigin: %(origin)s\r\n"
            b"Content-Length: 20000\r\n\r\n" + b"a" * 20000,
            413, "content_too_large", ALLOWED,
        ),
        # A header over large_client_header_buffers (16k).
        (
            b"GET /music HTTP/1.1\r\nHost: x\r\nOrigin: %(origin)s\r\n"
            b"X-Big: " + b"a" * 17000 + b"\r\n\r\n",
            431, "request_header_fields_too_large", ALLOWED,
        ),
        # HTTP/1.1 without Host.
        (b"GET /music HTTP/1.1\r\nOrigin: %(origin)s\r\n\r\n", 400, "bad_request", ALLOWED),
        (b"GET /music HTTP/1.1\r\nOrigin: %(origin)s\r\n\r\n", 400, "bad_request", OTHER),
        # nginx's own locations are not reachable from outside.
        (
            b"GET /_problem/service_unavailable HTTP/1.1\r\nHost: x\r\nOrigin: %(origin)s"
            b"\r\nConnection: close\r\n\r\n",
            404, "not_found", ALLOWED,
        ),
        # A request line over 16k: refused before any header is read, Origin included.
        (
            b"GET /music?" + b"a" * 17000 + b" HTTP/1.1\r\nHost: x\r\nOrigin: %(origin)s\r\n\r\n",
            414, "uri_too_long", None,
        ),
    ],
    ids=["413", "431", "400-allowed", "400-other", "404", "414"],
)  # fmt: skip
def test_nginx_refusals_are_problems_with_cors_headers(
    no_replica: Edge, request_bytes: bytes, status: int, code: str, origin: str | None
) -> None:
    sent = request_bytes % {b"origin": (origin or ALLOWED).encode()}
    resp = _raw(no_replica, sent)
    doc = _problem(resp, status, code)
    assert HEX_ID.match(str(doc["request_id"])), doc
    _cors_for(resp, origin)


def test_the_cors_map_file_holds_only_origins(tmp_path: Path) -> None:
    assert nginx_cors_map([ALLOWED, "http://localhost:5173"]) == (
        f'"{ALLOWED}" $http_origin;\n"http://localhost:5173" $http_origin;\n'
    )
    for bad in ('https://x"; default 1', "https://x/path", "*"):
        with pytest.raises(ValueError, match="not an origin"):
            nginx_cors_map([bad])
