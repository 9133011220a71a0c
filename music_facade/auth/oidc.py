"""Identity-provider tokens: JWT bearer credentials verified against the issuer's JWKS (PyJWT).

The signature is checked with a key from the issuer's JWKS (found by the token's `kid`), with
only the configured asymmetric algorithms; then `iss`, `aud`, `exp`, `nbf` (with leeway). The
subject claim names the caller (`oidc:<sub>`) and the scope claim's values map to aliases.

The JWKS is fetched over HTTP (requests: under gunicorn's gevent worker the wait cooperates)
within one deadline for the whole fetch, discovery included: the socket is shut down when it
passes (music_facade.watchdog), so an IdP that drips a byte at a time cannot hold a request longer
than a slow one, which per-read timeouts alone would allow. Only one fetch is in flight per
process: a request that needs keys while one is under way waits for that fetch (never longer
than its deadline) and uses what it brought, never starting another. The keys are kept:
refreshed after REFRESH_AFTER, refetched at once for an unknown `kid` (a key rotation), but
never more than once per REFETCH_FLOOR seconds, so a flood of tokens with made-up kids cannot
hammer the identity provider. A failed fetch keeps the keys it had; with none at all, the
answer is 503 identity_provider_unavailable. PyJWT's PyJWKClient is not used for the fetch: it
refetches on every unknown kid, and a failed refresh raises instead of keeping the cached keys.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import requests
import urllib3
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    InvalidSignatureError,
    InvalidTokenError,
    PyJWKError,
    PyJWKSetError,
    PyJWTError,
)
from requests.adapters import HTTPAdapter

from ..config import OidcSettings
from ..errors import Problem
from ..watchdog import POOL_CLASSES, Exchange, Watchdog
from . import Caller, CredentialExpired, CredentialInvalid, CredentialMalformed

log = logging.getLogger(__name__)

REFETCH_FLOOR = 10.0  # seconds between two fetches of the JWKS, whatever the tokens say
REFRESH_AFTER = 300.0  # seconds a fetched JWKS is used before it is refreshed
FETCH_TIMEOUT = (2.0, 3.0)  # connect, and each read
FETCH_DEADLINE = 5.0  # seconds for a whole fetch (discovery and JWKS): a slow IdP's limit
MAX_DOCUMENT = 1_000_000  # bytes of a discovery document or JWKS
_READ_CHUNK = 16 * 1024
# One thread (one greenlet under gevent) per process enforces every fetch's deadline.
_WATCHDOG = Watchdog()
_MAX_SUBJECT = 255


class IdentityProviderUnavailable(Problem, code="identity_provider_unavailable"):
    """No signing keys: the identity provider's JWKS cannot be fetched and none is cached."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": str(int(REFETCH_FLOOR))})


class FetchFailed(Exception):
    """The discovery document or the JWKS could not be fetched or read."""


@dataclass(frozen=True)
class TokenSubject:
    """A verified token's caller: its name (oidc:<subject>) and the aliases its claims grant."""

    name: str
    users: frozenset[str]
    rate_limit: str | None = None  # tokens count against [limits] default, per subject

    def may_read(self, alias: str) -> bool:
        """Whether the token's scope includes the alias."""
        return "*" in self.users or alias in self.users


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter whose connections report their socket to the fetch's deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = POOL_CLASSES  # through HTTPS_PROXY too
        return manager


def _session() -> requests.Session:
    session = requests.Session()
    adapter = _WatchedAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _get_json(session: requests.Session, url: str, ex: Exchange) -> dict[str, Any]:
    """A JSON object from url, bounded in size and by the fetch's deadline."""
    late = f"{url}: no answer within {FETCH_DEADLINE:g} s"
    if ex.remaining() <= 0:
        raise FetchFailed(late)
    timeout = (min(FETCH_TIMEOUT[0], ex.remaining()), FETCH_TIMEOUT[1])
    body = bytearray()
    try:
        with session.get(
            url, timeout=timeout, stream=True, headers={"Accept": "application/json"}
        ) as resp:
            if resp.status_code != 200:
                raise FetchFailed(f"{url} answered {resp.status_code}")
            # In chunks, the deadline checked after each: a read timeout is per read, and a
            # drip of a byte a second never trips it.
            while chunk := resp.raw.read(_READ_CHUNK, decode_content=True):
                body += chunk
                if len(body) > MAX_DOCUMENT:
                    raise FetchFailed(f"{url}: larger than {MAX_DOCUMENT} bytes")
                if ex.remaining() <= 0:
                    raise FetchFailed(late)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise FetchFailed(late if ex.expired else f"{url}: {type(exc).__name__}") from None
    if ex.expired:
        # Cut at the deadline, the reader may have taken the shut socket's EOF for the end.
        raise FetchFailed(late)
    try:
        doc = json.loads(body)
    except ValueError:
        raise FetchFailed(f"{url}: not JSON") from None
    if not isinstance(doc, dict):
        raise FetchFailed(f"{url}: not a JSON object")
    return doc


