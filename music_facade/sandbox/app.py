"""The sandbox upstream's Flask app: the music list endpoint, its state and its control API."""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from flask import Flask, Request, Response, request
from werkzeug.exceptions import HTTPException

from music_facade.sandbox.accounts_api import register_account_routes
from music_facade.sandbox.answers import error as _error
from music_facade.sandbox.answers import json_answer as _json
from music_facade.sandbox.cdn import (
    FILE_FORMATS,
    LinkSigner,
    origin,
    register_cdn_routes,
    with_local_cover,
)
from music_facade.sandbox.data import SONG, TYPES, USEAPI_ACCOUNT
from music_facade.sandbox.faults import JSON, Fault, FaultContext, parse_fault
from music_facade.sandbox.library import Library, Listing

SANDBOX_TOKEN = "sandbox-token"  # noqa: S105 - the fake's public, documented token
FAULT_HEADER = "X-Sandbox-Fault"
MUSIC_PATH = "/v1/tempolor/music/"
RAW_HEADERS_KEY = "sandbox.raw_headers"
"""WSGI environ key where SandboxServer's request handler leaves the headers exactly as sent."""
RAW_WRITER_KEY = "sandbox.raw_writer"
"""WSGI environ key of SandboxServer's writer straight to the socket (for header_drip)."""
ENCODINGS = ("gzip", "deflate")
"""What the sandbox compresses JSON with, in order of preference, as a CDN edge does."""
CHUNKED_OVER = 8 * 1024
"""JSON answers larger than this (before compression) are sent chunked, without Content-Length."""
_CHUNK = 4 * 1024
ALL_ACCOUNTS = "*"
LINK_SECONDS = 3600
"""How long the sandbox's download links stay valid (the upstream's remainSeconds)."""
JOB_ID_RE = re.compile(r"\Auser:(?P<account>[0-9]+)-tempolor:(?P<user>.+?)-job:(?P<item>.+)\Z")


@dataclass(frozen=True)
class SandboxCall:
    """One recorded call to the music endpoint."""

    path: str
    args: dict[str, list[str]]
    headers: dict[str, str]
    user_id: str | None

    def to_json(self) -> dict[str, Any]:
        """The call as plain JSON data."""
        return asdict(self)


@dataclass
class _ArmedFault:
    fault: Fault
    times: int | None


