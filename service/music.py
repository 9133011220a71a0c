"""GET /music: validate, resolve the alias, get the page (cache → upstream → reshape), respond."""

from __future__ import annotations

import json

from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.wrappers import Response as BaseResponse

from .bulkhead import Bulkhead
from .cache import Lookup, PageCache
from .clients import authorize, require_client
from .config import Settings
from .errors import InvalidQuery, UnknownUser
from .query import MusicQuery, parse_query
from .tracks import reshape_page
from .upstream import UpstreamClient

bp = Blueprint("music", __name__)


class Music:
    """The pieces behind /music for one process: settings, upstream client and page cache."""

    def __init__(
        self, settings: Settings, client: UpstreamClient, cache: PageCache, bulkhead: Bulkhead
    ) -> None:
        self.settings = settings
        self.client = client
        self.cache = cache
        self.bulkhead = bulkhead

    def alias(self, given: str | None) -> str:
        """The alias a query names, or the implicit one; it must be configured."""
        alias = given if given is not None else self.settings.implicit_user
        if alias is None:
            raise InvalidQuery(
                "Name the account with the 'user' parameter.",
                errors={"user": ["required: the service has several accounts and no default"]},
            )
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
            return json.dumps(reshape_page(raw), ensure_ascii=False, separators=(",", ":")).encode()

        # \x1f cannot occur in any part (user ids and cursors are visible ASCII).
        key = "\x1f".join((user_id, query.type, query.cursor or ""))
        return self.cache.get(key, load)


def music() -> Music:
    """This app's Music."""
    found: Music = current_app.extensions["music"]
    return found


@bp.get("/music")
def list_music() -> BaseResponse:
    """A page of tracks: who asks, what, for which account, may they; then the page."""
    client = require_client()
    query = parse_query(request.query_string)
    alias = music().alias(query.user)
    authorize(client, alias)  # before the cache: a cached page is no excuse to skip the scope
    g.user = alias
    lookup = music().page(alias, query, g.request_id)
    resp = Response(lookup.page.body, mimetype="application/json")
    resp.set_etag(lookup.page.etag)
    resp.headers["Cache-Control"] = f"private, max-age={lookup.max_age}"
    resp.headers["Cache-Status"] = lookup.cache_status
    return resp.make_conditional(request)


def register(
    app: Flask, settings: Settings, client: UpstreamClient, cache: PageCache, bulkhead: Bulkhead
) -> None:
    """Mount /music with its pieces."""
    app.extensions["music"] = Music(settings, client, cache, bulkhead)
    app.register_blueprint(bp)
