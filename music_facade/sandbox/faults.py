"""Fault specs the sandbox can inject, how each is parsed, and how each is produced."""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http import HTTPStatus
from typing import Any, ClassVar

from flask import Response, request

from music_facade.sandbox.data import RECORD_FIELDS, SONG, full_record

JSON = "application/json"
EMPTY_PAGE = b'{"records": [], "hasNext": false, "cursor": ""}'
_INVALID_CURSOR = json.dumps({"error": "Invalid cursor", "code": 400})
MALFORMED_BODY = b'{"records": [{"itemId": "x"'
LONG_STRING_CHARS = 100_000

_MAX_SECONDS = 3600.0
_MAX_BYTES = 1 << 30
_MAX_DEPTH = 10_000_000
_MAX_RECORDS = 5000
_DRIP_CHUNK = 4
_STREAM_CHUNK = 1 << 16


class Released(ConnectionAbortedError):
    """A streamed body was cut short by reset/stop.

    A ConnectionError, so Werkzeug's server drops the connection quietly without writing the
    final chunk: the client sees a truncated body, not a complete one.
    """


class RawAnswered(ConnectionAbortedError):
    """A fault wrote its whole answer straight to the socket; Werkzeug must add nothing.

    A ConnectionError, so Werkzeug's server ends the exchange quietly.
    """


RawWriter = Callable[[bytes], None]
"""Writes bytes straight to the client's socket, below Werkzeug's response writer."""


@dataclass(frozen=True)
class FaultContext:
    """What producing a fault may use: the release event, the normal answer, the raw socket."""

    release: threading.Event
    normal: Callable[[], Response]
    raw: RawWriter | None = None


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


CDN_REASONS: Mapping[int, str] = {
    520: "Web Server Returned an Unknown Error",
    521: "Web Server Is Down",
    522: "Connection Timed Out",
    523: "Origin Is Unreachable",
    524: "A Timeout Occurred",
    525: "SSL Handshake Failed",
    526: "Invalid SSL Certificate",
}
"""The CDN edge's own statuses (Cloudflare's names), answered with an HTML page."""

_CDN_PAGE = """<!DOCTYPE html>
<html lang="en-US"><head><title>api.useapi.net | {status}: {reason}</title>
<meta charset="UTF-8" /></head>
<body><div id="cf-error-details"><h1>{reason}</h1><span>Error code {status}</span>
<p>Visit <a href="https://www.cloudflare.com/">cloudflare.com</a> for more information.</p>
<p>Ray ID: 8f3a2b1c4d5e6f70 &bull; {when}</p></div></body></html>
"""


@dataclass(frozen=True)
class Cdn(Fault):
    """The CDN edge's own HTML error page (520-526), as when the origin is in trouble."""

    kind: ClassVar[str] = "cdn"
    status: int = 522

    def apply(self, ctx: FaultContext) -> Response | None:
        """The edge's HTML page with its status line."""
        name = reason(self.status)
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        page = _CDN_PAGE.format(status=self.status, reason=name, when=when)
        return Response(
            page, status=f"{self.status} {name}", content_type="text/html; charset=UTF-8"
        )


@dataclass(frozen=True)
class Redirect(Fault):
    """A redirect to another host (where the bearer token must never follow)."""

    kind: ClassVar[str] = "redirect"
    status: int = 302
    location: str = "https://elsewhere.example/v1/tempolor/music/"

    def apply(self, ctx: FaultContext) -> Response | None:
        """The redirect, with a small JSON body as some edges send."""
        body = json.dumps({"error": "moved", "location": self.location})
        resp = Response(body, status=f"{self.status} {reason(self.status)}", content_type=JSON)
        resp.headers["Location"] = self.location
        return resp


