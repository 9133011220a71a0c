"""Client keys: static bearer keys of server-side callers, stored only as SHA-256 digests."""

from __future__ import annotations

import hashlib
import secrets

from ..config import ClientSettings

KEY_PREFIX = "mf_"


def mint_key() -> tuple[str, str]:
    """A new random client key and its SHA-256 hex digest (the only part the config stores)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hashlib.sha256(key.encode()).hexdigest()


class ClientRegistry:
    """The configured clients, looked up by a presented key's SHA-256 digest."""

    def __init__(self, clients: tuple[ClientSettings, ...]) -> None:
        self.clients = clients
        # A dict lookup by digest: its timing can depend on the digest, never on the key, and
        # learning digests does not help find a key (SHA-256 preimage resistance).
        self._by_digest = {bytes.fromhex(d): c for c in clients for d in c.key_sha256}

    def lookup(self, key: str) -> ClientSettings | None:
        """The client whose key this is, or None."""
        return self._by_digest.get(hashlib.sha256(key.encode()).digest())
