"""openapi.yaml is a valid OpenAPI 3.1 document, and tests.contract.check_response bites."""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from music_facade.core.problems import PROBLEMS
from tests.support import contract
from tests.support.contract import (
    METHODS,
    check_schema,
    deref,
    iter_refs,
    pointer_to,
    resolve_pointer,
    spec,
)
from tests.support.problem_codes import catalogue_codes

# The responses here are made up to test the checker: the service never emitted their codes.
check_response = functools.partial(contract.check_response, served=False)

TRACK: dict[str, Any] = {
    "id": "6dc9a08fa3e7d6a",
    "title": "Glass Horizon",
    "status": "completed",
    "progress": 100,
    "cover_url": "https://example.com/tempolor/cover/6dc9a08fa3e7d6a.png",
    "style": "Indie Folk",
    "mood": "Uplifting",
    "key": "A:minor",
    "bpm": 104,
    "duration_seconds": 194.5,
    "prompt": "An uplifting indie folk piece called Glass Horizon",
    "lyrics": "[Verse]\nGlass Horizon, calling through the night",
    "model": "v3.5",
    "created_at": "2025-05-14T22:40:40Z",
    "updated_at": "2025-05-14T22:43:54Z",
}
EMPTY_TRACK: dict[str, Any] = dict.fromkeys(TRACK) | {"status": "unknown"}
PAGE: dict[str, Any] = {
    "items": [TRACK, EMPTY_TRACK],
    "next_cursor": "eyJwYWdlIjoyfQ",
    "has_more": True,
}
REQUEST_ID = "3f2a9c1e0b7d4e6f8a5c2b1d0e9f7a6b"
COMMON = {"X-Request-ID": REQUEST_ID, "X-Content-Type-Options": "nosniff"}
PAGE_HEADERS = COMMON | {
    "Content-Type": "application/json",
    "ETag": '"5c1f0e4a9b7d2c3e8f6a1b0d4c9e7f2a"',
    "Cache-Control": "private, max-age=30",
    "Cache-Status": "music-facade; fwd=miss; stored",
}
PROBLEM_HEADERS = COMMON | {"Content-Type": "application/problem+json", "Cache-Control": "no-store"}
INVALID_QUERY: dict[str, Any] = {
    "type": "tag:music-facade,2026:problem/invalid_query",
    "title": "Invalid query parameters",
    "status": 400,
    "detail": "Invalid query parameter(s): page.",
    "code": "invalid_query",
    "request_id": REQUEST_ID,
    "errors": {"page": ["is not a parameter of /music (use user, type, cursor)"]},
}
NOT_FOUND: dict[str, Any] = {
    "type": "about:blank",
    "title": "Not Found",
    "status": 404,
    "detail": "The requested URL was not found on the server.",
    "code": "not_found",
    "request_id": REQUEST_ID,
}


def at(json_path: str, message: str = "") -> str:
    """A pattern for check_response's report of a schema error at a JSON path."""
    return re.escape(f"at {json_path}: ") + message


