"""Settings: MUSIC_CONFIG's TOML file plus the token from the environment, validated once."""

from __future__ import annotations

import base64
import dataclasses
import difflib
import ipaddress
import math
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from limits import parse_many
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema
from marshmallow.types import UnknownOption

from .core.alias import ALIAS_OR_ALL_PATTERN, ALIAS_PATTERN, ALIAS_RULE
from .core.change_events import EVENTS

# A bearer token goes into an HTTP header: visible ASCII only, no spaces.
_TOKEN_RE = re.compile(r"\A[!-~]+\Z")


class ConfigError(Exception):
    """The configuration is unusable: one line per error, each naming the key."""

    def __init__(self, *errors: str) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


class Secret:
    """A string that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _shown(value: Any) -> Any:
    """A setting's value as plain data: tuples as lists, sets sorted, secrets masked."""
    if isinstance(value, Secret):
        return "********"
    if isinstance(value, tuple):
        return [_shown(item) for item in value]
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, Mapping):
        return {key: _shown(item) for key, item in value.items()}
    return value


def _described(settings: Any, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A settings dataclass's fields, in their order, as plain data (describe()'s base)."""
    return {
        f.name: _shown(getattr(settings, f.name))
        for f in dataclasses.fields(settings)
        if f.name not in skip
    }


@dataclass(frozen=True)
class UpstreamSettings:
    """How to reach useapi.net."""

    token: Secret
    token_source: str = "USEAPI_TOKEN"  # noqa: S105 (a variable name, not a secret)
    base_url: str = "https://api.useapi.net/v1/tempolor"
    connect_timeout: float = 3.05
    read_timeout: float = 10.0
    retries: int = 2
    max_body_bytes: int = 5_000_000
    deadline: float | None = None
    """One bound on the whole exchange (connect, status line, headers, body, retries)."""
    max_cooldown: float = 60.0
    auth_failure_cooldown: float = 10.0
    breaker_failures: int = 5
    breaker_open: float = 15.0
    allow_http_links: bool = False
    """Pass on plain http download links (a sandbox on loopback), not only https ones."""

    @property
    def exchange_deadline(self) -> float:
        """Seconds one upstream exchange may take in all: deadline, else connect + read."""
        if self.deadline is not None:
            return self.deadline
        return self.connect_timeout + self.read_timeout


@dataclass(frozen=True)
class CacheSettings:
    """Page cache sizing and freshness, in seconds."""

    ttl: float = 30.0
    max_entries: int = 1024
    stale_if_error: float = 300.0


@dataclass(frozen=True)
class ClientSettings:
    """One calling app: its name, the SHA-256 of its keys, the aliases it may read, its limit."""

    name: str
    key_sha256: tuple[str, ...]
    users: frozenset[str]  # {"*"}: every alias
    rate_limit: str | None = None

    def may_read(self, alias: str) -> bool:
        """Whether this client's scope includes the alias."""
        return "*" in self.users or alias in self.users


@dataclass(frozen=True)
class LimitSettings:
    """Rate limits, in the `limits` library's notation ("120/minute", "10/second;500/hour")."""

    default: str = "120/minute"
    per_address: str | None = None  # only when no client is configured


@dataclass(frozen=True)
class RedisSettings:
    """The shared store of a load-balanced fleet (absent: every process keeps its own state)."""

    url: Secret  # may hold a password
    password: Secret | None = None  # from MUSIC_REDIS_PASSWORD_FILE
    prefix: str = "music-facade"
    timeout: float = 0.25  # seconds, for every Redis call and connection
    backoff_max: float = 30.0  # seconds between retries while Redis is down
    max_connections: int = 64  # per process

    def describe(self) -> dict[str, Any]:
        """The settings with the password masked (in the URL too)."""
        return {
            **_described(self),
            "url": mask_url(self.url.reveal()),
            "password": "******** (from MUSIC_REDIS_PASSWORD_FILE)" if self.password else None,
        }

    def secrets(self) -> list[str]:
        """Every secret string these settings hold, for log redaction."""
        return _secrets_of(self.url, self.password)


def _secrets_of(url: Secret, password: Secret | None) -> list[str]:
    """The password file's value and the URL's password, as written and percent-decoded."""
    found = [password.reveal()] if password else []
    in_url = urlsplit(url.reveal()).password
    return [*found, *([unquote(in_url), in_url] if in_url else [])]


@dataclass(frozen=True)
class MirrorSettings:
    """[mirror]: each alias's library held in a database and kept in sync (absent: no mirror)."""

    database: Secret  # sqlite:///path or postgresql://user@host:port/db; may hold a password
    password: Secret | None = None  # from MUSIC_MIRROR_PASSWORD_FILE; wins over the URL's
    interval: float = 60.0  # seconds between incremental syncs
    active_interval: float = 10.0  # seconds between refreshes of tracks still generating
    reconcile_every: float = 86400.0  # seconds between full walks
    max_calls_per_minute: int = 30  # upstream calls per account in any 60 s window
    changes_retention: float = 604800.0  # seconds the change log keeps superseded entries
    max_pages: int = 10000  # pages one walk reads at most

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql": the database's kind, from the URL's scheme."""
        return urlsplit(self.database.reveal()).scheme

    def describe(self) -> dict[str, Any]:
        """The settings with the password masked (in the URL too)."""
        return {
            **_described(self),
            "database": mask_url(self.database.reveal()),
            "password": "******** (from MUSIC_MIRROR_PASSWORD_FILE)" if self.password else None,
        }

    def secrets(self) -> list[str]:
        """Every secret string these settings hold, for log redaction."""
        return _secrets_of(self.database, self.password)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ********."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"{user}:********@{host}{port}").geturl()


