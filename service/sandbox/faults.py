"""Fault specs the sandbox can inject, how each is parsed, and how each is produced."""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar

from flask import Response

from service.sandbox.data import RECORD_FIELDS

JSON = "application/json"
EMPTY_PAGE = b'{"records": [], "hasNext": false, "cursor": ""}'
MALFORMED_BODY = b'{"records": [{"itemId": "x"'
LONG_STRING_CHARS = 100_000

_MAX_SECONDS = 3600.0
_MAX_BYTES = 1 << 30
_MAX_DEPTH = 10_000_000
_DRIP_CHUNK = 4
_STREAM_CHUNK = 1 << 16


class Released(ConnectionAbortedError):
    """A streamed body was cut short by reset/stop.

    A ConnectionError, so Werkzeug's server drops the connection quietly without writing the
    final chunk: the client sees a truncated body, not a complete one.
    """


@dataclass(frozen=True)
class FaultContext:
    """What producing a fault may use: the release event and the normal answer."""

    release: threading.Event
    normal: Callable[[], Response]


@dataclass(frozen=True)
class Fault:
    """A fault spec; apply() returns the response to send instead, or None to answer normally."""

    kind: ClassVar[str] = ""

    def apply(self, ctx: FaultContext) -> Response | None:
        """Produce the fault: wait and/or return a replacement response."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """The spec as the JSON object that would parse back to it."""
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class Latency(Fault):
    """Wait, then answer normally."""

    kind: ClassVar[str] = "latency"
    seconds: float = 0.5

    def apply(self, ctx: FaultContext) -> Response | None:
        """Sleep (cut short by reset/stop), then let the normal answer through."""
        ctx.release.wait(self.seconds)
        return None


@dataclass(frozen=True)
class Status(Fault):
    """Answer a chosen status with a chosen body and headers."""

    kind: ClassVar[str] = "status"
    status: int = 503
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = JSON

    def apply(self, ctx: FaultContext) -> Response | None:
        """The status answer; a str body is sent as-is, anything else as JSON."""
        if self.body is None:
            data = json.dumps({"error": reason(self.status), "code": self.status})
        elif isinstance(self.body, str):
            data = self.body
        else:
            data = json.dumps(self.body)
        # Werkzeug answers "596 UNKNOWN" for codes it does not know: spell the status line out.
        line = f"{self.status} {reason(self.status).upper()}"
        resp = Response(data, status=line, content_type=self.content_type)
        resp.headers.update(self.headers)
        return resp

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON, leaving out an absent body."""
        spec: dict[str, Any] = {
            "kind": self.kind,
            "status": self.status,
            "headers": dict(self.headers),
            "content_type": self.content_type,
        }
        if self.body is not None:
            spec["body"] = self.body
        return spec


@dataclass(frozen=True)
class Malformed(Fault):
    """200 with truncated JSON."""

    kind: ClassVar[str] = "malformed"

    def apply(self, ctx: FaultContext) -> Response | None:
        """The truncated body."""
        return Response(MALFORMED_BODY, status=200, content_type=JSON)


@dataclass(frozen=True)
class Hang(Fault):
    """Send nothing until the time passes or the sandbox is reset/stopped, then answer."""

    kind: ClassVar[str] = "hang"
    seconds: float = 60.0

    def apply(self, ctx: FaultContext) -> Response | None:
        """Block before any byte is sent, then let the normal answer through."""
        ctx.release.wait(self.seconds)
        return None


@dataclass(frozen=True)
class Oversized(Fault):
    """200 with a valid page of about `bytes` bytes, streamed without Content-Length."""

    kind: ClassVar[str] = "oversized"
    bytes: int = 6_000_000

    def apply(self, ctx: FaultContext) -> Response | None:
        """One record whose titleEn fills the page, streamed in 64 KiB chunks."""
        return Response(_oversized(self.bytes, ctx.release), status=200, content_type=JSON)


@dataclass(frozen=True)
class Drip(Fault):
    """200 at once, then the body a few bytes per interval for `seconds`, then the rest."""

    kind: ClassVar[str] = "drip"
    interval: float = 0.5
    seconds: float = 30.0

    def apply(self, ctx: FaultContext) -> Response | None:
        """The normal page (or an empty one if the request would fail), dripped."""
        normal = ctx.normal()
        body = normal.get_data() if normal.status_code == 200 else EMPTY_PAGE
        chunks = _drip(body, self.interval, self.seconds, ctx.release)
        return Response(chunks, status=200, content_type=JSON)


@dataclass(frozen=True)
class Deep(Fault):
    """200 with a valid page whose one record nests arrays `depth` levels deep."""

    kind: ClassVar[str] = "deep"
    depth: int = 100_000

    def apply(self, ctx: FaultContext) -> Response | None:
        """The nested page, built as a string so no Python recursion is involved."""
        nested = "[" * self.depth + "]" * self.depth
        body = f'{{"records": [{{"itemId": "deep", "titleEn": {nested}}}], '
        body += '"hasNext": false, "cursor": ""}'
        return Response(body, status=200, content_type=JSON)


@dataclass(frozen=True)
class WrongTypes(Fault):
    """200 with a valid page whose records have the wrong JSON type in every field."""

    kind: ClassVar[str] = "wrong_types"

    def apply(self, ctx: FaultContext) -> Response | None:
        """The wrong-typed page, built once."""
        return Response(wrong_types_page(), status=200, content_type=JSON)


KINDS: Mapping[str, type[Fault]] = {
    cls.kind: cls for cls in (Latency, Status, Malformed, Hang, Oversized, Drip, Deep, WrongTypes)
}


