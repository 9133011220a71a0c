"""Client keys for tests: a web client reading studio (with a key being rotated out) and an admin
reading every alias, and the header that presents a key."""

from __future__ import annotations

from music_facade.auth import mint_key
from music_facade.config import ClientSettings

WEB_KEY, WEB_SHA = mint_key()
OLD_KEY, OLD_SHA = mint_key()
ADMIN_KEY, ADMIN_SHA = mint_key()
CLIENTS = (
    ClientSettings("web", (WEB_SHA, OLD_SHA), frozenset({"studio"})),
    ClientSettings("admin", (ADMIN_SHA,), frozenset({"*"})),
)


def bearer(key: str) -> dict[str, str]:
    """The Authorization header presenting key (a client key or an IdP token)."""
    return {"Authorization": f"Bearer {key}"}