@dataclass(frozen=True)
class GzipBomb(Fault):
    """200 whose gzip body is about 1/1000 of its decoded size (1 GiB decoded by default)."""

    kind: ClassVar[str] = "gzip_bomb"
    decoded_bytes: int = 1 << 30

    def apply(self, ctx: FaultContext) -> Response | None:
        """The bomb, with its honest (wire) Content-Length."""
        resp = Response(gzip_bomb(self.decoded_bytes), status=200, content_type=JSON)
        resp.headers["Content-Encoding"] = "gzip"
        return resp


@dataclass(frozen=True)
class UnknownEncoding(Fault):
    """The normal answer labelled with a content encoding the client never asked for."""

    kind: ClassVar[str] = "unknown_encoding"
    encoding: str = "zstd"

    def apply(self, ctx: FaultContext) -> Response | None:
        """The normal answer's bytes under a foreign Content-Encoding."""
        resp = ctx.normal()
        resp.headers["Content-Encoding"] = self.encoding
        return resp


@dataclass(frozen=True)
class ErrorBody(Fault):
    """200 whose body is an error document, as a failing origin behind some gateways sends."""

    kind: ClassVar[str] = "error_body"
    error: str = "Internal server error"
    code: int = 500

    def apply(self, ctx: FaultContext) -> Response | None:
        """200 {"error": ..., "code": ...}."""
        return Response(json.dumps({"error": self.error, "code": self.code}), content_type=JSON)


_COOKIE_SERIAL = itertools.count(1)


@dataclass(frozen=True)
class Cookies(Fault):
    """The normal answer plus `count` new cookies of about `bytes` bytes each, every time."""

    kind: ClassVar[str] = "cookies"
    count: int = 3
    bytes: int = 4000

    def apply(self, ctx: FaultContext) -> Response | None:
        """Set-Cookie headers with fresh names, so a client that keeps them piles them up."""
        resp = ctx.normal()
        for _ in range(self.count):
            serial = next(_COOKIE_SERIAL)
            resp.headers.add(
                "Set-Cookie", f"edge_{serial}={'c' * self.bytes}; Path=/; Max-Age=86400"
            )
        return resp


@dataclass(frozen=True)
class HugeHeaders(Fault):
    """The normal answer with one header line of `line_bytes`, or `count` extra headers."""

    kind: ClassVar[str] = "huge_headers"
    line_bytes: int = 70_000
    count: int = 0

    def apply(self, ctx: FaultContext) -> Response | None:
        """The normal answer, its headers inflated."""
        resp = ctx.normal()
        if self.line_bytes:
            resp.headers["X-Edge-Trace"] = "t" * self.line_bytes
        for index in range(self.count):
            resp.headers[f"X-Edge-{index}"] = str(index)
        return resp


@dataclass(frozen=True)
class RateLimited(Fault):
    """429 with Retry-After as delta-seconds or as an HTTP-date `seconds` from now."""

    kind: ClassVar[str] = "rate_limited"
    seconds: int = 7
    form: str = "seconds"

    def apply(self, ctx: FaultContext) -> Response | None:
        """The upstream's 429."""
        body = json.dumps({"error": "Too Many Requests", "code": 429})
        resp = Response(body, status=429, content_type=JSON)
        if self.form == "date":
            when = datetime.now(UTC) + timedelta(seconds=self.seconds)
            resp.headers["Retry-After"] = format_datetime(when, usegmt=True)
        else:
            resp.headers["Retry-After"] = str(self.seconds)
        return resp


@dataclass(frozen=True)
class Drift(Fault):
    """The normal page with its records drifted from the model: a new field, a renamed one,
    a number sent as a string."""

    kind: ClassVar[str] = "drift"

    def apply(self, ctx: FaultContext) -> Response | None:
        """The normal page, each record drifted."""
        normal = ctx.normal()
        page = json.loads(normal.get_data())
        for record in page.get("records") or []:
            if isinstance(record, dict):
                record["aiScore"] = 0.5
                if "titleEn" in record:
                    record["title_en"] = record.pop("titleEn")
                if isinstance(record.get("createTime"), int):
                    record["createTime"] = str(record["createTime"])
        return Response(json.dumps(page), status=normal.status_code, content_type=JSON)