# Asymmetric JWS algorithms only: `none` and HS* (a shared secret; with an IdP's public key as
# the "secret" it is the classic key-confusion forgery) are never accepted for IdP tokens.
OIDC_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip


@dataclass(frozen=True)
class OidcSettings:
    """[oidc]: bearer tokens (JWTs) from the company's identity provider."""

    issuer: str
    audience: str
    jwks_url: str | None = None  # None: from <issuer>/.well-known/openid-configuration
    algorithms: tuple[str, ...] = ("RS256",)
    leeway: float = 30.0  # seconds of clock skew for exp, nbf, iat
    scope_claim: str = "groups"  # a list, or a space-separated string
    subject_claim: str = "sub"  # what rate limits and logs count by: oidc:<value>
    scopes: Mapping[str, frozenset[str]] = field(default_factory=dict)  # claim value → aliases

    def describe(self) -> dict[str, Any]:
        """The settings as plain data (nothing secret: an IdP's URLs and claim names)."""
        return {**_described(self), "jwks_url": self.jwks_url or "(discovered from the issuer)"}


@dataclass(frozen=True)
class BulkheadSettings:
    """[upstream] max_concurrent_calls and max_wait: how many calls run, how long a miss waits."""

    max_concurrent_calls: int = 100
    max_wait: float = 5.0


BULKHEAD_KEYS = ("max_concurrent_calls", "max_wait")


@dataclass(frozen=True)
class LibrarySettings:
    """[library]: GET /library's tracks per call and the bounds of its walk over the pages."""

    max_items: int = 5000  # the default and maximum `limit`
    max_pages: int = 1000  # upstream pages one call reads, cached ones included
    max_seconds: float = 300.0  # one call's whole stream, writing included
    max_streams: int = 16  # /library answers one worker streams at once
    send_timeout: float = 30.0  # seconds one write may wait for a caller that stopped reading
    # Open mode without [limits] per_address: the pages a caller's address may have fetched.
    pages_per_address: str = "300/minute"


@dataclass(frozen=True)
class EventsSettings:
    """[events]: GET /events, the mirror's live change stream (only with [mirror])."""

    heartbeat: float = 15.0  # seconds between keep-alive comments on a quiet stream
    max_streams: int = 1000  # /events streams one worker holds open at once
    max_streams_per_client: int = 5  # /events streams one caller holds open across the fleet


@dataclass(frozen=True)
class WebhookSettings:
    """One [[webhooks]] receiver: the mirror's changes of its aliases and events, signed."""

    name: str
    url: str  # https (http only to a loopback host)
    secret: Secret  # whsec_ + base64 of the signing key
    secret_source: str  # where it was read: "secret_file <path>" or "secret_env <NAME>"
    users: frozenset[str]  # {"*"}: every alias
    events: tuple[str, ...] = EVENTS

    def describe(self) -> dict[str, Any]:
        """The settings with the secret masked."""
        return {
            "name": self.name,
            "url": self.url,
            "secret": f"******** (from {self.secret_source})",
            "users": _shown(self.users),
            "events": list(self.events),
        }


@dataclass(frozen=True)
class MetricsSettings:
    """[metrics]: who may scrape /metrics (Settings.metrics_access: without either key, anyone
    in open mode, nobody once keys or OIDC are configured)."""

    allow: tuple[str, ...] = ()  # CIDRs of the caller's address (after proxy_hops); () = any
    token_sha256: tuple[str, ...] = ()  # SHA-256 of accepted bearer tokens; () = none needed


@dataclass(frozen=True)
class Settings:
    """The whole, validated configuration of one service process."""

    upstream: UpstreamSettings
    users: Mapping[str, str]
    default_user: str | None = None
    cache: CacheSettings = field(default_factory=CacheSettings)
    clients: tuple[ClientSettings, ...] = ()
    limits: LimitSettings = field(default_factory=LimitSettings)
    cors_origins: tuple[str, ...] = ()
    proxy_hops: int = 0
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For is believed
    redis: RedisSettings | None = None
    bulkhead: BulkheadSettings = field(default_factory=BulkheadSettings)
    library: LibrarySettings = field(default_factory=LibrarySettings)
    events: EventsSettings = field(default_factory=EventsSettings)
    oidc: OidcSettings | None = None
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    mirror: MirrorSettings | None = None
    webhooks: tuple[WebhookSettings, ...] = ()

    @property
    def implicit_user(self) -> str | None:
        """The alias used when a request names none: default_user, or the only alias."""
        if self.default_user is not None:
            return self.default_user
        if len(self.users) == 1:
            return next(iter(self.users))
        return None

    @property
    def mode(self) -> str:
        """Who may call: "open" (anyone), "keyed" ([[clients]]), "OIDC", or "keyed+OIDC"."""
        if self.clients and self.oidc is not None:
            return "keyed+OIDC"
        if self.clients:
            return "keyed"
        return "OIDC" if self.oidc is not None else "open"

    @property
    def metrics_access(self) -> str:
        """Who may read /metrics: "restricted" ([metrics] allow or token_sha256), else "open" in
        open mode and "closed" once callers need a credential: the metrics name every alias
        and client, which a key holder must not learn."""
        if self.metrics.allow or self.metrics.token_sha256:
            return "restricted"
        return "open" if self.mode == "open" else "closed"

    def describe(self) -> dict[str, Any]:
        """The effective configuration as plain data, with the token masked.

        Each section's keys are its settings' fields, in their order; the layout is the file's
        ([upstream] holds the bulkhead's keys, [server] the proxy keys), and the values shown
        are the effective ones (the exchange's deadline, a client's limit).
        """
        up = self.upstream
        return {
            "default_user": self.default_user,
            "upstream": {
                "base_url": up.base_url,
                "token": f"******** (from {up.token_source})",
                **_described(up, skip=("token", "token_source", "base_url")),
                "deadline": up.exchange_deadline,
                **_described(self.bulkhead),
            },
            "users": _shown(self.users),
            "cache": _described(self.cache),
            "clients": [
                {**_described(c), "rate_limit": c.rate_limit or self.limits.default}
                for c in self.clients
            ],
            "limits": _described(self.limits),
            "cors": {"origins": _shown(self.cors_origins)},
            "server": {
                "proxy_hops": self.proxy_hops,
                "trusted_proxies": _shown(self.trusted_proxies),
            },
            "redis": self.redis.describe() if self.redis else None,
            "library": _described(self.library),
            "events": _described(self.events),
            "oidc": self.oidc.describe() if self.oidc else None,
            "metrics": {**_described(self.metrics), "access": self.metrics_access},
            "mirror": self.mirror.describe() if self.mirror else None,
            "webhooks": [hook.describe() for hook in self.webhooks],
        }


