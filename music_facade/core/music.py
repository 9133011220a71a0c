"""The music an alias names: its pages, tracks and audio links, read through the page cache.

The rules of the service's reads, free of any web framework: which alias a request means (the
caller's scope checked before the alias is looked up, and before the cache), which upstream
calls answer a page, a track or a link, and what an upstream answer must look like to be
passed on. music_facade.music answers HTTP with them.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from .. import jsoncodec
from ..auth import Principal, authorize
from ..bulkhead import Bulkhead
from ..cache import Lookup, PageCache, link_key, list_key, track_key
from ..config import Settings
from ..errors import (
    InvalidQuery,
    TrackNotFound,
    TrackNotReady,
    UnknownUser,
    UpstreamError,
    UpstreamFailure,
    UpstreamRejected,
)
from .query import TYPES, MusicQuery
from .tracks import dump_track, reshape_page


class Upstream(Protocol):
    """The upstream calls music makes (music_facade.upstream.UpstreamClient); each raises an
    UpstreamFailure when the upstream cannot answer."""

    def list_music(
        self, user_id: str, type_: str, cursor: str | None, request_id: str
    ) -> dict[str, Any]:
        """One page of an account's list."""

    def get_record(self, user_id: str, job_id: str, request_id: str) -> dict[str, Any]:
        """One record by its job_id."""

    def get_download(
        self, user_id: str, job_id: str, file_format: str, request_id: str
    ) -> dict[str, Any]:
        """A temporary link to a record's file."""


