"""What each route of the /music handler is given (Scope) and gives back (Answer)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .auth import Caller
from .core.music import Music

Answer = tuple[int, Iterable[bytes], list[tuple[str, str]], str | None]
"""A route's status, body, headers and cache status (the handler adds the rest)."""


class Scope:
    """One request's caller and the account it may read (authorized before the cache)."""

    def __init__(self, music: Music, who: Caller, request_id: str, environ: dict[str, Any]):
        self.music = music
        self.who = who
        self.request_id = request_id
        self.environ = environ
        self.user: str | None = None
        self.internal_error = False  # a stream an unexpected error cut short (counted as 500)

    def account(self, given: str | None) -> str:
        """The alias the request names (or the implicit one), once the caller may read it."""
        # The scope before the alias's existence and before the cache: a cached page is no
        # excuse, and an alias outside the scope is refused alike whether or not it exists.
        alias = self.music.alias(given, self.who.client)
        self.user = alias
        return alias

    def accounts(self, given: tuple[str, ...] | None) -> tuple[str, ...]:
        """The aliases a query names, each one the caller may read and configured (the same
        403 and 404 as account()); none named: every configured alias the caller may read."""
        client = self.who.client
        if given is None:
            users = self.music.settings.users
            return tuple(a for a in users if client is None or client.may_read(a))
        aliases = tuple(dict.fromkeys(self.music.alias(a, client) for a in given))
        self.user = ",".join(aliases)
        return aliases