# --- the file's schema -------------------------------------------------------------------------


# No setting needs more; and a larger integer (TOML's hex ints escape Python's 4300-digit limit
# on parsing) could not be printed by check-config or turned into a float.
_INT_MAX = 2**63 - 1


class _StrictInt(fields.Integer):
    """An integer that TOML wrote as an integer: no floats, strings or booleans."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kw: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        if abs(value) > _INT_MAX:
            raise ValidationError(f"Not a valid integer: larger than {_INT_MAX}.")
        return value


class _StrictNumber(fields.Float):
    """A finite number that TOML wrote as a number: no strings, booleans, inf or nan."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kw: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        if isinstance(value, int) and abs(value) > _INT_MAX:
            raise ValidationError(f"Not a valid number: larger than {_INT_MAX}.")
        if not math.isfinite(value):
            raise ValidationError("Not a valid number: must be finite (no inf or nan).")
        return float(value)


class _StrictBool(fields.Boolean):
    """A boolean that TOML wrote as one: no strings or numbers."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kw: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


def _positive(what: str) -> validate.Range:
    return validate.Range(min=0, min_inclusive=False, error=f"must be greater than 0 ({what})")


class _StrictSchema(Schema):
    """A table whose unknown keys are errors, each with the closest known key as a hint."""

    class Meta:
        # Unknown keys are reported by _unknown_keys, which (unlike RAISE's fixed message)
        # can name the key that was probably meant.
        unknown: UnknownOption = EXCLUDE

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _unknown_keys(self, data: Any, original: Any, **kw: Any) -> None:
        if not isinstance(original, Mapping):
            return  # not a table: the field's own error says so
        known = [f.data_key or name for name, f in self.load_fields.items()]
        errors: dict[str, list[str]] = {}
        for key in original:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" Did you mean `{close[0]}`?" if close else ""
                errors[key] = [f"Unknown field.{hint}"]
        if errors:
            raise ValidationError(errors)


class _UpstreamSchema(_StrictSchema):
    base_url = fields.Url(schemes={"http", "https"}, require_tld=False)
    token_file = fields.String(validate=validate.Length(min=1))
    connect_timeout = _StrictNumber(validate=_positive("seconds"))
    read_timeout = _StrictNumber(validate=_positive("seconds"))
    retries = _StrictInt(validate=validate.Range(min=0, max=10))
    max_body_bytes = _StrictInt(validate=validate.Range(min=1024))
    deadline = _StrictNumber(validate=_positive("seconds"))
    max_cooldown = _StrictNumber(validate=validate.Range(min=1, max=3600))
    auth_failure_cooldown = _StrictNumber(validate=validate.Range(min=0, max=3600))
    breaker_failures = _StrictInt(validate=validate.Range(min=1, max=1000))
    breaker_open = _StrictNumber(validate=_positive("seconds"))
    max_concurrent_calls = _StrictInt(validate=validate.Range(min=1, max=10_000))
    max_wait = _StrictNumber(validate=validate.Range(min=0, max=60))
    allow_http_links = _StrictBool()

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _http_links_on_loopback(self, data: dict[str, Any], original: Any, **kw: Any) -> None:
        # A plain http link can be read or swapped by anyone on its path: only a sandbox on
        # this machine (whose media has no other origin) may hand them out.
        if not data.get("allow_http_links"):
            return
        if "base_url" not in data and isinstance(original, Mapping) and "base_url" in original:
            return  # base_url is wrong: its own error says so
        if not is_loopback_url(data.get("base_url", UpstreamSettings.base_url)):
            raise ValidationError(
                "may be true only when [upstream] base_url is on loopback "
                "(localhost, 127.0.0.0/8 or ::1): plain http links are for a local sandbox",
                "allow_http_links",
            )


def is_loopback_url(url: str) -> bool:
    """Whether a URL's host is this machine: localhost, 127.0.0.0/8 or ::1."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _CacheSchema(_StrictSchema):
    ttl = _StrictNumber(validate=validate.Range(min=0))
    max_entries = _StrictInt(validate=validate.Range(min=1))
    stale_if_error = _StrictNumber(validate=validate.Range(min=0))