@dataclass(frozen=True)
class HeaderDrip(Fault):
    """The status line at once, then one header byte per `interval` for `seconds`, then the
    rest of the normal answer: written to the socket below Werkzeug."""

    kind: ClassVar[str] = "header_drip"
    interval: float = 4.0
    seconds: float = 60.0

    def apply(self, ctx: FaultContext) -> Response | None:
        """Drip; needs SandboxServer's request handler (the raw socket)."""
        if ctx.raw is None:
            raise RuntimeError("header_drip needs the sandbox's own server (SandboxServer)")
        normal = ctx.normal()
        body = normal.get_data()
        ctx.raw(f"HTTP/1.1 {normal.status_code} {reason(normal.status_code)}\r\n".encode())
        ctx.raw(b"X-Edge-Drip: ")
        deadline = time.monotonic() + self.seconds
        while (left := deadline - time.monotonic()) > 0:
            if ctx.release.wait(min(self.interval, left)):
                raise Released("header drip released")
            ctx.raw(b".")
        head = f"\r\nContent-Type: {JSON}\r\nContent-Length: {len(body)}\r\n"
        ctx.raw(head.encode() + b"Connection: close\r\n\r\n" + body)
        raise RawAnswered("header drip answered")


@dataclass(frozen=True)
class CursorCycle(Fault):
    """Pages whose next cursor leads back to a page already served, `hasNext` always true.

    The first page (no cursor) is page 0; page i's cursor names page (i + 1) % pages, so
    `pages` = 1 points a page at itself. Each page has `records` records (0: empty pages).
    """

    kind: ClassVar[str] = "cursor_cycle"
    pages: int = 1
    records: int = 0

    def apply(self, ctx: FaultContext) -> Response | None:
        """Page i of the cycle, i read from the `cycle-<i>` cursor."""
        index = _page_index("cycle-")
        if index is None or index >= self.pages:
            return Response(_INVALID_CURSOR, status=400, content_type=JSON)
        return _fault_page(index, self.records, f"cycle-{(index + 1) % self.pages}")


@dataclass(frozen=True)
class Endless(Fault):
    """Pages that never end: `hasNext` true and a new cursor every time, `records` records
    each (0: empty pages), every record a new one."""

    kind: ClassVar[str] = "endless"
    records: int = 0

    def apply(self, ctx: FaultContext) -> Response | None:
        """Page n, n read from the `endless-<n>` cursor; its cursor names page n + 1."""
        index = _page_index("endless-")
        if index is None:
            return Response(_INVALID_CURSOR, status=400, content_type=JSON)
        return _fault_page(index, self.records, f"endless-{index + 1}")


def _page_index(prefix: str) -> int | None:
    """The page a fault's cursor names (no cursor: 0), or None for a cursor it did not mint."""
    cursor = request.args.get("cursor", "")
    if not cursor:
        return 0
    number = cursor.removeprefix(prefix)
    if number == cursor or not number.isdigit() or len(number) > 9:
        return None
    return int(number)


def _fault_page(index: int, records: int, cursor: str) -> Response:
    """A page of `records` full records, numbered from index * records, with hasNext true."""
    user_id = request.args.get("user_id", "1001")
    music_type = request.args.get("type", SONG)
    page = [full_record(user_id, music_type, index * records + i) for i in range(records)]
    body = json.dumps({"records": page, "hasNext": True, "cursor": cursor})
    return Response(body, status=200, content_type=JSON)


@functools.cache
def gzip_bomb(decoded_bytes: int) -> bytes:
    """Spaces (valid JSON whitespace) gzipped as repeated 1 MiB members: built in milliseconds."""
    member_size = min(decoded_bytes, 1 << 20)
    member = gzip.compress(b" " * member_size, compresslevel=9, mtime=0)
    full, rest = divmod(decoded_bytes, member_size)
    tail = gzip.compress(b" " * rest, compresslevel=9, mtime=0) if rest else b""
    return member * full + tail


