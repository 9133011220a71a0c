"""Callers: who is asking (a client key, or an identity provider's token) and what they may read.

`Authenticator.identify(authorization) -> Caller` is the one rule: a Bearer credential that is a
JWT is verified by the identity provider's token verifier (music_facade.auth.oidc, given to the
Authenticator when [oidc] is configured); anything else is looked up as a client key
(music_facade.auth.keys). Scopes and rate limits consume the Caller's principal (its name, its rate
limit, which aliases it may read) and never learn how it was proven. No web framework here:
music_facade.pipeline's Identify step calls identify for every request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from .. import logs
from ..errors import Problem
from .keys import ClientRegistry, mint_key

__all__ = [
    "Authenticator",
    "Caller",
    "ClientRegistry",
    "CredentialExpired",
    "CredentialInvalid",
    "CredentialMalformed",
    "CredentialMissing",
    "Principal",
    "Tokens",
    "UserNotAllowed",
    "authorize",
    "mint_key",
    "presented",
]

REALM = "music"
# RFC 6750 b64token. A client key is at most 256 characters; a JWT at most MAX_TOKEN (ID
# tokens and access tokens with many groups run to a few KB, gunicorn's header field limit is 8190).
_B64TOKEN_RE = re.compile(r"\A[A-Za-z0-9._~+/-]+=*\Z")
_JWT_RE = re.compile(r"\A[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\Z")
MAX_KEY = 256
MAX_TOKEN = 8000


class Unauthorized(Problem, code="credential_invalid"):
    """401: the credential is missing or not accepted; each subclass's code says which case."""

    error: str | None = "invalid_token"  # RFC 6750 error in WWW-Authenticate

    def __init__(self, detail: str) -> None:
        challenge = f'Bearer realm="{REALM}"'
        if self.error:
            challenge += f', error="{self.error}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class CredentialMissing(Unauthorized, code="credential_missing"):
    """No Authorization header: the challenge names no error (RFC 6750 3.1)."""

    error = None


class CredentialMalformed(Unauthorized, code="credential_malformed"):
    """The header is not `Bearer <credential>`, or the credential is not well-formed."""

    error = "invalid_request"


class CredentialInvalid(Unauthorized, code="credential_invalid"):
    """An unknown key, or a token that does not verify."""


class CredentialExpired(Unauthorized, code="credential_expired"):
    """A token past its `exp`."""


class UserNotAllowed(Problem, code="user_not_allowed"):
    """The caller's scope does not include the alias."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            detail,
            headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope"'},
        )


class Principal(Protocol):
    """An identified caller: a configured client, or a token's subject."""

    @property
    def name(self) -> str:
        """What logs and rate limits call it: the client's name, or `oidc:<subject>`."""

    @property
    def rate_limit(self) -> str | None:
        """Its own rate limit; None: [limits] default."""

    def may_read(self, alias: str) -> bool:
        """Whether its scope includes the alias."""


@dataclass(frozen=True)
class Caller:
    """Who sent the request: a principal, or nobody (open mode), or a refused credential."""

    client: Principal | None
    problem: Problem | None = None


OPEN = Caller(None)


class Tokens(Protocol):
    """Verifies identity-provider tokens (music_facade.auth.oidc.TokenVerifier)."""

    def identify(self, token: str) -> Caller:
        """The caller a well-formed JWT names, or a Caller carrying why it is refused."""


class Authenticator:
    """Identifies callers by client key or identity-provider token (either, both, or neither)."""

    def __init__(self, keys: ClientRegistry, tokens: Tokens | None = None) -> None:
        self.keys = keys
        self.tokens = tokens

    @property
    def required(self) -> bool:
        """With neither keys nor tokens configured the service is open."""
        return bool(self.keys.clients) or self.tokens is not None

    def identify(self, authorization: str | None) -> Caller:
        """The caller behind an Authorization header value."""
        if not self.required:
            return OPEN
        if authorization is None:
            return Caller(None, CredentialMissing("Send 'Authorization: Bearer <credential>'."))
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "bearer" or not _B64TOKEN_RE.match(credential):
            return Caller(
                None, CredentialMalformed("The Authorization header is not 'Bearer <credential>'.")
            )
        if self.tokens is not None and _JWT_RE.match(credential):
            if len(credential) > MAX_TOKEN:
                return Caller(
                    None, CredentialMalformed(f"The token is longer than {MAX_TOKEN} characters.")
                )
            return self.tokens.identify(credential)
        if len(credential) > MAX_KEY:
            return Caller(
                None, CredentialMalformed(f"The client key is longer than {MAX_KEY} characters.")
            )
        found = self.keys.lookup(credential)
        if found is None:
            return Caller(None, CredentialInvalid("The client key is not valid."))
        return Caller(found)


def presented(authorization: str | None) -> None:
    """Whatever the caller presented is a secret for this request's log lines (logs.redact)."""
    logs.PRESENTED.set(authorization.partition(" ")[2].strip() if authorization else None)


def authorize(client: Principal | None, alias: str) -> None:
    """Raise 403 unless the caller's scope includes the alias (open mode: everyone may read).

    Called before the alias is checked against [users]: the answer is the same whether or not
    an alias outside the scope exists, so a caller cannot list the configured ones.
    """
    if client is not None and not client.may_read(alias):
        raise UserNotAllowed(f"Client '{client.name}' may not read '{alias}'.")