def dump(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) for every documented operation."""
    for path, item in spec()["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def responses() -> Iterator[tuple[str, str, str, dict[str, Any], str]]:
    """(path, method, status, response object, its pointer) for every documented response."""
    for path, method, operation in operations():
        for status in operation["responses"]:
            response, where = deref(pointer_to("paths", path, method, "responses", status))
            yield path, method, status, response, where


# --- the document ------------------------------------------------------------------------------


def test_document_is_valid_openapi_31() -> None:
    doc = spec()
    assert doc["openapi"].startswith("3.1.")
    validate(doc, cls=OpenAPIV31SpecValidator)


def test_document_is_plain_json_data() -> None:
    # YAML would silently turn an unquoted 2025-05-14T22:40:40Z into a datetime.
    assert json.loads(json.dumps(spec())) == spec()


def test_info_and_servers() -> None:
    doc = spec()
    assert doc["info"]["title"] == "music-facade"
    assert doc["info"]["version"] == "0.1.0"
    assert "useapi.net" in doc["info"]["description"]
    # One template, so a client generated from any deployment's document works against all.
    [server] = doc["servers"]
    assert server["url"] == "{baseUrl}"
    assert server["variables"]["baseUrl"]["default"] == "http://127.0.0.1:8080"
    # Every path answers GET, HEAD and OPTIONS (Flask adds the last two), except the one that
    # issues event-stream tickets: POST and OPTIONS. Nothing else.
    assert {(p, m) for p, m, _ in operations()} == {
        (path, method)
        for path in (
            "/",
            *("/music", "/music/{id}", "/music/{id}/audio", "/library", "/tracks", "/changes"),
            "/events",
            *("/healthz", "/readyz", "/metrics", "/openapi.yaml", "/openapi.json", "/docs"),
        )
        for method in ("get", "head", "options")
    } | {("/events/tickets", "post"), ("/events/tickets", "options")}


def test_every_ref_resolves() -> None:
    refs = list(iter_refs(spec()))
    assert len(refs) > 50
    for where, ref in refs:
        assert ref.startswith("#/"), f"#{where}: non-local $ref {ref!r}"
        resolve_pointer(ref[1:])  # AssertionError naming the pointer if it dangles


def test_every_component_is_used() -> None:
    used = {ref for _, ref in iter_refs(spec())}
    # Security schemes are named in security requirements, not $ref'd.
    for operation in [spec(), *(op for _, _, op in operations())]:
        for requirement in operation.get("security", []):
            used |= {f"#/components/securitySchemes/{name}" for name in requirement}
    for kind, named in spec()["components"].items():
        for name in named:
            assert f"#/components/{kind}/{name}" in used, f"components.{kind}.{name} is unused"


def test_every_error_response_is_a_problem() -> None:
    checked = 0
    for path, method, status, response, where in responses():
        if not status.startswith(("4", "5")) and status != "default":
            continue
        if method == "head":
            continue  # no body: test_head_responses_have_no_content
        checked += 1
        label = f"{method.upper()} {path} {status} (#{where})"
        assert set(response.get("content", {})) == {"application/problem+json"}, label
        schema = response["content"]["application/problem+json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Problem"}, label
        cache_control, _ = deref(f"{where}/headers/Cache-Control")
        assert cache_control["required"] is True, label
        assert cache_control["schema"]["const"] == "no-store", label
    assert checked >= 12


def test_every_response_carries_the_common_headers() -> None:
    for path, method, status, _, where in responses():
        for name in ("X-Request-ID", "X-Content-Type-Options"):
            header, _ = deref(f"{where}/headers/{name}")
            assert header["required"] is True, f"{method.upper()} {path} {status}: {name}"


def test_music_documents_every_status_the_service_answers() -> None:
    for method in ("get", "head"):
        documented = set(spec()["paths"]["/music"][method]["responses"])
        expected = {
            "200", "304", "400", "401", "403", "404", "405", "414", "429", "431", "500", "501",
            "502", "503", "504", "default",
        }  # fmt: skip
        assert documented == expected


def test_every_operation_documents_the_servers_refusals_and_a_default() -> None:
    # 414, 431 and 501 come from gunicorn before the app (music_facade.worker); anything else is
    # still a problem document, which `default` tells generated clients to parse.
    for path, method, operation in operations():
        assert {"414", "431", "501", "default"} <= set(operation["responses"]), (path, method)


def test_head_responses_have_no_content() -> None:
    # A generated client parses a documented body; HEAD never has one.
    found = 0
    for path, method, status, response, _ in responses():
        if method == "head":
            found += 1
            assert "content" not in response, f"HEAD {path} {status}"
    assert found > 30


@pytest.mark.parametrize(
    ("path", "operation_id"), [("/music", "listMusic"), ("/tracks", "listTracks")]
)
def test_paging_is_a_link(path: str, operation_id: str) -> None:
    # The 200 answer says how to get the next page: its next_cursor as the next call's cursor,
    # with every other query parameter as it was.
    get = spec()["paths"][path]["get"]
    assert get["operationId"] == operation_id
    response, _ = deref(pointer_to("paths", path, "get", "responses", "200"))
    link = response["links"]["nextPage"]
    assert link["operationId"] == operation_id
    assert link["parameters"]["cursor"] == "$response.body#/next_cursor"
    others = {deref(p["$ref"][1:])[0]["name"] for p in get["parameters"]}
    others -= {"cursor", "If-None-Match", "X-Request-ID", "traceparent"}
    assert {name: f"$request.query.{name}" for name in others} == {
        name: value for name, value in link["parameters"].items() if name != "cursor"
    }


def test_problem_codes_are_listed_but_open() -> None:
    problem = spec()["components"]["schemas"]["Problem"]
    code_schema = problem["properties"]["code"]
    assert "enum" not in code_schema
    listed = set(code_schema["examples"])
    assert listed == catalogue_codes(), (
        f"not listed: {sorted(catalogue_codes() - listed)}; "
        f"listed, not catalogued: {sorted(listed - catalogue_codes())}"
    )
    # The description's table: one row per catalogued code, with its status.
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| ([0-9]{3}) \|", problem["description"], re.MULTILINE)
    in_table = {code for code, _ in rows}
    assert in_table == catalogue_codes(), (
        f"not in the table: {sorted(catalogue_codes() - in_table)}; "
        f"in the table, not catalogued: {sorted(in_table - catalogue_codes())}"
    )
    for code, status in rows:
        assert PROBLEMS[code].status == int(status), code


def _examples(node: Any, pointer: str = "") -> Iterator[tuple[str, str, Any]]:
    """(schema pointer, example pointer, example) for every example next to a schema."""
    if isinstance(node, dict):
        if "schema" in node and isinstance(node["schema"], dict):
            schema = f"{pointer}/schema"
            if "example" in node:
                yield schema, f"{pointer}/example", node["example"]
            for name, example in (node.get("examples") or {}).items():
                yield schema, f"{pointer}/examples/{name}", example["value"]
            for index, example in enumerate(node["schema"].get("examples") or []):
                yield schema, f"{schema}/examples/{index}", example
        if "properties" in node and isinstance(node.get("examples"), list):
            for index, example in enumerate(node["examples"]):
                yield pointer, f"{pointer}/examples/{index}", example
        for key, value in node.items():
            escaped = str(key).replace("~", "~0").replace("/", "~1")
            yield from _examples(value, f"{pointer}/{escaped}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _examples(value, f"{pointer}/{index}")


def test_every_example_matches_its_schema() -> None:
    found = list(_examples(spec()))
    assert len(found) >= 15
    for schema, where, example in found:
        if deref(schema)[0].get("type") == "integer" and isinstance(example, str):
            example = int(example)
        check_schema(schema, example, f"the example at #{where}")


# --- check_response accepts what the service sends ---------------------------------------------


def test_accepts_a_page() -> None:
    check_response("GET", "/music?user=studio&type=song", 200, PAGE_HEADERS, dump(PAGE))


@pytest.mark.parametrize(
    "page",
    [
        {"items": [], "next_cursor": None, "has_more": False},
        {"items": [EMPTY_TRACK], "next_cursor": None, "has_more": False},
        {"items": [TRACK | {"progress": 0, "bpm": 87, "status": "generating"}],
         "next_cursor": "c:2/x", "has_more": True},
    ],
)  # fmt: skip
def test_accepts_other_pages(page: dict[str, Any]) -> None:
    check_response("GET", "/music", 200, PAGE_HEADERS, dump(page))


@pytest.mark.parametrize(
    "cache_status",
    [
        "music-facade; hit; ttl=12",
        "music-facade; fwd=miss; stored",
        "music-facade; fwd=stale; stored",
        "music-facade; fwd=stale; ttl=-40; detail=stale-if-error",
        "music-facade; fwd=miss; stored; collapsed",
        "music-facade; hit; ttl=3; collapsed",
        "music-facade; fwd=bypass",
    ],
)
def test_accepts_every_cache_status(cache_status: str) -> None:
    headers = PAGE_HEADERS | {"Cache-Status": cache_status}
    check_response("GET", "/music", 200, headers, dump(PAGE))


def test_header_names_are_case_insensitive() -> None:
    headers = {k.lower(): v for k, v in PAGE_HEADERS.items()}
    check_response("GET", "/music", 200, headers, dump(PAGE))


def test_accepts_head_and_not_modified_without_a_body() -> None:
    check_response("HEAD", "/music", 200, PAGE_HEADERS, b"")
    not_modified = {k: v for k, v in PAGE_HEADERS.items() if k != "Content-Type"}
    check_response("GET", "/music", 304, not_modified, b"")
    check_response("HEAD", "/music", 304, not_modified, b"")


def test_accepts_problems() -> None:
    check_response("GET", "/music?page=2", 400, PROBLEM_HEADERS, dump(INVALID_QUERY))
    unknown_user = INVALID_QUERY | {
        "type": "tag:music-facade,2026:problem/unknown_user",
        "code": "unknown_user",
        "title": "Unknown user alias",
    }
    del unknown_user["errors"]
    check_response("GET", "/music?user=x", 400, PROBLEM_HEADERS, dump(unknown_user))
    limited = unknown_user | {"status": 503, "code": "upstream_rate_limited"}
    headers = PROBLEM_HEADERS | {"Retry-After": "30"}
    check_response("GET", "/music", 503, headers, dump(limited))
    # A generic werkzeug code the table does not list is still a valid problem.
    bad_request = NOT_FOUND | {"status": 400, "code": "bad_request", "title": "Bad Request"}
    check_response("GET", "/music", 400, PROBLEM_HEADERS, dump(bad_request))


def test_accepts_unknown_paths_and_methods() -> None:
    check_response("GET", "/nope", 404, PROBLEM_HEADERS, dump(NOT_FOUND))
    not_allowed = NOT_FOUND | {"status": 405, "code": "method_not_allowed"}
    headers = PROBLEM_HEADERS | {"Allow": "GET, HEAD, OPTIONS"}
    check_response("POST", "/music", 405, headers, dump(not_allowed))
    check_response("DELETE", "/healthz", 405, headers, dump(not_allowed))


def test_accepts_health_and_the_document() -> None:
    health = COMMON | {"Content-Type": "application/json", "Cache-Control": "no-store"}
    check_response("GET", "/healthz", 200, health, b'{"status":"ok"}')
    yaml_headers = COMMON | {
        "Content-Type": "application/yaml",
        "Cache-Control": "public, max-age=300",
        "Vary": "Host",
    }
    check_response("GET", "/openapi.yaml", 200, yaml_headers, b"openapi: 3.1.0\n")


# --- check_response rejects what breaks the contract -------------------------------------------


def _page_with(change: Callable[[dict[str, Any]], None]) -> bytes:
    page = copy.deepcopy(PAGE)
    change(page)
    return dump(page)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            _page_with(lambda p: p["items"][0].update(extra=1)),
            at("$.items[0]", "Additional properties .*'extra' was unexpected"),
        ),
        (_page_with(lambda p: p["items"][0].pop("lyrics")), at("$.items[0]", "'lyrics' is a")),
        (_page_with(lambda p: p.pop("has_more")), at("$", "'has_more' is a required")),
        (_page_with(lambda p: p.update(total=2)), at("$", "Additional .*'total' was unexpected")),
        (_page_with(lambda p: p["items"][0].update(progress="100")), at("$.items[0].progress")),
        (_page_with(lambda p: p["items"][0].update(progress=100.5)), at("$.items[0].progress")),
        (_page_with(lambda p: p["items"][0].update(progress=101)), at("$.items[0].progress")),
        (_page_with(lambda p: p["items"][1].update(status=None)), at("$.items[1].status")),
        (_page_with(lambda p: p["items"][1].update(status="done")), at("$.items[1].status")),
        (_page_with(lambda p: p["items"][0].update(bpm="104")), at("$.items[0].bpm")),
        (_page_with(lambda p: p["items"][0].update(title="")), at("$.items[0].title")),
        (
            _page_with(lambda p: p["items"][0].update(created_at=1716565425000)),
            at("$.items[0].created_at"),
        ),
        (
            _page_with(lambda p: p["items"][0].update(created_at="2025-05-14 22:40")),
            at("$.items[0].created_at"),
        ),
        (_page_with(lambda p: p.update(items={})), at("$.items")),
        (_page_with(lambda p: p.update(next_cursor=None)), at("$.next_cursor")),
        (_page_with(lambda p: p.update(has_more=False)), at("$.next_cursor")),
        (_page_with(lambda p: p.update(next_cursor="has space")), at("$.next_cursor")),
        (b"", r"documented with a body"),
        (b"{not json", r"not JSON"),
        (b'{"items":[],"next_cursor":null,"has_more":NaN}', r"not JSON"),
    ],
)
def test_rejects_a_bad_page(body: bytes, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_response("GET", "/music", 200, PAGE_HEADERS, body)


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        # Undocumented statuses fall to `default`: a problem document, never a page.
        ("GET", "/music", 201, r"(Content-Type|Cache-Control)"),
        ("GET", "/music", 418, r"(Content-Type|Cache-Control)"),
        ("GET", "/healthz", 503, r"(Content-Type|Cache-Control)"),
        ("GET", "/nope", 200, r"must be 404"),
        ("POST", "/music", 200, r"must be 405"),
        ("PATCH", "/healthz", 204, r"must be 405"),
        ("OPTIONS", "/music", 405, r"(Content-Type|Cache-Control)"),
        ("OPTIONS", "/music", 401, r"(Content-Type|Cache-Control)"),
        ("OPTIONS", "/healthz", 429, r"(Content-Type|Cache-Control)"),
        ("GET", "/healthz", 401, r"(Content-Type|Cache-Control)"),
    ],
)
def test_rejects_a_wrong_status(method: str, path: str, status: int, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_response(method, path, status, PAGE_HEADERS, dump(PAGE))


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Content-Type": "text/html; charset=utf-8"}, r"Content-Type 'text/html"),
        ({"Content-Type": "application/problem+json"}, r"Content-Type"),
        ({"ETag": None}, r"required header ETag is missing"),
        ({"Cache-Status": None}, r"required header Cache-Status is missing"),
        ({"X-Request-ID": None}, r"required header X-Request-ID is missing"),
        ({"X-Content-Type-Options": None}, r"X-Content-Type-Options is missing"),
        ({"ETag": 'W/"5c1f0e4a9b7d2c3e8f6a1b0d4c9e7f2a"'}, r"header ETag"),
        ({"Cache-Control": "public, max-age=30"}, r"header Cache-Control"),
        ({"Cache-Status": "music-facade; miss"}, r"header Cache-Status"),
        ({"X-Request-ID": "has space"}, r"header X-Request-ID"),
    ],
)
def test_rejects_bad_page_headers(headers: dict[str, str | None], message: str) -> None:
    merged = {k: v for k, v in (PAGE_HEADERS | headers).items() if v is not None}
    with pytest.raises(AssertionError, match=message):
        check_response("GET", "/music", 200, merged, dump(PAGE))


@pytest.mark.parametrize(
    ("change", "headers", "message"),
    [
        ({"request_id": None}, {}, at("$", "'request_id' is a required")),
        ({"status": "400"}, {}, at("$.status")),
        ({"status": 404}, {}, r"not the HTTP status"),
        ({"errors": None}, {}, at("$", "'errors' is a required")),
        ({"errors": {"page": "unknown"}}, {}, at("$.errors.page")),
        ({"type": "https://example.com/problem"}, {}, at("$.type")),
        ({"hint": "try again"}, {}, at("$", "Additional .*'hint' was unexpected")),
        ({"request_id": "other"}, {}, r"not the X-Request-ID header"),
        ({}, {"Content-Type": "application/json"}, r"Content-Type 'application/json'"),
        ({}, {"Cache-Control": "private, max-age=0"}, r"header Cache-Control"),
    ],
)
def test_rejects_a_bad_problem(
    change: dict[str, Any], headers: dict[str, str], message: str
) -> None:
    problem = {k: v for k, v in (INVALID_QUERY | change).items() if v is not None}
    with pytest.raises(AssertionError, match=message):
        check_response("GET", "/music", 400, PROBLEM_HEADERS | headers, dump(problem))


def test_rejects_errors_on_other_problems() -> None:
    problem = NOT_FOUND | {"errors": {"x": ["y"]}}
    with pytest.raises(AssertionError, match=at("$", r"False schema does not allow")):
        check_response("GET", "/nope", 404, PROBLEM_HEADERS, dump(problem))


def test_rejects_bad_special_headers() -> None:
    limited = NOT_FOUND | {"status": 503, "code": "upstream_rate_limited"}
    with pytest.raises(AssertionError, match=r"required header Retry-After is missing"):
        check_response("GET", "/music", 503, PROBLEM_HEADERS, dump(limited))
    headers = PROBLEM_HEADERS | {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
    with pytest.raises(AssertionError, match=r"Retry-After must be an integer"):
        check_response("GET", "/music", 503, headers, dump(limited))
    not_allowed = NOT_FOUND | {"status": 405, "code": "method_not_allowed"}
    with pytest.raises(AssertionError, match=r"required header Allow is missing"):
        check_response("PUT", "/music", 405, PROBLEM_HEADERS, dump(not_allowed))


def test_rejects_bodies_where_none_belongs() -> None:
    with pytest.raises(AssertionError, match=r"HEAD response must have no body"):
        check_response("HEAD", "/music", 200, PAGE_HEADERS, dump(PAGE))
    with pytest.raises(AssertionError, match=r"documented without a body"):
        check_response("GET", "/music", 304, PAGE_HEADERS, dump(PAGE))


def test_spec_returns_a_copy() -> None:
    spec()["paths"].clear()
    assert "/music" in spec()["paths"]


# --- callers: client keys, rate limits, CORS, OPTIONS and HEAD ---------------------------------

RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": '"music";q=120;w=60',
    "RateLimit": '"music";r=119;t=60',
    "X-RateLimit-Limit": "120",
    "X-RateLimit-Remaining": "119",
    "X-RateLimit-Reset": "1795463461",
}
LIMITED_HEADERS = PROBLEM_HEADERS | {
    "Retry-After": "42",
    "RateLimit-Policy": '"music";q=120;w=60',
    "RateLimit": '"music";r=0;t=42',
    "X-RateLimit-Limit": "120",
    "X-RateLimit-Remaining": "0",
    "X-RateLimit-Reset": "1795463461",
}
UNAUTHORIZED: dict[str, Any] = {
    "type": "tag:music-facade,2026:problem/credential_missing",
    "title": "A credential is required",
    "status": 401,
    "detail": "Send 'Authorization: Bearer <credential>'.",
    "code": "credential_missing",
    "request_id": REQUEST_ID,
}
NOT_ALLOWED = UNAUTHORIZED | {
    "type": "tag:music-facade,2026:problem/user_not_allowed",
    "title": "This client may not read that account",
    "status": 403,
    "code": "user_not_allowed",
}
RATE_LIMITED = UNAUTHORIZED | {
    "type": "tag:music-facade,2026:problem/rate_limited",
    "title": "Too many requests",
    "status": 429,
    "code": "rate_limited",
}
SCOPE_CHALLENGE = 'Bearer realm="music", error="insufficient_scope"'
CORS = {
    "Access-Control-Allow-Origin": "https://app.example.com",
    "Access-Control-Expose-Headers": "Cache-Status, ETag, RateLimit, X-Request-ID",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "authorization, if-none-match",
    "Access-Control-Max-Age": "600",
    "Vary": "Origin",
}
PREFLIGHT_HEADERS = COMMON | {"Allow": "HEAD, OPTIONS, GET"}


def test_client_key_scheme_is_http_bearer() -> None:
    scheme = spec()["components"]["securitySchemes"]["clientKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert "music-facade mint-key" in scheme["description"]
    assert "open" in scheme["description"]


def test_only_music_reads_need_a_key_and_open_mode_is_documented() -> None:
    for path, method, operation in operations():
        label = f"{method.upper()} {path}"
        reads = (
            *("/music", "/music/{id}", "/music/{id}/audio", "/library", "/tracks", "/changes"),
            "/events",
        )
        if (path in reads and method in ("get", "head")) or (
            (path, method) == ("/events/tickets", "post")
        ):
            # The document's own `security`: required; the served one drops it in open mode
            # (tests/contract/test_served_contract.py).
            assert "security" not in operation, label
        else:
            assert operation["security"] == [], label
    assert spec()["security"] == [{"clientKey": []}, {"oidcToken": []}]


def test_head_mirrors_get_on_every_path() -> None:
    paths = spec()["paths"]
    for path, item in paths.items():
        if "get" not in item:
            continue  # /events/tickets: POST only
        # The same statuses, but HEAD's responses describe no body.
        assert set(item["head"]["responses"]) == set(item["get"]["responses"]), path
        assert item["head"]["parameters"] == item["get"]["parameters"], path
        assert item["head"].get("security") == item["get"].get("security"), path


def test_options_is_an_unauthenticated_unlimited_bodiless_200() -> None:
    for path, item in spec()["paths"].items():
        options = item["options"]
        assert set(options["responses"]) == {"200", "404", "414", "431", "500", "501", "default"}
        preflight, _ = deref(pointer_to("paths", path, "options", "responses", "200"))
        assert "content" not in preflight, path
        assert preflight["headers"]["Allow"] == {"$ref": "#/components/headers/Allow"}, path
        assert not any(name.lower().startswith(("ratelimit", "x-ratelimit"))
                       for name in preflight["headers"]), path  # fmt: skip
        names = {p["$ref"].rsplit("/", 1)[1] for p in options["parameters"]}
        assert names == {"Origin", "AccessControlRequestMethod", "AccessControlRequestHeaders",
                         "RequestId", "Traceparent"}, path  # fmt: skip


def _header_names(where: str) -> dict[str, dict[str, Any]]:
    response, pointer = deref(where)
    return {
        name: deref(f"{pointer}/headers/{name.replace('~', '~0').replace('/', '~1')}")[0]
        for name in response.get("headers", {})
    }


LIMIT_HEADER_NAMES = tuple(RATE_LIMIT_HEADERS)


def test_rate_limit_headers_are_optional_on_counted_music_responses() -> None:
    for method in ("get", "head"):
        for status in spec()["paths"]["/music"][method]["responses"]:
            headers = _header_names(pointer_to("paths", "/music", method, "responses", status))
            label = f"{method.upper()} /music {status}"
            if status in ("404", "405", "414", "431", "501", "default"):
                # Never answered for /music itself (404) / answered before any limit (405, and
                # the server's own refusals).
                assert not set(LIMIT_HEADER_NAMES) & set(headers), label
                continue
            for name in LIMIT_HEADER_NAMES:
                assert name in headers, f"{label}: {name}"
                if method == "get":
                    assert headers[name]["required"] is (status == "429"), f"{label}: {name}"


def test_rate_limited_headers_repeat_the_optional_schemas() -> None:
    limited = _header_names("/components/responses/RateLimited")
    for name in LIMIT_HEADER_NAMES:
        component = spec()["components"]["headers"][name.replace("-", "")]
        schema = {k: v for k, v in component["schema"].items() if k != "examples"}
        assert limited[name]["schema"] == schema, name
    retry = limited["Retry-After"]
    assert retry["required"] is True
    assert retry["schema"]["type"] == "integer"
    assert retry["schema"]["minimum"] == 1


def test_meta_paths_are_never_counted() -> None:
    for path in ("/healthz", "/openapi.yaml"):
        for method in ("get", "head", "options"):
            for status in spec()["paths"][path][method]["responses"]:
                where = pointer_to("paths", path, method, "responses", status)
                assert not set(LIMIT_HEADER_NAMES) & set(_header_names(where)), (path, status)


def test_auth_problems_carry_their_challenge() -> None:
    unauthorized = _header_names("/components/responses/Unauthorized")["WWW-Authenticate"]
    assert unauthorized["required"] is True
    for example in unauthorized["schema"]["examples"]:
        assert example.startswith('Bearer realm="music"')
    forbidden = _header_names("/components/responses/UserNotAllowed")["WWW-Authenticate"]
    assert forbidden["required"] is True
    assert forbidden["schema"]["const"] == SCOPE_CHALLENGE


def test_cors_exposed_headers_are_documented() -> None:
    from music_facade.cors import ALLOW_HEADERS, EXPOSE_HEADERS

    description = spec()["info"]["description"]
    exposed = spec()["components"]["headers"]["AccessControlExposeHeaders"]["example"]
    for name in EXPOSE_HEADERS:
        assert f"`{name}`" in description, name
        assert name in exposed.split(", "), name
    for name in ALLOW_HEADERS:
        assert f"`{name}`" in description, name


def test_parameter_patterns_are_the_services_own_rules() -> None:
    from music_facade.core.alias import ALIAS_PATTERN
    from music_facade.core.query import CURSOR_PATTERN, ITEM_ID_PATTERN

    # The service anchors with \A and \Z (Python's $ also matches before a newline), the
    # contract with ^ and $ (ECMA-262, where they do not).
    for name, pattern in [
        ("User", ALIAS_PATTERN),
        ("Cursor", CURSOR_PATTERN),
        ("TrackId", ITEM_ID_PATTERN),
    ]:
        assert (pattern[:2], pattern[-2:]) == ("\\A", "\\Z"), name
        schema = deref(pointer_to("components", "parameters", name, "schema"))[0]
        assert schema["pattern"] == f"^{pattern[2:-2]}$", name


def test_every_user_parameter_is_the_one_alias_schema() -> None:
    # One named plain string, never an enum: a generated client takes user="studio" on every
    # operation and is not tied to one deployment's aliases.
    parameters = spec()["components"]["parameters"]
    assert parameters["User"]["schema"] == {"$ref": "#/components/schemas/Alias"}
    assert parameters["MirrorUser"]["schema"] == {"$ref": "#/components/schemas/Aliases"}
    alias = spec()["components"]["schemas"]["Alias"]
    assert alias["type"] == "string"
    assert "enum" not in alias
    for path, method, operation in operations():
        for parameter in operation.get("parameters", []):
            target = deref(parameter["$ref"][1:])[0] if "$ref" in parameter else parameter
            if target["name"] == "user":
                assert parameter["$ref"] in (
                    "#/components/parameters/User",
                    "#/components/parameters/MirrorUser",
                ), (path, method)


def test_optional_parameters_have_nothing_swagger_ui_would_prefill() -> None:
    # Swagger UI 5 fills "Try it out" from a parameter's `example` or `examples` and from its
    # schema's `example` (tests/live/test_docs_browser.py shows schema `examples` stay out).
    # A schema's `default` may stay: it is what the service assumes anyway.
    for name, parameter in spec()["components"]["parameters"].items():
        if parameter.get("required"):
            continue
        assert "example" not in parameter, name
        assert "examples" not in parameter, name
        assert "example" not in parameter["schema"], name


def test_accepts_counted_music_responses() -> None:
    check_response("GET", "/music", 200, PAGE_HEADERS | RATE_LIMIT_HEADERS, dump(PAGE))
    check_response("HEAD", "/music", 200, PAGE_HEADERS | RATE_LIMIT_HEADERS, b"")
    not_modified = {k: v for k, v in PAGE_HEADERS.items() if k != "Content-Type"}
    check_response("GET", "/music", 304, not_modified | RATE_LIMIT_HEADERS, b"")
    headers = PROBLEM_HEADERS | RATE_LIMIT_HEADERS
    check_response("GET", "/music?page=2", 400, headers, dump(INVALID_QUERY))
    error = NOT_FOUND | {"status": 502, "code": "upstream_error"}
    check_response("GET", "/music", 502, headers, dump(error))
    internal = NOT_FOUND | {"status": 500, "code": "internal_error"}
    check_response("GET", "/music", 500, headers, dump(internal))
    # Open mode without a per-address limit: nothing counted, no headers.
    check_response("GET", "/music", 200, PAGE_HEADERS, dump(PAGE))


@pytest.mark.parametrize(
    "challenge",
    [
        'Bearer realm="music"',
        'Bearer realm="music", error="invalid_request"',
        'Bearer realm="music", error="invalid_token"',
    ],
)
def test_accepts_unauthorized(challenge: str) -> None:
    headers = PROBLEM_HEADERS | {"WWW-Authenticate": challenge}
    check_response("GET", "/music", 401, headers, dump(UNAUTHORIZED))
    check_response("GET", "/music", 401, headers | RATE_LIMIT_HEADERS, dump(UNAUTHORIZED))
    check_response("HEAD", "/music", 401, headers, b"")


def test_accepts_user_not_allowed_and_rate_limited() -> None:
    headers = PROBLEM_HEADERS | {"WWW-Authenticate": SCOPE_CHALLENGE} | RATE_LIMIT_HEADERS
    check_response("GET", "/music?user=edge", 403, headers, dump(NOT_ALLOWED))
    check_response("GET", "/music", 429, LIMITED_HEADERS, dump(RATE_LIMITED))
    check_response("HEAD", "/music", 429, LIMITED_HEADERS, b"")


def test_accepts_a_preflight_for_an_unknown_path() -> None:
    # A configured origin's preflight is answered for any path, without Allow.
    headers = {k: v for k, v in PREFLIGHT_HEADERS.items() if k != "Allow"}
    check_response("OPTIONS", "/musics", 200, headers, b"")
    with pytest.raises(AssertionError, match="must be 404"):
        check_response("GET", "/musics", 200, headers, b"")


@pytest.mark.parametrize("path", ["/music", "/healthz", "/openapi.yaml"])
def test_accepts_preflights(path: str) -> None:
    # What Flask answers by itself: an empty text/html body.
    flask = PREFLIGHT_HEADERS | {"Content-Type": "text/html; charset=utf-8"}
    check_response("OPTIONS", path, 200, flask, b"")
    check_response("OPTIONS", path, 200, PREFLIGHT_HEADERS | CORS, b"")
    check_response("OPTIONS", path + "?user=studio", 200, PREFLIGHT_HEADERS, b"")


def test_accepts_head_of_the_meta_paths() -> None:
    health = COMMON | {"Content-Type": "application/json", "Cache-Control": "no-store"}
    check_response("HEAD", "/healthz", 200, health, b"")
    yaml_headers = COMMON | {
        "Content-Type": "application/yaml",
        "Cache-Control": "public, max-age=300",
        "Vary": "Host",
    }
    check_response("HEAD", "/openapi.yaml", 200, yaml_headers, b"")


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"RateLimit-Policy": "120;w=60"}, r"header RateLimit-Policy"),
        ({"RateLimit": '"music";r=-1;t=60'}, r"header RateLimit"),
        ({"X-RateLimit-Limit": "many"}, r"X-RateLimit-Limit must be an integer"),
        ({"X-RateLimit-Remaining": "-1"}, r"header X-RateLimit-Remaining"),
        ({"X-RateLimit-Reset": "Wed, 21 Oct 2015 07:28:00 GMT"}, r"X-RateLimit-Reset must be"),
    ],
)
def test_rejects_bad_rate_limit_headers(headers: dict[str, str], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_response("GET", "/music", 200, PAGE_HEADERS | headers, dump(PAGE))


@pytest.mark.parametrize(
    ("status", "headers", "body", "message"),
    [
        (401, {}, UNAUTHORIZED, r"required header WWW-Authenticate is missing"),
        (401, {"WWW-Authenticate": "Basic realm=\"music\""}, UNAUTHORIZED,
         r"header WWW-Authenticate"),
        (401, {"WWW-Authenticate": 'Bearer realm="music", error="insufficient_scope"'},
         UNAUTHORIZED, r"header WWW-Authenticate"),
        (403, {"WWW-Authenticate": 'Bearer realm="music"'}, NOT_ALLOWED,
         r"header WWW-Authenticate"),
        (403, {}, NOT_ALLOWED, r"required header WWW-Authenticate is missing"),
        (401, {"WWW-Authenticate": 'Bearer realm="music"'}, NOT_ALLOWED,
         r"not the HTTP status"),
    ],
)  # fmt: skip
def test_rejects_bad_auth_problems(
    status: int, headers: dict[str, str], body: dict[str, Any], message: str
) -> None:
    with pytest.raises(AssertionError, match=message):
        check_response("GET", "/music", status, PROBLEM_HEADERS | headers, dump(body))


@pytest.mark.parametrize(
    ("drop", "change", "message"),
    [
        ("Retry-After", {}, r"required header Retry-After is missing"),
        ("RateLimit", {}, r"required header RateLimit is missing"),
        ("RateLimit-Policy", {}, r"required header RateLimit-Policy is missing"),
        ("X-RateLimit-Reset", {}, r"required header X-RateLimit-Reset is missing"),
        (None, {"Retry-After": "0"}, r"header Retry-After"),
        (None, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, r"Retry-After must be an"),
    ],
)
def test_rejects_bad_rate_limited(drop: str | None, change: dict[str, str], message: str) -> None:
    headers = {k: v for k, v in (LIMITED_HEADERS | change).items() if k != drop}
    with pytest.raises(AssertionError, match=message):
        check_response("GET", "/music", 429, headers, dump(RATE_LIMITED))


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        (PREFLIGHT_HEADERS, b"<p>hi</p>", r"documented without a body"),
        ({k: v for k, v in PREFLIGHT_HEADERS.items() if k != "Allow"}, b"",
         r"required header Allow is missing"),
        (PREFLIGHT_HEADERS | {"Access-Control-Allow-Origin": "*"}, b"",
         r"header Access-Control-Allow-Origin"),
        (PREFLIGHT_HEADERS | {"Access-Control-Max-Age": "ten minutes"}, b"",
         r"Access-Control-Max-Age must be an integer"),
        ({k: v for k, v in PREFLIGHT_HEADERS.items() if k != "X-Request-ID"}, b"",
         r"required header X-Request-ID is missing"),
    ],
)  # fmt: skip
def test_rejects_bad_preflights(headers: dict[str, str], body: bytes, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_response("OPTIONS", "/music", 200, headers, body)


def test_head_and_options_are_under_their_own_tag_listed_last() -> None:
    # The docs page collapses this tag (music_facade/docs_page.py): the GET/POST operations
    # come first, the variants one click away.
    from music_facade.docs_page import VARIANTS_TAG

    assert spec()["tags"][-1]["name"] == VARIANTS_TAG
    for path, method, operation in operations():
        variant = method in ("head", "options")
        assert (operation["tags"] == [VARIANTS_TAG]) == variant, (path, method)