class KeySet:
    """The issuer's signing keys by kid, fetched on demand within the refetch floor."""

    def __init__(self, settings: OidcSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock
        self.session = _session()
        self._jwks_url = settings.jwks_url
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._failing = False
        self._lock = threading.Lock()
        self._in_flight: threading.Event | None = None  # set once the fetch under way ends

    def get(self, kid: str) -> jwt.PyJWK | None:
        """The key for kid (None: unknown to the issuer); raise when no keys can be had."""
        keys = self._keys
        if keys is not None and kid in keys:
            if self.clock() - self._fetched_at > REFRESH_AFTER:
                self._refresh(wait=False)  # a stale set still verifies; refresh if free
            return keys[kid]
        self._refresh(wait=True)
        if self._keys is None:
            raise IdentityProviderUnavailable(
                "The identity provider's signing keys cannot be fetched; try again shortly."
            )
        return self._keys.get(kid)

    @property
    def failing(self) -> bool:
        """Whether the last fetch failed."""
        return self._failing

    def _refresh(self, wait: bool) -> None:
        """Fetch the JWKS unless one was tried within the floor; one fetch at a time.

        With a fetch already under way, wait (if asked) for it to end, bounded by its deadline,
        and take its outcome: never a second fetch after it, whatever the floor says by then.
        """
        with self._lock:
            running = self._in_flight
            if running is None:
                if self.clock() - self._attempted_at < REFETCH_FLOOR:
                    return
                self._attempted_at = self.clock()
                self._in_flight = threading.Event()
        if running is not None:
            if wait:
                # The fetch ends by its deadline; the margin covers the connect that precedes
                # the watch.
                running.wait(FETCH_DEADLINE + FETCH_TIMEOUT[0])
            return
        try:
            with _WATCHDOG.exchange(FETCH_DEADLINE) as ex:
                self._keys = self._fetch(ex)
            self._fetched_at = self.clock()
            self._failing = False
        except FetchFailed as exc:
            self._failing = True
            log.warning("identity provider keys not fetched: %s", exc)
        finally:
            with self._lock:
                done, self._in_flight = self._in_flight, None
            assert done is not None
            done.set()

    def _fetch(self, ex: Exchange) -> dict[str, jwt.PyJWK]:
        url = self._jwks_url or self._discover(ex)
        doc = _get_json(self.session, url, ex)
        try:
            found = jwt.PyJWKSet.from_dict(doc).keys
        except (PyJWKSetError, PyJWKError) as exc:
            raise FetchFailed(f"{url}: no usable keys ({exc})") from None
        except (TypeError, ValueError, KeyError) as exc:
            # PyJWT trips over some shapes itself (an `alg` that is a list): the IdP's answer
            # is unusable, which is not the caller's request failing.
            raise FetchFailed(f"{url}: no usable keys ({type(exc).__name__})") from None
        allowed = set(self.settings.algorithms)
        keys = {
            k.key_id: k
            for k in found
            if isinstance(k.key_id, str)
            and k.key_id
            and k.public_key_use in (None, "sig")
            and k.algorithm_name in allowed
        }
        if not keys:
            raise FetchFailed(f"{url}: no signing key with a kid for {sorted(allowed)}")
        return keys

    def _discover(self, ex: Exchange) -> str:
        """The jwks_uri from the issuer's OpenID configuration (remembered once found)."""
        issuer = self.settings.issuer
        well_known = issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = _get_json(self.session, well_known, ex)
        if doc.get("issuer") != issuer:
            raise FetchFailed("the discovery document names another issuer")
        url = doc.get("jwks_uri")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise FetchFailed("the discovery document has no jwks_uri")
        self._jwks_url = url
        return url


def _claim_values(value: Any) -> list[str]:
    """A scope claim's values: a list of strings, or one space-separated string."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


class TokenVerifier:
    """Verifies a JWT and turns its claims into a Caller."""

    def __init__(self, settings: OidcSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.keys = KeySet(settings, clock)
        self.algorithms = list(settings.algorithms)

    def identify(self, token: str) -> Caller:
        """The caller a token proves, or the problem with it."""
        try:
            return Caller(self._verify(token))
        except Problem as exc:
            return Caller(None, exc)

    def _verify(self, token: str) -> TokenSubject:
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except DecodeError:
            raise CredentialMalformed("The token is not a well-formed JWT.") from None
        except PyJWTError as exc:
            # A header PyJWT refuses for its shape (a `kid` that is not a string, a `crit` it
            # does not support): its message names the parameter, never the token.
            raise CredentialInvalid(f"The token's header is not acceptable: {exc}.") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.algorithms:
            shown = repr(alg) if isinstance(alg, str) and len(alg) <= 16 else "its algorithm"
            raise CredentialInvalid(f"Tokens signed with {shown} are not accepted.")
        if not isinstance(kid, str) or not kid:
            raise CredentialInvalid("The token names no signing key (kid).")
        key = self.keys.get(kid)
        if key is None:
            if self.keys.failing:
                raise IdentityProviderUnavailable(
                    "The token's signing key is new and the identity provider cannot be reached."
                )
            raise CredentialInvalid("The token is signed by a key the issuer does not list.")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except ExpiredSignatureError:
            raise CredentialExpired("The token has expired; sign in again.") from None
        except InvalidSignatureError:
            raise CredentialInvalid("The token's signature is not valid.") from None
        except DecodeError:
            raise CredentialMalformed("The token is not a well-formed JWT.") from None
        except InvalidTokenError as exc:
            # Wrong issuer or audience, not yet valid, a required claim missing: PyJWT's message
            # names the claim, never the token.
            raise CredentialInvalid(f"The token is not valid here: {exc}.") from None
        except PyJWTError as exc:
            # Any other refusal of PyJWT's (a key it cannot use for this token): still the
            # token's fault, never the service's.
            raise CredentialInvalid(f"The token cannot be verified: {exc}.") from None
        subject = claims.get(s.subject_claim)
        if (
            not isinstance(subject, str)
            or not 0 < len(subject) <= _MAX_SUBJECT
            or not subject.isprintable()
        ):
            raise CredentialInvalid(f"The token has no usable '{s.subject_claim}' claim.")
        granted: set[str] = set()
        for value in _claim_values(claims.get(s.scope_claim)):
            granted |= s.scopes.get(value, frozenset())
        return TokenSubject(f"oidc:{subject}", frozenset(granted))