class SandboxState:
    """The sandbox's mutable state, shared by every request thread: call log, faults and the
    accounts' library (its generating tracks follow `clock`, epoch seconds)."""

    def __init__(
        self, encodings: tuple[str, ...] = ENCODINGS, clock: Callable[[], float] = time.time
    ) -> None:
        self._lock = threading.Lock()
        self.clock = clock
        self.library = Library(clock)
        self._default_encodings = self.encodings = _check_encodings(encodings)
        self._calls: list[SandboxCall] = []
        self._faults: dict[str, _ArmedFault] = {}
        self._release = threading.Event()
        self.link_seconds = LINK_SECONDS
        self.links = LinkSigner()

    def record(self, call: SandboxCall) -> None:
        """Append a call to the log."""
        with self._lock:
            self._calls.append(call)

    def calls(self) -> list[SandboxCall]:
        """Every call recorded since the last reset, oldest first."""
        with self._lock:
            return list(self._calls)

    def call_count(self, user_id: str | None = None) -> int:
        """How many calls were recorded, all of them or those naming one user_id."""
        with self._lock:
            if user_id is None:
                return len(self._calls)
            return sum(1 for call in self._calls if call.user_id == user_id)

    def set_fault(
        self, user_id: str, fault: Mapping[str, Any] | Fault, times: int | None = None
    ) -> Fault:
        """Arm a fault for user_id ("*": every call) for `times` calls, None: until cleared."""
        parsed = parse_fault(fault)
        if times is not None and (
            isinstance(times, bool) or not isinstance(times, int) or times < 1
        ):
            raise ValueError("times must be a positive integer or None")
        with self._lock:
            self._faults[user_id] = _ArmedFault(parsed, times)
        return parsed

    def clear_fault(self, user_id: str) -> bool:
        """Remove user_id's fault; whether there was one."""
        with self._lock:
            return self._faults.pop(user_id, None) is not None

    def faults(self) -> dict[str, tuple[Fault, int | None]]:
        """The armed faults by user_id, with the calls each has left (None: until cleared)."""
        with self._lock:
            return {user: (armed.fault, armed.times) for user, armed in self._faults.items()}

    def take_fault(self, user_id: str | None) -> Fault | None:
        """The fault for a call to user_id (its own before "*"), counting down its times."""
        with self._lock:
            key = ALL_ACCOUNTS
            if user_id is not None and user_id in self._faults:
                key = user_id
            armed = self._faults.get(key)
            if armed is None:
                return None
            if armed.times is not None:
                armed.times -= 1
                if armed.times == 0:
                    del self._faults[key]
            return armed.fault

    def release_event(self) -> threading.Event:
        """The event that hangs and drips starting now wait on; set by release()."""
        with self._lock:
            return self._release

    def release(self) -> None:
        """End hangs, latencies and drips in progress; later ones wait on a fresh event."""
        with self._lock:
            released, self._release = self._release, threading.Event()
        released.set()

    def set_encodings(self, encodings: tuple[str, ...]) -> None:
        """Compress with these (in order of preference; () for none) until reset."""
        self.encodings = _check_encodings(encodings)

    def reset(self) -> None:
        """Forget every call and fault, restore the encodings and the original accounts, release
        whatever is waiting."""
        with self._lock:
            self._calls.clear()
            self._faults.clear()
            self.encodings = self._default_encodings
            self.link_seconds = LINK_SECONDS
        self.library.reset()
        self.release()


