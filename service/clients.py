"""Calling apps: who is asking (bearer key → client) and what they may read (alias scopes)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from flask import Flask, current_app, g, request

from . import logs
from .config import ClientSettings
from .errors import Problem

REALM = "music"
KEY_PREFIX = "mf_"
# RFC 6750 b64token, bounded: anything else in a Bearer credential is malformed.
_B64TOKEN_RE = re.compile(r"\A[A-Za-z0-9._~+/-]{1,256}=*\Z")


class Unauthorized(Problem):
    status, code, title = 401, "unauthorized", "A valid client key is required"

    def __init__(self, detail: str, error: str | None = None) -> None:
        challenge = f'Bearer realm="{REALM}"'
        if error:
            challenge += f', error="{error}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class UserNotAllowed(Problem):
    status, code, title = 403, "user_not_allowed", "This client may not read that account"

    def __init__(self, detail: str) -> None:
        super().__init__(
            detail,
            headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope"'},
        )


@dataclass(frozen=True)
class Caller:
    """Who sent the request: a known client, or nobody (open mode), or a refused credential."""

    client: ClientSettings | None
    problem: Unauthorized | None = None


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

    @property
    def required(self) -> bool:
        """With no client configured the service is open."""
        return bool(self.clients)

    def identify(self, authorization: str | None) -> Caller:
        """The caller behind an Authorization header value."""
        if not self.required:
            return Caller(None)
        if authorization is None:
            return Caller(None, Unauthorized("Send 'Authorization: Bearer <key>'."))
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not _B64TOKEN_RE.match(key):
            return Caller(
                None,
                Unauthorized("The Authorization header is not 'Bearer <key>'.", "invalid_request"),
            )
        found = self._by_digest.get(hashlib.sha256(key.encode()).digest())
        if found is None:
            return Caller(None, Unauthorized("The client key is not valid.", "invalid_token"))
        return Caller(found)


def presented(authorization: str | None) -> None:
    """Whatever the caller presented is a secret for this request's log lines (logs.redact)."""
    logs.PRESENTED.set(authorization.partition(" ")[2].strip() if authorization else None)


def _identify() -> None:
    registry: ClientRegistry = current_app.extensions["clients"]
    authorization = request.headers.get("Authorization")
    presented(authorization)
    g.caller = registry.identify(authorization)


def authorize(client: ClientSettings | None, alias: str) -> None:
    """Raise 403 unless the client's scope includes the alias (open mode: everyone may read)."""
    if client is not None and not client.may_read(alias):
        raise UserNotAllowed(f"Client '{client.name}' may not read '{alias}'.")


def register(app: Flask, registry: ClientRegistry) -> None:
    """Identify every Flask request's caller (for its log line and the log redaction)."""
    app.extensions["clients"] = registry
    app.before_request(_identify)
