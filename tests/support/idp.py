"""A test identity provider on loopback: discovery document and JWKS over real HTTP, keys made here.

It signs tokens with its keys (RSA and EC, generated per instance), can rotate to a new key, go
down (answer 503), drip its JWKS answer a byte at a time (from the status line, or only the
body), and counts the JWKS fetches, so tests can see the service's refetch floor and deadline.
oidc_settings() gives the [oidc] settings that trust it.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from music_facade.config import OidcSettings

AUDIENCE = "music-facade"


@functools.cache
def _shared_rsa_key() -> rsa.RSAPrivateKey:
    """The RSA key material every TestIdP's first key uses, under its own kid: making a 2048-bit
    key takes 50 ms and the tests start an IdP each. Rotations and forgeries make their own."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class SigningKey:
    """A private key, its kid and algorithm, and its public JWK."""

    def __init__(self, alg: str = "RS256", rsa_key: rsa.RSAPrivateKey | None = None) -> None:
        """A new key for alg (RS256: rsa_key's material when given); always a new kid."""
        self.alg = alg
        self.kid = uuid.uuid4().hex[:12]
        self.private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if alg.startswith("ES"):
            self.private = ec.generate_private_key(ec.SECP256R1())
        elif rsa_key is not None:
            self.private = rsa_key
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        algorithm = jwt.get_algorithm_by_name(alg)
        jwk = json.loads(algorithm.to_jwk(self.private.public_key()))
        self.jwk: dict[str, Any] = jwk | {"kid": self.kid, "alg": alg, "use": "sig"}


class TestIdP:
    """An issuer on a random loopback port; `issuer` is its URL."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.keys = [SigningKey("RS256", _shared_rsa_key()), SigningKey("ES256")]
        self.down = False
        # Seconds between two bytes of a JWKS answer (None: all at once), from its first byte
        # ("headers") or once the headers are sent ("body").
        self.drip: float | None = None
        self.drip_from = "headers"
        self._stopping = threading.Event()
        self.extra_jwks: list[Any] = []  # served beside the keys (a hostile IdP's entries)
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self._lock = threading.Lock()
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with idp._lock:
                    if self.path == "/.well-known/openid-configuration":
                        idp.discovery_fetches += 1
                        doc: dict[str, Any] = {
                            "issuer": idp.issuer,
                            "jwks_uri": idp.issuer + "/certs",
                        }
                    elif self.path == "/certs":
                        idp.jwks_fetches += 1
                        doc = {"keys": [*idp.extra_jwks, *(k.jwk for k in idp.keys)]}
                    else:
                        self.send_error(404)
                        return
                    down = idp.down
                    drip = idp.drip if self.path == "/certs" else None
                if down:
                    self.send_error(503)
                    return
                body = json.dumps(doc).encode()
                head = (
                    "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                if drip is None:
                    self.wfile.write(head + body)
                elif idp.drip_from == "body":
                    self.wfile.write(head)
                    self._drip(body, drip)
                else:
                    self._drip(head + body, drip)

            def _drip(self, data: bytes, seconds: float) -> None:
                """One byte, then a pause; until done, the reader hangs up, or the IdP stops."""
                for i in range(len(data)):
                    try:
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                    except OSError:
                        return  # the service cut the fetch
                    if idp._stopping.wait(seconds):
                        return

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.jwks_url = self.issuer + "/certs"
        # A short poll: shutdown() waits up to one interval, and every test stops its IdP.
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def __enter__(self) -> TestIdP:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # ends any drip still going
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def rotate(self) -> SigningKey:
        """Publish a new RSA key (beside the old ones) and return it."""
        key = SigningKey("RS256")
        with self._lock:
            self.keys = [*self.keys, key]
        return key

    def token(
        self,
        sub: str = "alice",
        groups: list[str] | str | None = None,
        *,
        key: SigningKey | None = None,
        lifetime: float = 300,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A token signed by key (default: the first), with the usual claims, overridable."""
        key = key or self.keys[0]
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": now,
            "exp": now + int(lifetime),
        }
        if groups is not None:
            payload["groups"] = groups
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}  # None: leave it out
        return jwt.encode(
            payload, key.private, algorithm=key.alg, headers={"kid": key.kid, **(headers or {})}
        )

    def raw_token(self, header: dict[str, Any], claims: dict[str, Any] | None = None) -> str:
        """A token with exactly this header, signed by the first key whatever the header says.

        PyJWT's encode refuses some headers a stranger can still send (a non-string `kid`);
        this writes the segments by hand. claims: the usual music-studio claims by default.
        """
        key = self.keys[0]
        now = int(time.time())
        payload = claims if claims is not None else {
            "iss": self.issuer, "aud": AUDIENCE, "sub": "alice", "exp": now + 300,
            "groups": ["music-studio"],
        }  # fmt: skip
        signing_input = ".".join(_segment(part) for part in (header, payload))
        signature = jwt.get_algorithm_by_name(key.alg).sign(signing_input.encode(), key.private)
        return signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def _segment(doc: dict[str, Any]) -> str:
    """A JWT segment: base64url of the JSON, unpadded (non-JSON floats as Python writes them)."""
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


@contextmanager
def running_idp() -> Iterator[TestIdP]:
    """A TestIdP for the duration of the block."""
    with TestIdP() as idp:
        yield idp


# The groups a token may carry and the aliases each one reads.
SCOPES = {
    "music-studio": frozenset({"studio"}),
    "music-admin": frozenset({"*"}),
}


def oidc_settings(idp: TestIdP, **changes: Any) -> OidcSettings:
    """[oidc] settings trusting idp for AUDIENCE with SCOPES; changes replace any field."""
    options: dict[str, Any] = {
        "issuer": idp.issuer,
        "audience": AUDIENCE,
        "jwks_url": idp.jwks_url,
        "algorithms": ("RS256", "ES256"),
        "scopes": SCOPES,
    }
    return OidcSettings(**(options | changes))
