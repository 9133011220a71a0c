"""GET /music through the app, against the live sandbox: the query, the page, the errors."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask.testing import FlaskClient

from music_facade.sandbox import SandboxServer
from tests.support.helpers import AppFactory
from tests.support.problem import problem

# --- the page -------------------------------------------------------------------------------


def test_first_page_of_songs(client: FlaskClient, sandbox: SandboxServer) -> None:
    resp = client.get("/music?user=studio&type=song")
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    page = resp.get_json()
    assert len(page["items"]) == 10
    assert page["has_more"] is True
    assert isinstance(page["next_cursor"], str)
    first = page["items"][0]
    assert first["id"]
    assert first["title"]
    assert first["created_at"].endswith("Z")
    assert first["status"] in {"generating", "failed", "completed"}
    [call] = sandbox.state.calls()
    assert call.args == {"user_id": ["1001"], "type": ["song"]}


def test_walk_every_page(client: FlaskClient) -> None:
    for kind, total in (("song", 23), ("instrumental", 12)):
        seen: list[str] = []
        url = f"/music?user=studio&type={kind}"
        while True:
            page = client.get(url).get_json()
            seen += [item["id"] for item in page["items"]]
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            url = f"/music?user=studio&type={kind}&cursor={page['next_cursor']}"
        assert len(seen) == total
        assert len(set(seen)) == total


def test_type_defaults_to_song(client: FlaskClient, sandbox: SandboxServer) -> None:
    assert client.get("/music?user=studio").status_code == 200
    assert sandbox.state.calls()[0].args["type"] == ["song"]


def test_awkward_records(client: FlaskClient) -> None:
    page = client.get("/music?user=edge").get_json()
    # The sandbox's four non-object records are dropped; every object record is a full Track.
    assert page["items"]
    assert all(len(item) == 15 for item in page["items"])
    statuses = {item["status"] for item in page["items"]}
    assert {"failed", "generating", "unknown"} <= statuses
    text = str(page)
    assert "job_id" not in text
    assert "userId" not in text
    assert "user:12345" not in text


def test_empty_account_and_page_without_records(client: FlaskClient) -> None:
    empty: dict[str, object] = {"items": [], "next_cursor": None, "has_more": False}
    assert client.get("/music?user=empty").get_json() == empty
    assert client.get("/music?user=norecords").get_json() == empty


def test_implicit_user(make_app: AppFactory, sandbox: SandboxServer) -> None:
    by_default = make_app(default_user="edge").test_client()
    assert by_default.get("/music").status_code == 200
    only_one = make_app(users={"solo": "1003"}).test_client()
    assert only_one.get("/music").get_json()["items"] == []
    assert [c.user_id for c in sandbox.state.calls()] == ["1002", "1003"]


def test_no_user_and_no_default(client: FlaskClient, sandbox: SandboxServer) -> None:
    body = problem(client.get("/music"), 400, "invalid_query")
    assert "user" in body["errors"]
    assert sandbox.state.call_count() == 0


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("user=studio&type=Song", "type"),
        ("user=studio&type=", "type"),
        ("user=studio&type=instrumental,song", "type"),
        ("user=studio&cursor=", "cursor"),
        ("user=studio&cursor=" + "a" * 513, "cursor"),
        ("user=studio&cursor=a%20b", "cursor"),
        ("user=studio&cursor=a%09b", "cursor"),
        ("user=studio&cursor=%C3%A9", "cursor"),
        ("user=studio&cursor=%00", "cursor"),
        ("user=studio&cursor=%FF", "cursor"),
        ("user=studio&cursor=%C0%AF", "cursor"),
        ("user=studio&cursor=abc%0A", "cursor"),
        ("user=studio%0A", "user"),
        ("user=", "user"),
        ("user=bad%20alias", "user"),
        ("user=" + "a" * 65, "user"),
        ("user=studio&limit=5", "limit"),
        ("user=studio&user_id=1001", "user_id"),
        ("user=studio&type=song&type=song", "type"),
        ("user=studio&user=edge", "user"),
    ],
)
def test_bad_queries_never_reach_upstream(
    client: FlaskClient, sandbox: SandboxServer, query: str, param: str
) -> None:
    body = problem(client.get("/music?" + query), 400, "invalid_query")
    assert param in body["errors"]
    assert all(isinstance(m, str) and m for m in body["errors"][param])
    assert sandbox.state.call_count() == 0


def test_cursor_limits(client: FlaskClient, sandbox: SandboxServer) -> None:
    # 512 visible ASCII characters is allowed (the sandbox then refuses it as unknown).
    problem(client.get("/music?user=studio&cursor=" + "a" * 512), 400, "upstream_rejected")
    assert sandbox.state.call_count() == 1


def test_many_errors_are_bounded(client: FlaskClient) -> None:
    query = "&".join(f"p{i}=1" for i in range(300))
    body = problem(client.get("/music?user=studio&" + query), 400, "invalid_query")
    assert len(body["errors"]) == 10


@pytest.mark.parametrize("alias", ["nobody", "1001", "STUDIO"])
def test_unknown_alias(client: FlaskClient, sandbox: SandboxServer, alias: str) -> None:
    body = problem(client.get(f"/music?user={alias}"), 400, "unknown_user")
    assert alias in body["detail"]
    assert sandbox.state.call_count() == 0


# --- what reaches the upstream ------------------------------------------------------------------


def test_cursor_is_one_literal_value(client: FlaskClient, sandbox: SandboxServer) -> None:
    resp = client.get("/music?user=studio&cursor=x%26user_id%3Dother")
    body = problem(resp, 400, "upstream_rejected")
    assert "Invalid cursor" in body["detail"]
    [call] = sandbox.state.calls()
    assert call.args == {"user_id": ["1001"], "type": ["song"], "cursor": ["x&user_id=other"]}


def test_token_injected_and_callers_authorization_dropped(
    client: FlaskClient, sandbox: SandboxServer
) -> None:
    client.get("/music?user=studio", headers={"Authorization": "Bearer callers-own-key"})
    headers = sandbox.state.calls()[0].headers
    assert headers["Authorization"] == f"Bearer {sandbox.token}"


def test_request_id_forwarded(client: FlaskClient, sandbox: SandboxServer) -> None:
    resp = client.get("/music?user=studio", headers={"X-Request-ID": "req-42.a_b"})
    assert resp.headers["X-Request-ID"] == "req-42.a_b"
    assert sandbox.state.calls()[0].headers["X-Request-ID"] == "req-42.a_b"


@pytest.mark.parametrize("given", ["", "has space", "x" * 65, "<script>", "a\tb"])
def test_unsafe_request_id_replaced(client: FlaskClient, given: str) -> None:
    resp = client.get("/music?user=studio", headers={"X-Request-ID": given})
    assert resp.headers["X-Request-ID"] != given
    assert len(resp.headers["X-Request-ID"]) == 32


# --- upstream outcomes ----------------------------------------------------------------------------


def fault(sandbox: SandboxServer, **spec: Any) -> None:
    sandbox.state.set_fault("*", spec)


def test_upstream_400_message_is_passed_on_without_ids(
    client: FlaskClient, sandbox: SandboxServer
) -> None:
    fault(sandbox, kind="status", status=400, body={"error": "No such thing for 1001", "code": 400})
    body = problem(client.get("/music?user=studio"), 400, "upstream_rejected")
    assert "No such thing for <user>" in body["detail"]
    assert "1001" not in body["detail"]


def test_upstream_message_with_a_lone_surrogate(
    client: FlaskClient, sandbox: SandboxServer
) -> None:
    fault(sandbox, kind="status", status=400, body='{"error": "bad \\udc00 here", "code": 400}')
    body = problem(client.get("/music?user=studio"), 400, "upstream_rejected")
    assert "bad \ufffd here" in body["detail"]


def test_wrong_token_is_the_operators_problem(make_app: AppFactory) -> None:
    app = make_app(
        upstream_token=__import__("music_facade.config").config.Secret("wrong-token-XYZ")
    )
    body = problem(app.test_client().get("/music?user=studio"), 502, "upstream_auth_failed")
    assert "USEAPI_TOKEN" in body["detail"]
    assert "wrong-token-XYZ" not in body["detail"]


@pytest.mark.parametrize("status", [401, 402, 403, 596])
def test_account_statuses(client: FlaskClient, sandbox: SandboxServer, status: int) -> None:
    fault(sandbox, kind="status", status=status)
    problem(client.get("/music?user=studio"), 502, "upstream_auth_failed")


@pytest.mark.parametrize(
    ("given", "expected"), [("7", "7"), (None, "10"), ("soon", "10"), ("3600", "60")]
)
def test_rate_limited(
    client: FlaskClient, sandbox: SandboxServer, given: str | None, expected: str
) -> None:
    fault(sandbox, kind="status", status=429, headers={"Retry-After": given} if given else {})
    resp = client.get("/music?user=studio")
    problem(resp, 503, "upstream_rate_limited")
    assert resp.headers["Retry-After"] == expected


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "status", "status": 404},
        {"kind": "status", "status": 418},
        {"kind": "status", "status": 500},
        {"kind": "status", "status": 503},
        {"kind": "status", "status": 302, "headers": {"Location": "http://127.0.0.1:1/"}},
        {"kind": "status", "status": 200, "body": "[]"},
        {"kind": "status", "status": 200, "body": '{"records": "nope"}'},
        {"kind": "status", "status": 200, "body": '{"records": [], "hasNext": true}'},
        {"kind": "status", "status": 200, "body": '{"records": [{"bpm": NaN}]}'},
        {"kind": "status", "status": 200, "body": "", "content_type": "text/html"},
        {"kind": "malformed"},
        {"kind": "oversized", "bytes": 6_000_000},
        {"kind": "deep", "depth": 100_000},
    ],
)
def test_upstream_errors(client: FlaskClient, sandbox: SandboxServer, spec: dict[str, Any]) -> None:
    sandbox.state.set_fault("*", spec)
    problem(client.get("/music?user=studio"), 502, "upstream_error")


def test_unknown_upstream_account(client: FlaskClient) -> None:
    problem(client.get("/music?user=ghost"), 502, "upstream_error")


def test_wrong_types_everywhere_still_give_tracks(
    client: FlaskClient, sandbox: SandboxServer
) -> None:
    fault(sandbox, kind="wrong_types")
    resp = client.get("/music?user=studio")
    assert resp.status_code == 200  # the contract check validated every Track


def test_body_cap(make_app: AppFactory, sandbox: SandboxServer) -> None:
    capped = make_app(upstream_max_body_bytes=2048).test_client()
    body = problem(capped.get("/music?user=studio"), 502, "upstream_error")
    assert "2048" in body["detail"]


@pytest.mark.parametrize(
    "spec", [{"kind": "hang", "seconds": 30}, {"kind": "drip", "interval": 0.05, "seconds": 30}]
)
def test_timeouts(make_app: AppFactory, sandbox: SandboxServer, spec: dict[str, Any]) -> None:
    app = make_app(upstream_read_timeout=0.5)
    fault(sandbox, **spec)
    problem(app.test_client().get("/music?user=studio"), 504, "upstream_timeout")


def test_connection_refused(make_app: AppFactory) -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = make_app(upstream_base_url=f"http://127.0.0.1:{port}/v1/tempolor")
    problem(app.test_client().get("/music?user=studio"), 502, "upstream_unreachable")


def test_dns_failure(make_app: AppFactory) -> None:
    app = make_app(upstream_base_url="http://music-upstream.invalid/v1/tempolor")
    problem(app.test_client().get("/music?user=studio"), 502, "upstream_unreachable")


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 504])
def test_retries_transient_statuses(
    make_app: AppFactory, sandbox: SandboxServer, status: int
) -> None:
    client = make_app(upstream_retries=2).test_client()
    sandbox.state.set_fault("1001", {"kind": "status", "status": status}, times=2)
    assert client.get("/music?user=studio").status_code == 200
    assert sandbox.state.call_count("1001") == 3


def test_gives_up_after_retries(make_app: AppFactory, sandbox: SandboxServer) -> None:
    client = make_app(upstream_retries=1).test_client()
    fault(sandbox, kind="status", status=503)
    problem(client.get("/music?user=studio"), 502, "upstream_error")
    assert sandbox.state.call_count() == 2


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500])
def test_never_retries_other_statuses(
    make_app: AppFactory, sandbox: SandboxServer, status: int
) -> None:
    client = make_app(upstream_retries=2).test_client()
    fault(sandbox, kind="status", status=status)
    assert client.get("/music?user=studio").status_code >= 400
    assert sandbox.state.call_count() == 1


# --- HTTP semantics -----------------------------------------------------------------------------


def test_head(client: FlaskClient) -> None:
    resp = client.head("/music?user=studio")
    assert resp.status_code == 200
    assert resp.get_data() == b""
    assert resp.headers["ETag"]


def test_not_found_and_method_not_allowed(client: FlaskClient) -> None:
    problem(client.get("/nope"), 404, "not_found")
    resp = client.post("/music?user=studio")
    problem(resp, 405, "method_not_allowed")
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    problem(client.delete("/music"), 405, "method_not_allowed")


def test_unexpected_errors_are_problems(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    music = app.extensions["music"]
    client, music.client = music.client, "not a client"  # a bug: every page load crashes
    resp = app.test_client().get("/music?user=studio")
    body = problem(resp, 500, "internal_error")
    assert "list_music" not in body["detail"]
    assert "Traceback" in caplog.text
    assert "AttributeError" in caplog.text
    music.client = client  # the process kept serving: fixed, it answers again
    assert app.test_client().get("/music?user=studio").status_code == 200


def test_security_headers_everywhere(client: FlaskClient) -> None:
    for url in ("/music?user=studio", "/music?type=x", "/nope", "/healthz", "/openapi.yaml"):
        assert client.get(url).headers["X-Content-Type-Options"] == "nosniff"


def test_health_and_openapi(client: FlaskClient, sandbox: SandboxServer) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    spec = client.get("/openapi.yaml")
    assert spec.mimetype == "application/yaml"
    assert spec.get_data().startswith(b"openapi: 3.1")
    assert sandbox.state.call_count() == 0


def test_concurrent_requests_share_one_upstream_call(
    make_app: AppFactory, sandbox: SandboxServer
) -> None:
    app = make_app()
    sandbox.state.set_fault("1001", {"kind": "latency", "seconds": 0.3})
    statuses: list[int] = []

    def get() -> None:
        statuses.append(app.test_client().get("/music?user=studio").status_code)

    threads = [threading.Thread(target=get) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    assert sandbox.state.call_count() == 1