def _check_rate_limit(value: str) -> None:
    try:
        parse_many(value)
    except ValueError:
        raise ValidationError(
            f"'{value}' is not a rate limit such as '120/minute' or '10/second;500/hour'"
        ) from None


_ORIGIN_RE = re.compile(r"\Ahttps?://[A-Za-z0-9.-]+(:[0-9]{1,5})?\Z")


def _check_origin(value: str) -> None:
    if not _ORIGIN_RE.match(value):
        raise ValidationError(
            f"'{value}' is not an origin such as 'https://app.example.com' (no path, no '*')"
        )


_SHA256_RE = re.compile(r"\A[0-9a-fA-F]{64}\Z")


class _KeyHashes(fields.Field[list[str]]):
    """One SHA-256 hex digest, or a list of them (several keys live during a rotation)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kw: Any) -> list[str]:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values:
            raise ValidationError("must be a SHA-256 hex digest or a non-empty list of them")
        for item in values:
            if not isinstance(item, str) or not _SHA256_RE.match(item):
                raise ValidationError(
                    "must be the 64-hex-digit SHA-256 of a key (see `music-facade mint-key`), "
                    "never the key itself"
                )
        return [v.lower() for v in values]


class _ClientSchema(_StrictSchema):
    name = fields.String(required=True, validate=validate.Regexp(ALIAS_PATTERN, error=ALIAS_RULE))
    key_sha256 = _KeyHashes(required=True)
    users = fields.List(
        fields.String(
            validate=validate.Regexp(
                ALIAS_OR_ALL_PATTERN, error=f"'{{input}}': {ALIAS_RULE}, or '*'"
            )
        ),
        required=True,
        validate=validate.Length(min=1),
    )
    rate_limit = fields.String(validate=_check_rate_limit)


class _LimitsSchema(_StrictSchema):
    default = fields.String(validate=_check_rate_limit)
    per_address = fields.String(validate=_check_rate_limit)


class _CorsSchema(_StrictSchema):
    origins = fields.List(fields.String(validate=_check_origin), required=True)


def _check_network(value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValidationError(
            f"'{value}' is not an address or network such as '10.0.0.0/8' or '127.0.0.1'"
        ) from None


class _ServerSchema(_StrictSchema):
    proxy_hops = _StrictInt(validate=validate.Range(min=0, max=5))
    trusted_proxies = fields.List(fields.String(validate=_check_network))

    @validates_schema
    def _check_trust(self, data: dict[str, Any], **kw: Any) -> None:
        # X-Forwarded-For from anyone would let a client pick its own address (rate limits).
        if data.get("proxy_hops", 0) and not data.get("trusted_proxies"):
            raise ValidationError(
                "proxy_hops needs trusted_proxies: the load balancer's addresses (CIDR list) "
                "whose X-Forwarded-For may be believed",
                "trusted_proxies",
            )


def _check_redis_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        # Never echo the value: it may hold a password.
        raise ValidationError("must be a redis:// or rediss:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValidationError("must be a redis:// or rediss:// URL with a valid port") from None


class _RedisSchema(_StrictSchema):
    url = fields.String(validate=_check_redis_url)
    prefix = fields.String(validate=validate.Regexp(r"\A[A-Za-z0-9_.:-]{1,64}\Z"))
    timeout = _StrictNumber(validate=validate.Range(min=0.01, max=5))
    backoff_max = _StrictNumber(validate=validate.Range(min=0.5, max=600))
    max_connections = _StrictInt(validate=validate.Range(min=2, max=10_000))


class _LibrarySchema(_StrictSchema):
    max_items = _StrictInt(validate=validate.Range(min=1, max=1_000_000))
    max_pages = _StrictInt(validate=validate.Range(min=1, max=100_000))
    max_seconds = _StrictNumber(validate=validate.Range(min=1, max=86_400))
    max_streams = _StrictInt(validate=validate.Range(min=1, max=10_000))
    send_timeout = _StrictNumber(validate=validate.Range(min=0.1, max=600))
    pages_per_address = fields.String(validate=_check_rate_limit)


class _EventsSchema(_StrictSchema):
    heartbeat = _StrictNumber(validate=validate.Range(min=0.05, max=300))
    max_streams = _StrictInt(validate=validate.Range(min=1, max=100_000))
    max_streams_per_client = _StrictInt(validate=validate.Range(min=1, max=100_000))


_DATABASE_URL_RULE = (
    "must be sqlite:///relative/path, sqlite:////absolute/path or "
    "postgresql://user@host:port/database"
)


def _check_database_url(value: str) -> None:
    # Never echo the value: it may hold a password.
    parts = urlsplit(value)
    if parts.scheme == "sqlite":
        # One file: no host, no query (the store sets its own pragmas), never ":memory:" (each
        # connection would see its own empty database).
        path = parts.path[1:] if value.startswith("sqlite:///") else ""
        if parts.netloc or parts.query or parts.fragment or path in ("", "/", ":memory:"):
            raise ValidationError(f"{_DATABASE_URL_RULE} (a SQLite file: no host, no query)")
        return
    if parts.scheme != "postgresql":
        raise ValidationError(_DATABASE_URL_RULE)
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValidationError(f"{_DATABASE_URL_RULE} (with a valid port)") from None
    query = parse_qs(parts.query, keep_blank_values=True)
    if not parts.hostname and "host" not in query:
        raise ValidationError(f"{_DATABASE_URL_RULE} (with a host)")
    if not parts.path.strip("/") or "/" in parts.path.strip("/") or parts.fragment:
        raise ValidationError(f"{_DATABASE_URL_RULE} (with one database name)")
    if "password" in query:
        # mask_url hides the URL's password, not a query's: the file keeps it out of sight.
        raise ValidationError("a password belongs in MUSIC_MIRROR_PASSWORD_FILE, not the query")


_WEEK = 7 * 86_400.0
_YEAR = 365 * 86_400.0


class _MirrorSchema(_StrictSchema):
    database = fields.String(validate=_check_database_url)
    interval = _StrictNumber(validate=[_positive("seconds"), validate.Range(max=86_400)])
    active_interval = _StrictNumber(validate=[_positive("seconds"), validate.Range(max=86_400)])
    reconcile_every = _StrictNumber(validate=[_positive("seconds"), validate.Range(max=_YEAR)])
    max_calls_per_minute = _StrictInt(validate=validate.Range(min=1, max=10_000))
    changes_retention = _StrictNumber(validate=[_positive("seconds"), validate.Range(max=_YEAR)])
    max_pages = _StrictInt(validate=validate.Range(min=1, max=10_000_000))


_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def _check_webhook_url(value: str) -> None:
    parts = urlsplit(value)
    # Plain http only to loopback: the body names the account's tracks, and anyone on the
    # path could read it (the signature proves who sent it, it hides nothing).
    if parts.scheme != "https" and not (
        parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
    ):
        raise ValidationError(
            "must be an https:// URL (http:// only to localhost, 127.0.0.1 or ::1)"
        )
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValidationError("must be a URL with a valid port") from None
    if not parts.hostname or parts.username is not None or parts.fragment:
        # Never echo the value: a user:password@ in it would be a secret.
        raise ValidationError("must be a URL with a host, no user:password@ and no #fragment")


class _WebhookSchema(_StrictSchema):
    name = fields.String(required=True, validate=validate.Regexp(ALIAS_PATTERN, error=ALIAS_RULE))
    url = fields.String(required=True, validate=_check_webhook_url)
    secret_file = fields.String(validate=validate.Length(min=1))
    secret_env = fields.String(validate=validate.Regexp(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z"))
    users = fields.List(
        fields.String(
            validate=validate.Regexp(
                ALIAS_OR_ALL_PATTERN, error=f"'{{input}}': {ALIAS_RULE}, or '*'"
            )
        ),
        required=True,
        validate=validate.Length(min=1),
    )
    events = fields.List(
        fields.String(validate=validate.OneOf(EVENTS, error="{input} is not one of {choices}")),
        validate=validate.Length(min=1),
    )

    @validates_schema
    def _one_secret(self, data: dict[str, Any], **kw: Any) -> None:
        if ("secret_file" in data) == ("secret_env" in data):
            raise ValidationError("give exactly one of secret_file and secret_env", "secret_file")


def _check_idp_url(value: str) -> None:
    parts = urlsplit(value)
    # Plain http only on loopback (a test IdP): anyone on the path could swap the keys.
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValidationError(f"'{value}' must be an https:// URL (http:// only on loopback)")
    if not parts.hostname or parts.query or parts.fragment:
        raise ValidationError(f"'{value}' must be an https:// URL with a host, no query")


_ALIAS_OR_ALL = validate.Regexp(ALIAS_OR_ALL_PATTERN)
_CLAIM_NAME = validate.Regexp(r"\A[!-~]{1,128}\Z")


class _OidcSchema(_StrictSchema):
    issuer = fields.String(required=True, validate=_check_idp_url)
    audience = fields.String(required=True, validate=validate.Length(min=1, max=256))
    jwks_url = fields.String(validate=_check_idp_url)
    algorithms = fields.List(
        fields.String(
            validate=validate.OneOf(
                OIDC_ALGORITHMS, error="{input} is not an asymmetric algorithm ({choices})"
            )
        ),
        validate=validate.Length(min=1),
    )
    leeway = _StrictNumber(validate=validate.Range(min=0, max=300))
    scope_claim = fields.String(validate=_CLAIM_NAME)
    subject_claim = fields.String(validate=_CLAIM_NAME)
    scopes = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=256)),
        values=fields.List(fields.String(validate=_ALIAS_OR_ALL), validate=validate.Length(min=1)),
    )


class _MetricsSchema(_StrictSchema):
    allow = fields.List(fields.String(validate=_check_network))
    token_sha256 = _KeyHashes()


class _FileSchema(_StrictSchema):
    default_user = fields.String(validate=validate.Regexp(ALIAS_PATTERN, error=ALIAS_RULE))
    upstream = fields.Nested(_UpstreamSchema)
    users = fields.Dict(
        keys=fields.String(validate=validate.Regexp(ALIAS_PATTERN, error=f"alias {ALIAS_RULE}")),
        values=fields.String(validate=validate.Regexp(r"\A[!-~]{1,256}\Z")),
        required=True,
    )
    cache = fields.Nested(_CacheSchema)
    clients = fields.List(fields.Nested(_ClientSchema))
    limits = fields.Nested(_LimitsSchema)
    cors = fields.Nested(_CorsSchema)
    server = fields.Nested(_ServerSchema)
    redis = fields.Nested(_RedisSchema)
    library = fields.Nested(_LibrarySchema)
    events = fields.Nested(_EventsSchema)
    oidc = fields.Nested(_OidcSchema)
    metrics = fields.Nested(_MetricsSchema)
    mirror = fields.Nested(_MirrorSchema)
    webhooks = fields.List(fields.Nested(_WebhookSchema))

    # The cross-field checks run even when other keys are wrong, on whatever is valid, and
    # report every problem they find: check-config shows every error in one run. An alias is
    # looked up among the file's [users] keys (even one whose value is wrong has its own error).
    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _check_oidc_scopes(self, data: dict[str, Any], original: Any, **kw: Any) -> None:
        users = _file_aliases(original)
        if users is None:
            return  # [users] missing or not a table: its own error says so
        errors = [
            f"'{alias}' (for '{value}') is not an alias in [users]"
            for value, aliases in data.get("oidc", {}).get("scopes", {}).items()
            for alias in aliases
            if alias != "*" and alias not in users
        ]
        if errors:
            raise ValidationError({"oidc.scopes": errors})

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _check_users(self, data: dict[str, Any], original: Any, **kw: Any) -> None:
        users = _file_aliases(original)
        if users is None:
            return  # missing or not a table: its own error says so
        if not users:
            raise ValidationError("must name at least one alias = upstream user_id", "users")
        default = data.get("default_user")
        if default is not None and default not in users:
            raise ValidationError(f"'{default}' is not an alias in [users]", "default_user")

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _check_clients(self, data: dict[str, Any], original: Any, **kw: Any) -> None:
        clients = data.get("clients", [])
        given = original.get("clients", []) if isinstance(original, Mapping) else None
        if not isinstance(given, list) or len(given) != len(clients):
            return  # an entry that is not a table left the list: positions would be wrong
        users = _file_aliases(original) or set()  # none: [users]'s own error says why
        names: set[str] = set()
        hashes: set[str] = set()
        errors: dict[str, list[str]] = {}
        for i, client in enumerate(clients):
            found = errors.setdefault(f"clients.{i}", [])
            name = client.get("name")  # absent when invalid: its own error says so
            if name is not None and name in names:
                found.append(f"'{name}' is used by another client")
            names.add(name)
            for alias in client.get("users", []) if users else []:
                if alias != "*" and alias not in users:
                    found.append(f"users: '{alias}' is not an alias in [users]")
            for digest in client.get("key_sha256", []):
                if digest in hashes:
                    found.append("key_sha256: a key is listed twice")
                hashes.add(digest)
        errors = {where: lines for where, lines in errors.items() if lines}
        if errors:
            raise ValidationError(errors)

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _check_webhooks(self, data: dict[str, Any], original: Any, **kw: Any) -> None:
        hooks = data.get("webhooks", [])
        given = original.get("webhooks", []) if isinstance(original, Mapping) else None
        if not isinstance(given, list) or not given:
            return
        errors: dict[str, list[str]] = {}
        if "mirror" not in original:
            # Deliveries are made from the mirror's change log: without it nothing is sent.
            errors["webhooks"] = ["needs a [mirror] section: webhooks send the mirror's changes"]
        if len(given) != len(hooks):
            # An entry that is not a table left the list: positions would be wrong.
            if errors:
                raise ValidationError(errors)
            return
        users = _file_aliases(original) or set()
        names: set[str] = set()
        for i, hook in enumerate(hooks):
            found = errors.setdefault(f"webhooks.{i}", [])
            name = hook.get("name")
            if name is not None and name in names:
                found.append(f"'{name}' is used by another webhook")
            names.add(name)
            for alias in hook.get("users", []) if users else []:
                if alias != "*" and alias not in users:
                    found.append(f"users: '{alias}' is not an alias in [users]")
        errors = {where: lines for where, lines in errors.items() if lines}
        if errors:
            raise ValidationError(errors)


def _file_aliases(original: Any) -> set[str] | None:
    """The aliases the file's [users] table names; None when it has none or it is no table."""
    if not isinstance(original, Mapping):
        return None
    users = original.get("users")
    return set(users) if isinstance(users, Mapping) else None