def _check_encodings(encodings: tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(set(encodings) - set(ENCODINGS))
    if unknown:
        raise ValueError(f"unknown encoding(s) {', '.join(unknown)}; known: gzip, deflate")
    return tuple(encodings)


def compress(resp: Response, req: Request, encodings: tuple[str, ...]) -> Response:
    """Compress a JSON answer as an edge does; send it chunked when it is large."""
    resp.vary.add("Accept-Encoding")
    if resp.is_streamed or resp.mimetype != JSON or "Content-Encoding" in resp.headers:
        return resp
    data = resp.get_data()
    large = len(data) > CHUNKED_OVER
    accepted = req.accept_encodings
    chosen = next((e for e in encodings if accepted[e] > 0), None)
    if chosen == "gzip":
        data = gzip_bytes(data)
    elif chosen == "deflate":
        data = zlib.compress(data)  # HTTP's "deflate" is the zlib format
    if chosen:
        resp.headers["Content-Encoding"] = chosen
    if large:
        # An iterable body has no Content-Length: Werkzeug sends it chunked.
        resp.response = iter([data[i : i + _CHUNK] for i in range(0, len(data), _CHUNK)])
        resp.headers.pop("Content-Length", None)
    else:
        resp.set_data(data)
    return resp


def gzip_bytes(data: bytes) -> bytes:
    """gzip with a fixed mtime, so equal pages compress to equal bytes."""
    return gzip.compress(data, mtime=0)


def encode_cursor(user_id: str, music_type: str, offset: int) -> str:
    """The opaque cursor for a page: urlsafe base64, unpadded, of user_id:type:offset."""
    raw = f"{user_id}:{music_type}:{offset}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, listing: Listing, music_type: str) -> int | None:
    """The offset a cursor points at, or None if it is not one this account/type would mint."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        user_id, kind, offset_text = raw.rsplit(":", 2)
        offset = int(offset_text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    valid = (
        user_id == listing.user_id
        and kind == music_type
        and 0 < offset < listing.size
        and not listing.single_page
        and cursor == encode_cursor(user_id, kind, offset)
    )
    return offset if valid else None


def _headers_as_sent(req: Request) -> dict[str, str]:
    raw: Iterable[tuple[str, str]] = req.environ.get(RAW_HEADERS_KEY) or req.headers.items()
    headers: dict[str, str] = {}
    lower: dict[str, str] = {}
    for name, value in raw:
        # Repeated headers are joined as HTTP allows, under the first spelling of the name.
        first = lower.setdefault(name.lower(), name)
        headers[first] = f"{headers[first]}, {value}" if first in headers else value
    return headers


def create_sandbox(
    state: SandboxState | None = None, token: str = SANDBOX_TOKEN, page_size: int = 10
) -> Flask:
    """The sandbox upstream as a Flask app; its state is in app.extensions["sandbox_state"]."""
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    sandbox = state if state is not None else SandboxState()
    app = Flask(__name__)
    app.extensions["sandbox_state"] = sandbox

    def answer(user_id: str | None) -> Response:
        """The upstream's answer to the current request, after the fault step."""
        if request.headers.get("Authorization") != f"Bearer {token}":
            return _error("Unauthorized", 401)
        music_type = request.args.get("type", SONG)
        if music_type not in TYPES:
            return _error("Invalid type parameter. Must be 'song' or 'instrumental'", 400)
        if not user_id:
            return _error("user_id is required when multiple accounts are configured", 400)
        listing = sandbox.library.listing(user_id, music_type)
        if listing is None:
            return _error(f"TemPolor account {user_id} is not configured", 404)
        cursor = request.args.get("cursor", "")
        offset = 0
        if cursor:
            found = decode_cursor(cursor, listing, music_type)
            if found is None:
                return _error("Invalid cursor", 400)
            offset = found
        if not listing.has_records_key:
            return _json({"hasNext": False})
        end = None if listing.single_page else offset + page_size
        here = origin()
        records = [
            with_local_cover(record, here)
            for record in sandbox.library.page(user_id, music_type, offset, end)
        ]
        has_next = end is not None and end < listing.size
        next_cursor = encode_cursor(user_id, music_type, end) if end and has_next else ""
        return _json({"records": records, "hasNext": has_next, "cursor": next_cursor})

    def find(job_id: str) -> tuple[str | None, dict[str, Any] | Response]:
        """The account named by a job_id and its record, or the upstream's 404 answer."""
        match = JOB_ID_RE.match(job_id)
        user_id = match["user"] if match else None
        if match and match["account"] == USEAPI_ACCOUNT:
            record = sandbox.library.find(match["user"], match["item"])
            if isinstance(record, dict):
                return user_id, record
        return user_id, _error(f"No record found for {job_id}", 404)

    def authorized() -> Response | None:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return _error("Unauthorized", 401)
        return None

    def one_record(job_id: str) -> Response:
        """GET /music/{job_id}: one record, the same shape as a list record."""
        found = find(job_id)[1]
        if isinstance(found, Response):
            return authorized() or found
        return authorized() or _json(with_local_cover(found, origin()))

    def download(job_id: str) -> Response:
        """GET /music/download/{job_id}: a temporary link to a completed job's file."""
        refused = authorized()
        if refused is not None:
            return refused
        file_format = request.args.get("file_format", "mp3")
        if file_format not in FILE_FORMATS:
            return _error("Invalid file_format. Must be 'mp3', 'wav' or 'stems'", 400)
        found = find(job_id)[1]
        if isinstance(found, Response):
            return found
        status = found.get("status")
        if not isinstance(status, int) or status < 30:
            return _error(f"Generation is not completed yet ({status})", 400)
        seconds = sandbox.link_seconds
        expires = int(sandbox.clock()) + seconds
        url = sandbox.links.url(origin(), found["itemId"], file_format, expires)
        return _json({"url": url, "remainSeconds": seconds})

    def serve(user_id: str | None, respond: Callable[[], Response]) -> Response:
        """Log the call, then its armed or header-given fault, else respond()."""
        # Taken before the call is logged, so a reset that follows the log always releases it.
        release = sandbox.release_event()
        sandbox.record(
            SandboxCall(
                path=request.path,
                args={key: request.args.getlist(key) for key in request.args},
                headers=_headers_as_sent(request),
                user_id=user_id,
            )
        )
        fault: Fault | None
        header = request.headers.get(FAULT_HEADER)
        if header is not None:
            try:
                fault = parse_fault(json.loads(header))
            except ValueError as exc:
                return _error(f"{FAULT_HEADER}: {exc}", 400)
        else:
            fault = sandbox.take_fault(user_id)
        if fault is not None:
            ctx = FaultContext(release, respond, request.environ.get(RAW_WRITER_KEY))
            replacement = fault.apply(ctx)
            if replacement is not None:
                return replacement
        return respond()

    @app.get(MUSIC_PATH, strict_slashes=False)
    def music() -> Response:
        """GET /v1/tempolor/music/: the upstream's list endpoint, faults first."""
        user_id = request.args.get("user_id")
        return serve(user_id, lambda: answer(user_id))

    @app.get(MUSIC_PATH + "download/<path:job_id>")
    def music_download(job_id: str) -> Response:
        """GET /v1/tempolor/music/download/{job_id}: a temporary download link, faults first."""
        return serve(find(job_id)[0], lambda: download(job_id))

    @app.get(MUSIC_PATH + "<path:job_id>")
    def music_record(job_id: str) -> Response:
        """GET /v1/tempolor/music/{job_id}: one record, faults first."""
        return serve(find(job_id)[0], lambda: one_record(job_id))

    @app.after_request
    def edge(resp: Response) -> Response:
        """The music endpoint's JSON answers leave compressed, as through a CDN edge."""
        if request.path.startswith(MUSIC_PATH.rstrip("/")):
            return compress(resp, request, sandbox.encodings)
        return resp

    @app.get("/_sandbox/calls")
    def calls() -> Response:
        """Every recorded call since the last reset."""
        recorded = sandbox.calls()
        return _json({"count": len(recorded), "calls": [c.to_json() for c in recorded]})

    @app.post("/_sandbox/reset")
    def reset() -> Response:
        """Forget calls and faults; release hangs and drips."""
        sandbox.reset()
        return _json({"reset": True})

    @app.get("/_sandbox/faults")
    def faults() -> Response:
        """The armed faults by user_id."""
        armed = sandbox.faults()
        return _json(
            {
                user: {"fault": fault.to_json(), "times": times}
                for user, (fault, times) in armed.items()
            }
        )

    @app.put("/_sandbox/faults/<user_id>")
    def set_fault(user_id: str) -> Response:
        """Arm a fault: body {"fault": {...}, "times": N or absent}."""
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict) or "fault" not in body:
            return _error('expected a JSON object {"fault": {...}, "times": N}', 400)
        unknown = sorted(set(body) - {"fault", "times"})
        if unknown:
            return _error(f"unknown key(s): {', '.join(unknown)}", 400)
        times = body.get("times")
        try:
            fault = sandbox.set_fault(user_id, body["fault"], times)
        except ValueError as exc:
            return _error(str(exc), 400)
        return _json({"user_id": user_id, "fault": fault.to_json(), "times": times})

    @app.delete("/_sandbox/faults/<user_id>")
    def clear_fault(user_id: str) -> Response:
        """Disarm user_id's fault."""
        return _json({"user_id": user_id, "cleared": sandbox.clear_fault(user_id)})

    register_account_routes(app, sandbox.library)
    register_cdn_routes(app, sandbox.links, sandbox.clock)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        """Routing errors as the upstream's JSON error shape."""
        status = exc.code or 500
        resp = _error(exc.name, status)
        if exc.response is None:
            for name, value in exc.get_headers():
                if name.lower() != "content-type":
                    resp.headers[name] = value
        return resp

    return app
