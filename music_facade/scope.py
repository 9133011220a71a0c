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
