"""deploy/nginx/nginx.conf: renders for given addresses, passes `nginx -t`, logs no secrets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .deploy_render import (
    LISTEN,
    NGINX_TEMPLATE,
    REPLICA,
    gunicorn_setting,
    nginx_binary,
    nginx_check,
    render_nginx,
    render_nginx_text,
)
from .programs import missing_program

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
    assert "$upstream_http_x_request_id" in fmt
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