def _all_errors(messages: Any, path: str = "") -> list[str]:
    """Flatten marshmallow's nested messages to one 'dotted.key: message' line per error."""
    if isinstance(messages, dict):
        found: list[str] = []
        for key, value in messages.items():
            if key == "_schema":
                found += _all_errors(value, path)
            elif (
                key in ("key", "value")
                and isinstance(value, dict | list)
                and path.startswith("users")
            ):
                # fields.Dict reports {"<alias>": {"key": [...]}}: the alias is the useful name.
                found += _all_errors(value, path)
            else:
                name = str(key) if str(key).isprintable() else repr(str(key))  # keep it one line
                found += _all_errors(value, f"{path}.{name}" if path else name)
        return found
    if isinstance(messages, list):
        return [line for item in messages for line in _all_errors(item, path)]
    return [f"{path}: {messages}" if path else str(messages)]


def _hint(line: str) -> str:
    """The error line, with a hint when the value is mint-key's placeholder left unchanged."""
    if "<alias>" in line or "<" in line.split(":", 1)[0]:
        return line + " (replace the `<alias>` placeholder with an alias from [users])"
    return line


def parse_settings(document: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Validate a parsed TOML document and the environment into Settings, or raise ConfigError
    with every error found: the file's, the token's and Redis's together."""
    errors: list[str] = []
    try:
        data = _FileSchema().load(dict(document))
    except ValidationError as exc:
        errors += [_hint(line) for line in _all_errors(exc.messages)]
        data = exc.valid_data if isinstance(exc.valid_data, dict) else {}
        # A token_file that is itself wrong is reported; "no token" would only repeat it.
        upstream_errors = exc.messages.get("upstream") if isinstance(exc.messages, dict) else None
        check_token = not (isinstance(upstream_errors, dict) and "token_file" in upstream_errors)
    else:
        check_token = True
    upstream = dict(data.get("upstream", {}))
    token_file = upstream.pop("token_file", None)
    token, source = Secret(""), ""
    if check_token:
        try:
            token, source = _load_token(token_file, environ)
        except ConfigError as exc:
            errors += exc.errors
    try:
        redis = _redis_settings(data.get("redis", {}), environ)
    except ConfigError as exc:
        errors += exc.errors
    try:
        mirror = _mirror_settings(data.get("mirror", {}), document.get("mirror"), environ)
    except ConfigError as exc:
        errors += exc.errors
    try:
        webhooks = _webhook_settings(data.get("webhooks", []), environ)
    except ConfigError as exc:
        errors += exc.errors
    if errors:
        raise ConfigError(*errors)
    if "base_url" in upstream:
        upstream["base_url"] = upstream["base_url"].rstrip("/")
    bulkhead = {k: upstream.pop(k) for k in BULKHEAD_KEYS if k in upstream}
    return Settings(
        upstream=UpstreamSettings(token=token, token_source=source, **upstream),
        users=dict(data["users"]),
        default_user=data.get("default_user"),
        cache=CacheSettings(**data.get("cache", {})),
        clients=tuple(
            ClientSettings(
                name=c["name"],
                key_sha256=tuple(c["key_sha256"]),
                users=frozenset(c["users"]),
                rate_limit=c.get("rate_limit"),
            )
            for c in data.get("clients", [])
        ),
        limits=LimitSettings(**data.get("limits", {})),
        cors_origins=tuple(data.get("cors", {}).get("origins", [])),
        proxy_hops=data.get("server", {}).get("proxy_hops", 0),
        trusted_proxies=tuple(data.get("server", {}).get("trusted_proxies", [])),
        redis=redis,
        bulkhead=BulkheadSettings(**bulkhead),
        library=LibrarySettings(**data.get("library", {})),
        events=EventsSettings(**data.get("events", {})),
        oidc=_oidc_settings(data.get("oidc")),
        metrics=MetricsSettings(
            allow=tuple(data.get("metrics", {}).get("allow", [])),
            token_sha256=tuple(data.get("metrics", {}).get("token_sha256", [])),
        ),
        mirror=mirror,
        webhooks=webhooks,
    )


def ineffective_keys(settings: Settings) -> list[str]:
    """Configured keys that have no effect in this mode, each with why (warned at start)."""
    found = []
    if settings.clients and settings.limits.per_address is not None:
        found.append(
            "limits.per_address has no effect: clients are configured, so a request without a "
            "valid key counts against limits.default per address"
        )
    if settings.trusted_proxies and not settings.proxy_hops:
        found.append("server.trusted_proxies has no effect while server.proxy_hops is 0")
    return found


def _oidc_settings(section: dict[str, Any] | None) -> OidcSettings | None:
    """[oidc] as OidcSettings; None when absent."""
    if section is None:
        return None
    options = dict(section)
    options["scopes"] = {k: frozenset(v) for k, v in options.get("scopes", {}).items()}
    if "algorithms" in options:
        options["algorithms"] = tuple(options["algorithms"])
    return OidcSettings(**options)


def _redis_settings(section: dict[str, Any], environ: Mapping[str, str]) -> RedisSettings | None:
    """[redis] with MUSIC_REDIS_URL and MUSIC_REDIS_PASSWORD_FILE applied; None without a URL."""
    options = dict(section)
    url = environ.get("MUSIC_REDIS_URL") or options.pop("url", None)
    options.pop("url", None)
    if not url:
        if options:
            raise ConfigError("redis.url: required when [redis] is present (or MUSIC_REDIS_URL)")
        return None
    try:
        _check_redis_url(url)
    except ValidationError as exc:
        where = "MUSIC_REDIS_URL" if environ.get("MUSIC_REDIS_URL") else "redis.url"
        raise ConfigError(f"{where}: {exc.messages[0]}") from None
    path = environ.get("MUSIC_REDIS_PASSWORD_FILE")
    password = _read_secret_file("MUSIC_REDIS_PASSWORD_FILE", path) if path else None
    return RedisSettings(url=Secret(url), password=password, **options)


_MIRROR_VARIABLES = ("MUSIC_MIRROR_DATABASE_URL", "MUSIC_MIRROR_PASSWORD_FILE")


def _mirror_settings(
    section: dict[str, Any], given: Any, environ: Mapping[str, str]
) -> MirrorSettings | None:
    """[mirror] with MUSIC_MIRROR_DATABASE_URL and MUSIC_MIRROR_PASSWORD_FILE applied; None
    without the section. section holds its valid keys, given the section as the file wrote it."""
    if given is None:
        # Only the section turns the mirror on: a variable without it would be silently unused.
        unused = [name for name in _MIRROR_VARIABLES if environ.get(name)]
        if unused:
            raise ConfigError(
                *[
                    f"{name}: set, but the configuration has no [mirror] section (add one to turn "
                    "the mirror on, or unset the variable)"
                    for name in unused
                ]
            )
        return None
    if not isinstance(given, Mapping):
        return None  # not a table: the schema's error says so
    options = dict(section)
    url = environ.get("MUSIC_MIRROR_DATABASE_URL") or options.get("database")
    options.pop("database", None)
    errors: list[str] = []
    if not url:
        if "database" in given:
            return None  # there but invalid: its own error says so
        raise ConfigError(
            "mirror.database: required in [mirror] (or set MUSIC_MIRROR_DATABASE_URL)"
        )
    if environ.get("MUSIC_MIRROR_DATABASE_URL"):
        try:
            _check_database_url(url)
        except ValidationError as exc:
            errors.append(f"MUSIC_MIRROR_DATABASE_URL: {exc.messages[0]}")
    password = None
    path = environ.get("MUSIC_MIRROR_PASSWORD_FILE")
    if path:
        try:
            password = _read_secret_file("MUSIC_MIRROR_PASSWORD_FILE", path)
        except ConfigError as exc:
            errors += exc.errors
        if password is not None and urlsplit(url).scheme == "sqlite":
            errors.append("MUSIC_MIRROR_PASSWORD_FILE: set, but a SQLite database has no password")
    if errors:
        raise ConfigError(*errors)
    return MirrorSettings(database=Secret(url), password=password, **options)


def _webhook_settings(
    hooks: list[dict[str, Any]], environ: Mapping[str, str]
) -> tuple[WebhookSettings, ...]:
    """[[webhooks]] with each secret read from its file or variable and checked."""
    found: list[WebhookSettings] = []
    errors: list[str] = []
    for i, hook in enumerate(hooks):
        if "secret_file" in hook:
            key, source = f"webhooks.{i}.secret_file", f"secret_file {hook['secret_file']}"
            try:
                secret = _read_secret_file(key, hook["secret_file"])
            except ConfigError as exc:
                errors += exc.errors
                continue
        elif "secret_env" in hook:
            key, source = f"webhooks.{i}.secret_env", f"secret_env {hook['secret_env']}"
            value = environ.get(hook["secret_env"], "").strip()
            if not value:
                errors.append(f"{key}: the variable {hook['secret_env']} is not set or empty")
                continue
            secret = Secret(value)
        else:
            continue  # neither: the schema's error says so
        problem = _signing_secret_problem(secret.reveal())
        if problem:
            errors.append(f"{key}: {problem}")
            continue
        if not {"name", "url", "users"} <= hook.keys():
            continue  # one of them was invalid: its own error says so
        found.append(
            WebhookSettings(
                name=hook["name"],
                url=hook["url"],
                secret=secret,
                secret_source=source,
                users=frozenset(hook["users"]),
                events=tuple(dict.fromkeys(hook.get("events", EVENTS))),
            )
        )
    if errors:
        raise ConfigError(*errors)
    return tuple(found)


def _signing_secret_problem(value: str) -> str | None:
    """Why a webhook secret is unusable (never quoting it), or None."""
    if not value.startswith("whsec_"):
        return "the secret must be whsec_ followed by base64 (as Standard Webhooks writes it)"
    try:
        encoded = value.removeprefix("whsec_")
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:
        return "the secret after whsec_ is not valid base64"
    if len(key) < 24:
        return "the secret's key is shorter than 24 bytes (make one with 32 random bytes)"
    return None


def _read_secret_file(variable: str, path: str) -> Secret:
    """A mounted secret file's content, stripped; ConfigError naming the variable if unusable."""
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{variable}: cannot read {path}: {reason}") from None
    if not value:
        raise ConfigError(f"{variable}: the file is empty")
    return Secret(value)


def _load_token(token_file: str | None, environ: Mapping[str, str]) -> tuple[Secret, str]:
    """The useapi.net token: USEAPI_TOKEN, else USEAPI_TOKEN_FILE, else [upstream] token_file."""
    if environ.get("USEAPI_TOKEN") and environ.get("USEAPI_TOKEN_FILE"):
        raise ConfigError("USEAPI_TOKEN: set either USEAPI_TOKEN or USEAPI_TOKEN_FILE, not both")
    if environ.get("USEAPI_TOKEN"):
        value, source = environ["USEAPI_TOKEN"].strip(), "USEAPI_TOKEN"
    else:
        path = environ.get("USEAPI_TOKEN_FILE") or token_file
        if not path:
            raise ConfigError(
                "USEAPI_TOKEN: no upstream token; set USEAPI_TOKEN, USEAPI_TOKEN_FILE "
                "or [upstream] token_file"
            )
        key = "USEAPI_TOKEN_FILE" if environ.get("USEAPI_TOKEN_FILE") else "upstream.token_file"
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"{key}: cannot read {path}: {reason}") from None
        source = key
    if not value:
        raise ConfigError(f"{source}: the upstream token is empty")
    if not _TOKEN_RE.match(value):
        raise ConfigError(f"{source}: the upstream token must be visible ASCII without spaces")
    return Secret(value), source


def load_settings(environ: Mapping[str, str] | None = None, path: str | None = None) -> Settings:
    """Read the TOML file (path, else MUSIC_CONFIG) and the token from the environment."""
    env = os.environ if environ is None else environ
    path = path or env.get("MUSIC_CONFIG")
    if not path:
        raise ConfigError("MUSIC_CONFIG: not set; name the service's TOML configuration file")
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"MUSIC_CONFIG: cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"MUSIC_CONFIG: {path} is not valid TOML: {exc}") from None
    except ValueError:
        # tomllib lets int()'s own error through: more digits than Python converts (4300).
        raise ConfigError(
            f"MUSIC_CONFIG: {path}: an integer has more than {sys.get_int_max_str_digits()} digits"
        ) from None
    except RecursionError:
        raise ConfigError(f"MUSIC_CONFIG: {path}: arrays or tables nested too deeply") from None
    try:
        return parse_settings(document, env)
    except RecursionError:  # a nesting tomllib could still read, too deep for what follows
        raise ConfigError(f"MUSIC_CONFIG: {path}: arrays or tables nested too deeply") from None