KINDS: Mapping[str, type[Fault]] = {
    cls.kind: cls
    for cls in (
        Latency,
        Status,
        Malformed,
        Hang,
        Oversized,
        Drip,
        Deep,
        WrongTypes,
        Cdn,
        Redirect,
        GzipBomb,
        UnknownEncoding,
        ErrorBody,
        Cookies,
        HugeHeaders,
        RateLimited,
        Drift,
        HeaderDrip,
        CursorCycle,
        Endless,
    )
}


def reason(status: int) -> str:
    """The HTTP reason phrase for a status; useapi.net's 596 is a "pending error"."""
    if status == 596:
        return "pending error"
    if status in CDN_REASONS:
        return CDN_REASONS[status]
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


def _string(params: Mapping[str, Any], name: str, default: str, pattern: str) -> str:
    value = params.get(name, default)
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise ValueError(f"{name} must be a string matching {pattern}")
    return value


def _parse_redirect(params: Mapping[str, Any]) -> Fault:
    status = _integer(params, "status", 302, 300, 399)
    location = _string(params, "location", Redirect.location, r"[!-~]{1,2000}")
    return Redirect(status, location)


def _parse_unknown_encoding(params: Mapping[str, Any]) -> Fault:
    return UnknownEncoding(_string(params, "encoding", "zstd", r"[A-Za-z0-9._-]{1,64}"))


def _parse_error_body(params: Mapping[str, Any]) -> Fault:
    error = _string(params, "error", ErrorBody.error, r"[^\x00-\x1f]{0,500}")
    return ErrorBody(error, _integer(params, "code", 500, 100, 599))


def _parse_rate_limited(params: Mapping[str, Any]) -> Fault:
    form = _string(params, "form", "seconds", r"seconds|date")
    return RateLimited(_integer(params, "seconds", 7, 0, 86_400), form)


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
    "cdn": lambda p: Cdn(_integer(p, "status", 522, 520, 526)),
    "redirect": _parse_redirect,
    "gzip_bomb": lambda p: GzipBomb(_integer(p, "decoded_bytes", 1 << 30, 1, 1 << 34)),
    "unknown_encoding": _parse_unknown_encoding,
    "error_body": _parse_error_body,
    "cookies": lambda p: Cookies(
        _integer(p, "count", 3, 1, 100), _integer(p, "bytes", 4000, 1, 16_000)
    ),
    "huge_headers": lambda p: HugeHeaders(
        _integer(p, "line_bytes", 70_000 if "count" not in p else 0, 0, 1 << 20),
        _integer(p, "count", 0, 0, 10_000),
    ),
    "rate_limited": _parse_rate_limited,
    "drift": lambda p: Drift(),
    "header_drip": lambda p: HeaderDrip(
        _number(p, "interval", 4.0, 0.001, 60), _number(p, "seconds", 60, 0, _MAX_SECONDS)
    ),
    "cursor_cycle": lambda p: CursorCycle(
        _integer(p, "pages", 1, 1, 10_000), _integer(p, "records", 0, 0, _MAX_RECORDS)
    ),
    "endless": lambda p: Endless(_integer(p, "records", 0, 0, _MAX_RECORDS)),
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
    "cdn": frozenset({"status"}),
    "redirect": frozenset({"status", "location"}),
    "gzip_bomb": frozenset({"decoded_bytes"}),
    "unknown_encoding": frozenset({"encoding"}),
    "error_body": frozenset({"error", "code"}),
    "cookies": frozenset({"count", "bytes"}),
    "huge_headers": frozenset({"line_bytes", "count"}),
    "rate_limited": frozenset({"seconds", "form"}),
    "drift": frozenset(),
    "header_drip": frozenset({"interval", "seconds"}),
    "cursor_cycle": frozenset({"pages", "records"}),
    "endless": frozenset({"records"}),
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
