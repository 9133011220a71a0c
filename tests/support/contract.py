"""Check HTTP responses against the service's contract, openapi.yaml.

Call `check_response` on every response a test sees. It finds the documented operation for the
method and path, and asserts that the status is documented for it, that a body has a documented
media type, that a JSON body validates against the declared schema (JSON Schema Draft 2020-12,
`$ref`s resolved inside the document), and that the documented required headers are present
with values matching their schemas. Any mismatch raises AssertionError saying what and where.

Headers documented as optional (`required: false`, e.g. the rate-limit headers, which only
counted requests carry, or the CORS headers, which only configured origins get) may be absent,
but when present must match their schemas too. A response documented without `content` (a
304, a CORS preflight's `OPTIONS` 200) must have an empty body, whatever Content-Type the
framework put on it; a HEAD response never has a body, but its headers are checked as GET's.

Responses the document cannot list operation by operation are checked too:
- a path the document does not list must answer 404 as `#/components/responses/NotFound`,
  or (a configured origin's CORS preflight) an OPTIONS 200 as
  `#/components/responses/PreflightAnyPath`;
- a listed path asked with a method it does not list must answer 405 as that path's documented
  405 response.

headers may be any Mapping[str, str] (e.g. requests' headers) or werkzeug's `Headers`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import yaml
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError, best_match  # type: ignore[import-untyped]
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from . import problem_codes

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"
# The document's URI inside the schema registry; never fetched.
SPEC_URI = "https://music-facade.invalid/openapi.yaml"
METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
NOT_FOUND = "/components/responses/NotFound"
PREFLIGHT_ANY_PATH = "/x-preflight-any-path"


class HeaderItems(Protocol):
    """Anything with items() of (name, value): werkzeug's Headers as well as a Mapping."""

    def items(self) -> Iterable[tuple[str, str]]:
        """Every header as (name, value)."""
        ...


@cache
def _spec() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    assert isinstance(doc, dict), f"{SPEC_PATH} is not a YAML mapping"
    return doc


def spec() -> dict[str, Any]:
    """The parsed openapi.yaml (a copy: change it freely)."""
    return copy.deepcopy(_spec())


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def pointer_to(*tokens: str) -> str:
    """The JSON pointer for a path of keys, e.g. ("paths", "/music") → "/paths/~1music"."""
    return "".join("/" + _escape(t) for t in tokens)


def resolve_pointer(pointer: str) -> Any:
    """The node of openapi.yaml at a JSON pointer ("" is the whole document)."""
    node: Any = _spec()
    for token in pointer.split("/")[1:] if pointer else []:
        key = _unescape(token)
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise AssertionError(f"openapi.yaml has nothing at #{pointer}")
    return node


def deref(pointer: str) -> tuple[Any, str]:
    """The node at a pointer, following local `$ref`s; and the pointer where it really lives."""
    seen: set[str] = set()
    node = resolve_pointer(pointer)
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        ref: str = node["$ref"]
        assert ref.startswith("#"), f"#{pointer}: only local $refs are supported, not {ref!r}"
        assert pointer not in seen, f"#{pointer}: $ref cycle"
        seen.add(pointer)
        pointer = ref[1:]
        node = resolve_pointer(pointer)
    return node, pointer


@cache
def _registry() -> Registry[Any]:
    registry: Registry[Any] = Registry().with_resource(
        SPEC_URI, DRAFT202012.create_resource(_spec())
    )
    return registry


@cache
def _validator(schema_pointer: str) -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": f"{SPEC_URI}#{schema_pointer}"},
        registry=_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def _describe(error: ValidationError) -> str:
    where = error.json_path
    return f"at {where}: {error.message}"


def check_schema(schema_pointer: str, instance: object, what: str = "value") -> None:
    """Assert that instance validates against the schema at a pointer into openapi.yaml."""
    errors = list(_validator(schema_pointer).iter_errors(instance))
    if errors:
        best = best_match(errors)
        others = [_describe(e) for e in errors if e is not best][:4]
        more = "".join(f"\n  also {line}" for line in others)
        raise AssertionError(
            f"{what} does not match #{schema_pointer} {_describe(best)}{more}\n"
            f"  value: {json.dumps(instance, ensure_ascii=False)[:500]}"
        )


