"""Container health check: exit 0 when the service answers GET /healthz with 200, else 1.

Slim images have no curl; this uses only the standard library. The port is MUSIC_BIND's (the
same variable deploy/gunicorn.conf.py binds to); the path can be given as the first argument.
"""

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    """Ask the local service for a path (default /healthz) and report whether it answered 200."""
    path = argv[1] if len(argv) > 1 else "/healthz"
    port = os.environ.get("MUSIC_BIND", "0.0.0.0:8080").rsplit(":", 1)[-1]
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
