"""Run the sandbox upstream in the foreground: python -m music_facade.sandbox [--port 8081]."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

from music_facade.sandbox.server import SandboxServer


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _generation(text: str) -> tuple[str, int]:
    """USER_ID=N from the command line: an account of N synthetic records."""
    user_id, _, count = text.rpartition("=")
    if not user_id or not count.isdigit():
        raise argparse.ArgumentTypeError(f"expected USER_ID=N, got {text!r}")
    return user_id, int(count)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, print the base URL and token, serve until Ctrl+C."""
    parser = argparse.ArgumentParser(
        prog="python -m music_facade.sandbox",
        description="A fake of useapi.net's TemPolor music list endpoint, for local use.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8081, help="port to listen on (0: any)")
    parser.add_argument("--page-size", type=int, default=10, help="records per page")
    parser.add_argument(
        "--encodings",
        default="gzip,deflate",
        help="what JSON answers are compressed with when the request accepts it, in order of "
        "preference (comma-separated; '' sends them uncompressed)",
    )
    parser.add_argument(
        "--generate",
        type=_generation,
        action="append",
        default=[],
        metavar="USER_ID=N",
        help="give account USER_ID (new or not) N synthetic records, half songs and half "
        "instrumentals, for benchmarks; repeatable",
    )
    args = parser.parse_args(argv)
    if args.page_size < 1:
        parser.error("--page-size must be at least 1")
    encodings = tuple(e.strip() for e in args.encodings.split(",") if e.strip())
    if not set(encodings) <= {"gzip", "deflate"}:
        parser.error("--encodings takes gzip and/or deflate")
    server = SandboxServer(
        host=args.host,
        port=args.port,
        page_size=args.page_size,
        quiet=False,
        encodings=encodings,
    )
    for user_id, count in args.generate:
        try:
            server.state.library.generate(user_id, count - count // 2, count // 2)
        except ValueError as exc:
            parser.error(f"--generate {user_id}={count}: {exc}")
    server.bind()
    print(f"sandbox upstream base URL: {server.base_url}", flush=True)
    print(f"sandbox upstream token:    {server.token}", flush=True)
    print(f"control API:               {server.origin}/_sandbox/...", flush=True)
    # SIGTERM (docker stop, kill) closes the socket the same way Ctrl+C does.
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
