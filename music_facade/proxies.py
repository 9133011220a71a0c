"""The caller's address behind a load balancer: X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_FORWARDED = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
              "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PREFIX", "HTTP_FORWARDED")  # fmt: skip


class TrustedProxyFix(ProxyFix):
    """werkzeug's ProxyFix, applied only when the connecting peer is one of our proxies.

    Like nginx's set_real_ip_from: a client that reaches the service directly cannot pick its
    own address (and so its rate-limit bucket, or what the access log says) with a forged
    X-Forwarded-For; its forwarding headers are dropped so nothing downstream reads them.
    """

    def __init__(self, app: Any, hops: int, trusted: Iterable[Network]) -> None:
        super().__init__(app, x_for=hops, x_proto=hops)
        self.trusted = tuple(trusted)

    def is_trusted(self, peer: str | None) -> bool:
        """Whether the connecting address is in a trusted network."""
        if not peer:
            return False
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        """Trust the forwarding headers of a trusted peer; drop anyone else's."""
        if self.is_trusted(environ.get("REMOTE_ADDR")):
            return super().__call__(environ, start_response)
        for name in _FORWARDED:
            environ.pop(name, None)
        return self.app(environ, start_response)