def _path_item(path: str) -> tuple[str, str] | None:
    """The documented path template matching a request path, and its pointer; None if none."""
    paths: dict[str, Any] = _spec().get("paths") or {}
    if path in paths:
        return path, pointer_to("paths", path)
    for template in paths:
        pattern = re.sub(r"\\\{[^}/]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return template, pointer_to("paths", template)
    return None


def _response_pointer(method: str, path: str, status: int) -> tuple[str, str]:
    """(what was matched, pointer to the response object) for one response, or AssertionError."""
    found = _path_item(path)
    if found is None:
        if method == "options" and status == 200:
            return f"OPTIONS {path} (a preflight for an undocumented path)", PREFLIGHT_ANY_PATH
        assert status == 404, (
            f"{method.upper()} {path}: the path is not documented, so the answer must be 404, "
            f"got {status}"
        )
        return f"{method.upper()} {path} (undocumented path)", NOT_FOUND
    template, item_pointer = found
    item, item_pointer = deref(item_pointer)
    documented = sorted(m for m in item if m in METHODS)
    if method not in item:
        label = f"{method.upper()} {template} (undocumented method; documented: {documented})"
        assert status == 405, f"{label}: the answer must be 405, got {status}"
        for other in documented:
            if "405" in item[other].get("responses", {}):
                return label, pointer_to(*_tokens(item_pointer), other, "responses", "405")
        raise AssertionError(f"{label}: no operation of the path documents a 405 response")
    label = f"{method.upper()} {template}"
    responses: dict[str, Any] = item[method].get("responses") or {}
    for key in (str(status), f"{status // 100}XX", "default"):
        if key in responses:
            return label, pointer_to(*_tokens(item_pointer), method, "responses", key)
    raise AssertionError(
        f"{label}: status {status} is not documented (documented: {sorted(responses)})"
    )


def _tokens(pointer: str) -> list[str]:
    return [_unescape(t) for t in pointer.split("/")[1:]] if pointer else []


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _documented_media_type(actual: str, content: Mapping[str, Any]) -> str | None:
    """The documented media type key that the actual media type matches, if any."""
    for key in content:
        documented = _media_type(key)
        if documented in (actual, "*/*"):
            return key
        if documented.endswith("/*") and actual.startswith(documented[:-1]):
            return key
    return None


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _check_headers(
    label: str, response_pointer: str, response: Mapping[str, Any], headers: Mapping[str, str]
) -> None:
    documented: Mapping[str, Any] = response.get("headers") or {}
    for name in documented:
        if name.lower() == "content-type":
            continue  # OpenAPI ignores a Content-Type header definition
        header, header_pointer = deref(pointer_to(*_tokens(response_pointer), "headers", name))
        value = headers.get(name.lower())
        if value is None:
            assert not header.get("required", False), (
                f"{label}: required header {name} is missing (headers: {sorted(headers)})"
            )
            continue
        if "schema" not in header:
            continue
        schema_pointer = header_pointer + "/schema"
        schema, _ = deref(schema_pointer)
        instance: object = value
        if isinstance(schema, dict) and schema.get("type") == "integer":
            assert re.fullmatch(r"-?[0-9]+", value.strip()), (
                f"{label}: header {name} must be an integer, got {value!r}"
            )
            instance = int(value)
        check_schema(schema_pointer, instance, f"{label}: header {name} {value!r}")


def check_response(
    method: str,
    path: str,
    status: int,
    headers: Mapping[str, str] | HeaderItems,
    body: bytes,
    *,
    served: bool = True,
) -> None:
    """Assert that one HTTP response is what openapi.yaml documents; AssertionError if not.

    path may carry a query string (ignored) or be a whole URL; headers match case-insensitively.
    A served response's problem code (a problem+json body's, a /library summary's) must be in
    the catalogue, and is recorded as emitted (tests.problem_codes); served=False is for a
    response a test made up to test this checker.
    """
    _check(method, path, status, headers, body)
    if served and method.lower() != "head":
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        problem_codes.record_response(f"{method.upper()} {path} → {status}", content_type, body)


def _check(
    method: str, path: str, status: int, headers: Mapping[str, str] | HeaderItems, body: bytes
) -> None:
    method = method.lower()
    path = urlsplit(path).path or "/"
    lower = {k.lower(): v for k, v in headers.items()}
    label, response_pointer = _response_pointer(method, path, status)
    label = f"{label} → {status}"
    response, response_pointer = deref(response_pointer)
    assert isinstance(response, dict), f"#{response_pointer} is not a response object"

    _check_headers(label, response_pointer, response, lower)

    content: Mapping[str, Any] = response.get("content") or {}
    content_type = lower.get("content-type")
    if method == "head":
        assert body == b"", f"{label}: a HEAD response must have no body, got {len(body)} bytes"
    elif not content:
        assert body == b"", (
            f"{label}: documented without a body, got {len(body)} bytes: {body[:200]!r}"
        )
    else:
        assert body != b"", f"{label}: documented with a body, got none"
    if not content or (method == "head" and content_type is None):
        return

    assert content_type is not None, f"{label}: a body without a Content-Type header"
    actual = _media_type(content_type)
    key = _documented_media_type(actual, content)
    assert key is not None, (
        f"{label}: Content-Type {content_type!r} is not documented (documented: {sorted(content)})"
    )
    if method == "head" or not _is_json(actual) or "schema" not in content[key]:
        return

    try:
        doc = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AssertionError(f"{label}: the body is not JSON ({exc}): {body[:200]!r}") from None
    schema_pointer = pointer_to(*_tokens(response_pointer), "content", key, "schema")
    check_schema(schema_pointer, doc, f"{label}: the body")

    if actual == "application/problem+json" and isinstance(doc, dict):
        assert doc.get("status") == status, (
            f"{label}: the problem's status {doc.get('status')!r} is not the HTTP status"
        )
        request_id = lower.get("x-request-id")
        if request_id is not None:
            assert doc.get("request_id") == request_id, (
                f"{label}: the problem's request_id {doc.get('request_id')!r} is not the "
                f"X-Request-ID header {request_id!r}"
            )


def iter_refs(node: Any, pointer: str = "") -> Iterator[tuple[str, str]]:
    """Every (pointer of the object holding it, `$ref` value) in a document, depth first."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield pointer, ref
        for key, value in node.items():
            yield from iter_refs(value, f"{pointer}/{_escape(str(key))}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from iter_refs(value, f"{pointer}/{index}")