class Music:
    """An alias's music for one process: its settings, upstream, page cache and bulkhead."""

    def __init__(
        self, settings: Settings, client: Upstream, cache: PageCache, bulkhead: Bulkhead
    ) -> None:
        self.settings = settings
        self.client = client
        self.cache = cache
        self.bulkhead = bulkhead
        # user_id → the useapi.net account number its job_ids name, learned from records seen.
        self._accounts: dict[str, str] = {}

    def alias(self, given: str | None, caller: Principal | None) -> str:
        """The alias a query names, or the implicit one; the caller may read it; it exists.

        The scope is checked first, so an alias outside it gets the same 403 whether or not it
        is configured: a key or token cannot list the configured aliases.
        """
        alias = given if given is not None else self.settings.implicit_user
        if alias is None:
            raise InvalidQuery(
                "Name the account with the 'user' parameter.",
                errors={"user": ["required: the service has several accounts and no default"]},
            )
        authorize(caller, alias)
        if alias not in self.settings.users:
            raise UnknownUser(f"'{alias}' is not a configured user alias.")
        return alias

    def page(self, alias: str, query: MusicQuery, request_id: str) -> Lookup:
        """The rendered page for an alias's query, from the cache or the upstream."""
        user_id = self.settings.users[alias]

        def load() -> bytes:
            # Only a single flight's leader loads, so only leaders take a bulkhead slot.
            with self.bulkhead.slot():
                raw = self.client.list_music(user_id, query.type, query.cursor, request_id)
            self._learn(user_id, raw.get("records"))
            return jsoncodec.dumps(reshape_page(raw))

        return self.cache.get(list_key(user_id, query.type, query.cursor), load)

    def _learn(self, user_id: str, records: Any) -> None:
        """Remember the account number the first record's job_id names (never shown)."""
        if user_id in self._accounts or not isinstance(records, list):
            return
        for record in records:
            job_id = record.get("job_id") if isinstance(record, dict) else None
            match = _JOB_ID_RE.match(job_id) if isinstance(job_id, str) else None
            if match and match["user"] == user_id:
                self._accounts[user_id] = match["account"]
                return

    def job_id(self, alias: str, item: str, request_id: str) -> str:
        """The upstream job_id of a track: learned account number, user_id and item id.

        Without a record of the account seen yet, its first list page (song, then
        instrumental) is read through the page cache; an account with no records has no track.
        """
        user_id = self.settings.users[alias]
        for type_ in TYPES:
            if user_id in self._accounts:
                break
            # Through the cache first; a page another replica stored was never loaded here.
            self.page(alias, MusicQuery(None, type_, None), request_id)
            if user_id not in self._accounts:
                with self.bulkhead.slot():
                    raw = self.client.list_music(user_id, type_, None, request_id)
                self._learn(user_id, raw.get("records"))
        account = self._accounts.get(user_id)
        if account is None:
            raise TrackNotFound(f"The account has no track '{item}'.")
        return f"user:{account}-tempolor:{user_id}-job:{item}"

    def track(self, alias: str, item: str, request_id: str) -> Lookup:
        """One track as a rendered Track, from the cache or the upstream's one-record call."""
        user_id = self.settings.users[alias]

        def load() -> bytes:
            job_id = self.job_id(alias, item, request_id)
            with self.bulkhead.slot():
                try:
                    raw = self.client.get_record(user_id, job_id, request_id)
                except UpstreamFailure as exc:
                    if exc.upstream_status == 404:
                        raise TrackNotFound(f"The account has no track '{item}'.") from None
                    raise
            track = dump_track(raw)
            if track["id"] != item:
                raise UpstreamError("The upstream answered with another record than asked for.")
            return jsoncodec.dumps(track)

        return self.cache.get(track_key(user_id, item), load)

    def audio(self, alias: str, item: str, file_format: str, request_id: str) -> Lookup:
        """A temporary link to a completed track's file, cached until shortly before it expires.

        409 track_not_ready while the track is not completed (read from the track's cached
        copy first, so a not-ready track costs no download call).
        """
        user_id = self.settings.users[alias]
        status = jsoncodec.loads(self.track(alias, item, request_id).page.body)["status"]
        if status != "completed":
            raise TrackNotReady(f"The track is {status}; it has no audio yet.", status)
        lifetime = 0.0

        def load() -> bytes:
            nonlocal lifetime
            job_id = self.job_id(alias, item, request_id)
            with self.bulkhead.slot():
                try:
                    raw = self.client.get_download(user_id, job_id, file_format, request_id)
                except UpstreamFailure as exc:
                    if exc.upstream_status == 404:
                        raise TrackNotFound(f"The account has no track '{item}'.") from None
                    if isinstance(exc, UpstreamRejected):  # "not completed yet"
                        raise TrackNotReady("The track has no audio yet.", "generating") from None
                    raise
            url, seconds = download_link(raw, allow_http=self.settings.upstream.allow_http_links)
            lifetime = seconds - LINK_MARGIN
            expires = datetime.fromtimestamp(math.floor(self.cache.clock() + seconds), UTC)
            link = {
                "url": url,
                "format": file_format,
                "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            return jsoncodec.dumps(link)

        return self.cache.get(link_key(user_id, item, file_format), load, lambda _body: lifetime)


# A link is cached, and announced in max-age, this much shorter than it stays valid: time for
# the caller to fetch it after the answer left.
LINK_MARGIN = 30
# The longest validity a download link is believed to have (a year); the upstream's are hours.
MAX_LINK_SECONDS = 366 * 24 * 3600
_MAX_URL = 4096
_JOB_ID_RE = re.compile(r"\Auser:(?P<account>[0-9]{1,20})-tempolor:(?P<user>.+?)-job:")


def download_link(raw: dict[str, Any], *, allow_http: bool = False) -> tuple[str, float]:
    """The upstream download answer's URL (https, well-formed) and seconds left, or 502.

    allow_http: plain http links pass too ([upstream] allow_http_links, a local sandbox).
    """
    url = raw.get("url")
    seconds = raw.get("remainSeconds")
    if (
        not isinstance(url, str)
        or len(url) > _MAX_URL
        or not url.isascii()
        or any(c.isspace() or not c.isprintable() for c in url)
    ):
        raise UpstreamError("The upstream's download link was not a well-formed URL.")
    try:
        parts = urlsplit(url)
        schemes = ("https", "http") if allow_http else ("https",)
        well_formed = parts.scheme in schemes and bool(parts.hostname) and parts.port != 0
        well_formed = well_formed and not parts.username and not parts.password
    except ValueError:
        well_formed = False
    if not well_formed:
        kind = "http(s)" if allow_http else "https"
        raise UpstreamError(f"The upstream's download link was not a well-formed {kind} URL.")
    # Compared, never converted first: float() of a 400-digit integer raises, and NaN fails
    # every comparison. Past MAX_LINK_SECONDS the expiry would not even be a date.
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 < seconds <= MAX_LINK_SECONDS
    ):
        raise UpstreamError("The upstream's download link came without a plausible validity.")
    return url, float(seconds)
