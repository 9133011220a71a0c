"""The sandbox's CDN: covers and download files, served from the sandbox's own origin.

The real upstream points covers and download links at a CDN host; the sandbox serves both
itself, at whatever origin the request reached it on (any port, loopback or not), so a browser
can load them. A download link carries an `auth_key` that the sandbox signed and that stops
working after the link's remainSeconds, as the real CDN's does. Files honour `Range` (a browser
seeks `<audio>` with it), `If-None-Match` and `HEAD`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import RequestedRangeNotSatisfiable

from music_facade.sandbox import media
from music_facade.sandbox.answers import error
from music_facade.sandbox.data import COVER_BASE

CDN_PATH = "/cdn/tempolor"
FILE_FORMATS = {"mp3": "mp3", "wav": "wav", "stems": "zip"}
"""The download endpoint's file_format values and the extension of each one's file."""
_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "stems": "application/zip"}
_FILES: dict[str, Callable[[str], bytes]] = {
    "mp3": media.mp3_file,
    "wav": media.wav_file,
    "stems": media.stems_file,
}
_ITEM = re.compile(r"\A[0-9a-f]{15}\Z")
_AUTH_KEY = re.compile(r"\A(?P<expires>[0-9]{1,12})-(?P<signature>[0-9a-f]{32})\Z")
_COVER_MAX_AGE = 86_400


class LinkSigner:
    """Signs download links with a secret of its own: only links this sandbox handed out open."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else os.urandom(16)

    def auth_key(self, item: str, file_format: str, expires: int) -> str:
        """The auth_key of a link to one file that works until `expires` (epoch seconds)."""
        message = f"{item}:{file_format}:{expires}".encode()
        signature = hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]
        return f"{expires}-{signature}"

    def url(self, origin: str, item: str, file_format: str, expires: int) -> str:
        """The download link to one file, at the sandbox's origin."""
        key = self.auth_key(item, file_format, expires)
        return f"{origin}{CDN_PATH}/{file_format}/{item}.{FILE_FORMATS[file_format]}?auth_key={key}"

    def refusal(self, item: str, file_format: str, auth_key: str | None, now: float) -> str | None:
        """Why a link's auth_key does not open the file now, or None when it does."""
        match = _AUTH_KEY.match(auth_key or "")
        if match is None:
            return "missing or malformed auth_key"
        expires = int(match["expires"])
        if not hmac.compare_digest(auth_key or "", self.auth_key(item, file_format, expires)):
            return "auth_key does not match"
        if now >= expires:
            return "auth_key expired"
        return None


def origin() -> str:
    """The origin the current request reached the sandbox on, e.g. http://127.0.0.1:43121."""
    return request.host_url.rstrip("/")


def with_local_cover(record: Any, at: str) -> Any:
    """A record whose generated cover points at the sandbox's CDN at origin `at` (a copy; the
    library's record is not changed). Other records are returned as they are."""
    if isinstance(record, dict):
        cover = record.get("cover")
        if isinstance(cover, str) and cover.startswith(COVER_BASE):
            return {**record, "cover": f"{at}{CDN_PATH}/cover/{cover[len(COVER_BASE) :]}"}
    return record


def _file(data: bytes, mimetype: str, etag: str, cache_control: str) -> Response:
    """A file's answer: whole, or the part a Range asks for (206), or 304, or 416."""
    resp = Response(data, mimetype=mimetype)
    resp.set_etag(etag)
    resp.headers["Cache-Control"] = cache_control
    # Public sandbox media: a page on another origin may also fetch() it (a waveform, say).
    resp.headers["Access-Control-Allow-Origin"] = "*"
    try:
        resp.make_conditional(request, accept_ranges=True, complete_length=len(data))
    except RequestedRangeNotSatisfiable:
        refused = error("Range Not Satisfiable", 416)
        refused.headers["Content-Range"] = f"bytes */{len(data)}"
        refused.headers["Accept-Ranges"] = "bytes"
        return refused
    # make_conditional adds a Date; the HTTP server sends its own, and two would be joined.
    del resp.headers["Date"]
    return resp


def register_cdn_routes(app: Flask, signer: LinkSigner, clock: Callable[[], float]) -> None:
    """Add the CDN's routes to the sandbox app; links are checked against `clock`."""

    @app.get(CDN_PATH + "/cover/<name>")
    def cover(name: str) -> Response:
        """A track's cover: a PNG generated from its itemId."""
        item, _, ext = name.partition(".")
        if ext != "png" or not _ITEM.match(item):
            return error("Not Found", 404)
        data = media.cover_png(item)
        return _file(data, "image/png", f"cover-{item}", f"public, max-age={_COVER_MAX_AGE}")

    @app.get(CDN_PATH + "/<file_format>/<name>")
    def download(file_format: str, name: str) -> Response:
        """A download link's file, while its auth_key is valid."""
        item, _, ext = name.partition(".")
        if FILE_FORMATS.get(file_format) != ext or not _ITEM.match(item):
            return error("Not Found", 404)
        refusal = signer.refusal(item, file_format, request.args.get("auth_key"), clock())
        if refusal is not None:
            return error(f"Forbidden: {refusal}", 403)
        data = _FILES[file_format](item)
        return _file(data, _TYPES[file_format], f"{file_format}-{item}", "private, max-age=60")
