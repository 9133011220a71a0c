"""A stub upstream for the benchmark: one sandbox page for any query, after a chosen delay.

    python -m bench.upstream --fd N

Serves on the listening socket N (opened by the caller) with gevent's WSGI server, so it holds
hundreds of concurrent delayed answers without spending the bench's CPU. The delay is the
user_id: `d200` answers after 200 ms. Any cursor is accepted, so every cursor is a distinct
page for the service's cache. The body is the sandbox's first song page of account 1001.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402 (after patching, as gevent requires)
import socket  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import parse_qs  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from music_facade.sandbox import SANDBOX_TOKEN, create_sandbox  # noqa: E402

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def sandbox_page() -> bytes:
    """The page the real sandbox answers for account 1001's first songs."""
    client = create_sandbox().test_client()
    resp = client.get(
        "/v1/tempolor/music/?user_id=1001&type=song",
        headers={"Authorization": f"Bearer {SANDBOX_TOKEN}"},
    )
    assert resp.status_code == 200
    return resp.get_data()


def make_app(body: bytes) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The stub's WSGI app."""
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        user_id = parse_qs(environ.get("QUERY_STRING", "")).get("user_id", ["d0"])[0]
        delay_ms = int(user_id[1:]) if user_id[:1] == "d" and user_id[1:].isdigit() else 0
        if delay_ms:
            gevent.sleep(delay_ms / 1000)
        start_response("200 OK", headers)
        return [body]

    return app


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    listener = socket.socket(fileno=args.fd)
    WSGIServer(listener, make_app(sandbox_page()), log=None).serve_forever()


if __name__ == "__main__":
    main()