def reason(status: int) -> str:
    """The HTTP reason phrase for a status; useapi.net's 596 is a "pending error"."""
    if status == 596:
        return "pending error"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown Status"


def parse_fault(spec: Any) -> Fault:
    """A Fault from its JSON object (or a Fault as-is); ValueError names what is wrong."""
    if isinstance(spec, Fault):
        return spec
    if not isinstance(spec, Mapping):
        raise ValueError("a fault must be a JSON object with a 'kind'")
    params = dict(spec)
    kind = params.pop("kind", None)
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    parse = _PARSERS[kind]
    allowed = _PARAMS[kind]
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"{kind} fault: unknown parameter(s) {', '.join(map(str, unknown))}")
    return parse(params)


def _number(params: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}")
    return float(value)


def _integer(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}")
    return value


def _parse_status(params: Mapping[str, Any]) -> Fault:
    if "status" not in params:
        raise ValueError("status fault: status is required")
    status = _integer(params, "status", 503, 200, 599)
    body = params.get("body")
    try:
        json.dumps(body)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"status fault: body is not JSON: {exc}") from None
    headers = params.get("headers", {})
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ValueError("status fault: headers must be an object of strings")
    for name, value in headers.items():
        if not name or any(c in name + value for c in "\r\n\0") or ":" in name:
            raise ValueError(f"status fault: bad header {name!r}")
    content_type = params.get("content_type", JSON)
    if not isinstance(content_type, str) or not content_type or "\n" in content_type:
        raise ValueError("status fault: content_type must be a non-empty string")
    return Status(status, body, dict(headers), content_type)


_PARSERS: Mapping[str, Callable[[Mapping[str, Any]], Fault]] = {
    "latency": lambda p: Latency(_number(p, "seconds", 0.5, 0, _MAX_SECONDS)),
    "status": _parse_status,
    "malformed": lambda p: Malformed(),
    "hang": lambda p: Hang(_number(p, "seconds", 60, 0, _MAX_SECONDS)),
    "oversized": lambda p: Oversized(_integer(p, "bytes", 6_000_000, 0, _MAX_BYTES)),
    "drip": lambda p: Drip(
        _number(p, "interval", 0.5, 0.001, 60), _number(p, "seconds", 30, 0, _MAX_SECONDS)
    ),
    "deep": lambda p: Deep(_integer(p, "depth", 100_000, 1, _MAX_DEPTH)),
    "wrong_types": lambda p: WrongTypes(),
}
_PARAMS: Mapping[str, frozenset[str]] = {
    "latency": frozenset({"seconds"}),
    "status": frozenset({"status", "body", "headers", "content_type"}),
    "malformed": frozenset(),
    "hang": frozenset({"seconds"}),
    "oversized": frozenset({"bytes"}),
    "drip": frozenset({"interval", "seconds"}),
    "deep": frozenset({"depth"}),
    "wrong_types": frozenset(),
}


def _oversized(size: int, release: threading.Event) -> Iterator[bytes]:
    head = b'{"records": [{"itemId": "oversized", "titleEn": "'
    tail = b'"}], "hasNext": false, "cursor": ""}'
    yield head
    left = max(0, size - len(head) - len(tail))
    block = b"x" * _STREAM_CHUNK
    while left > 0:
        if release.is_set():
            raise Released("oversized body released")
        yield block[:left]
        left -= len(block)
    yield tail


def _drip(
    body: bytes, interval: float, seconds: float, release: threading.Event
) -> Iterator[bytes]:
    # Leading whitespace keeps the JSON valid while making the trickle last the whole time.
    ticks = math.ceil(seconds / interval)
    body = b" " * max(0, ticks * _DRIP_CHUNK - len(body)) + body
    deadline = time.monotonic() + seconds
    yield b""  # Werkzeug sends the status line and headers on the first item, even an empty one.
    pos = 0
    while pos < len(body):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            yield body[pos:]
            return
        yield body[pos : pos + _DRIP_CHUNK]
        pos += _DRIP_CHUNK
        if pos < len(body) and release.wait(min(interval, remaining)):
            raise Released("drip released")


def _wrong_value(kind: Any, index: int) -> Any:
    """A value of some JSON type other than `kind`, chosen by rotation."""
    choices: tuple[Any, ...]
    if kind == "string":
        choices = (index, True, {"value": "x"}, [str(index)], 3.5)
    elif kind == "number":
        choices = (str(index), {"value": index}, True, [index], "NaN")
    elif kind == "boolean":
        choices = ("true", 1, [False], {"value": True}, "no")
    else:
        choices = ("object", [{"value": "x"}], index, False, "")
    return choices[index % len(choices)]


def _wrong_record(variant: int) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for index, (name, kind) in enumerate(RECORD_FIELDS.items()):
        if isinstance(kind, Mapping) and variant % 2:
            # Present as an object, but with every member of the wrong type.
            record[name] = {
                sub: _wrong_value(sub_kind, variant + i)
                for i, (sub, sub_kind) in enumerate(kind.items())
            }
        else:
            record[name] = _wrong_value(kind, variant + index)
    return record


@functools.cache
def wrong_types_page() -> bytes:
    """A valid page of three records with wrong types everywhere and a few 100 kB strings."""
    records = [_wrong_record(variant) for variant in range(3)]
    long = "w" * LONG_STRING_CHARS
    # Very long strings where numbers, objects and booleans belong.
    records[0]["createTime"] = long
    records[1]["progress"] = long
    records[2]["musicMaterial"] = long
    records[2]["canExtend"] = long
    return json.dumps({"records": records, "hasNext": False, "cursor": ""}).encode()
