"""music-facade: one stable HTTP API in front of useapi.net's TemPolor music list.

`create_app` lives in music_facade.app and is imported on first use (PEP 562): gunicorn's master
imports music_facade.config and music_facade.worker, and must not import requests (urllib3 binds
`ssl.SSLContext` at import) before the gevent worker has monkey-patched `ssl` and `socket`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'music_facade' has no attribute {name!r}")
