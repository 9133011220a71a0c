"""Command line: `python -m music_facade demo | check-config | mint-key | probe | mirror status |
webhooks status | webhooks retry | sandbox`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import connection_budget
from .config import ConfigError, Settings, load_settings, mask_url
from .core.alias import ALIAS_RE, ALIAS_RULE
from .startup import DEFAULT_WORKERS, summarize

DEMO_CONFIG = """\
default_user = "studio"

[upstream]
base_url = "{base_url}"
retries = 1
# The sandbox serves its covers and audio itself, over plain http on loopback.
allow_http_links = true

[users]
studio = "1001"
edge = "1002"
empty = "1003"
"""

# The demo's mirror: SQLite beside the configuration, and intervals short enough that a track
# added to the sandbox shows up in /tracks and /changes within seconds.
DEMO_MIRROR = """
[mirror]
database = {database}
interval = 10
active_interval = 2
"""


def check_config(path: str | None = None) -> int:
    """Print the effective configuration (token masked), or every line that is wrong; on
    stderr, what it runs as (the start-up line) and its warnings."""
    errors = []
    settings: Settings | None = None
    try:
        settings = load_settings(path=path)
    except ConfigError as exc:
        errors += exc.errors
    workers = os.environ.get("MUSIC_WORKERS", str(DEFAULT_WORKERS))
    if not workers.isdecimal() or int(workers) < 1:  # as deploy/gunicorn.conf.py reads it
        errors.append(f"MUSIC_WORKERS: {workers!r} is not a positive number of workers")
    connections = connection_budget.from_environment()
    if isinstance(connections, str):
        errors.append(connections)
    elif settings is not None:
        unfit = connection_budget.problem(settings, connections)
        if unfit is not None:
            errors.append(unfit)
    if errors or settings is None:
        for line in errors:
            print(f"music-facade: configuration error: {line}", file=sys.stderr)
        return 2
    summary = summarize(settings, int(workers))
    print(f"music-facade: runs: {summary.line}", file=sys.stderr)
    for line in summary.warnings:
        print(f"music-facade: warning: {line}", file=sys.stderr)
    print(json.dumps(settings.describe(), indent=2))
    return 0


def mint_key(name: str) -> int:
    """Print a new client key once, and the [[clients]] entry that stores only its digest."""
    from .auth import mint_key as new_key

    if not ALIAS_RE.match(name):
        print(f"music-facade: mint-key --name {name!r}: {ALIAS_RULE}", file=sys.stderr)
        return 2
    key, digest = new_key()
    print(
        f"Key for client '{name}' (hand it over now; it is not stored anywhere):\n\n"
        f"    {key}\n\n"
        "Configuration entry (to rotate, add the digest to the client's key_sha256 list):\n\n"
        f'    [[clients]]\n    name = "{name}"\n    key_sha256 = "{digest}"\n'
        '    users = ["<alias>"]  # placeholder: the aliases from [users] it may read, or "*"\n'
    )
    return 0


def probe(user: str | None, type_: str, as_json: bool) -> int:
    """Call the upstream once per alias (or the one named) and report; see music_facade/probe.py."""
    from .probe import EXIT_USAGE, exit_code, render_json, render_text, run_probe

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"music-facade: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if user is not None and user not in settings.users:
        print(f"music-facade: '{user}' is not a configured user alias", file=sys.stderr)
        return EXIT_USAGE
    aliases = [user] if user is not None else sorted(settings.users)
    reports = run_probe(settings, aliases, type_)
    (render_json if as_json else render_text)(reports, sys.stdout)
    return exit_code(reports)


def _mirrored_settings() -> Settings | None:
    """The configuration of a command that reads the mirror's database; None (having said why
    on stderr) when it cannot be loaded or has no [mirror]."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        for line in exc.errors:
            print(f"music-facade: configuration error: {line}", file=sys.stderr)
        return None
    if settings.mirror is None:
        print(
            "music-facade: the mirror is off: the configuration has no [mirror] section",
            file=sys.stderr,
        )
        return None
    return settings


def mirror_status(as_json: bool) -> int:
    """Print where the mirror of each alias and type stands, from its database alone."""
    from .mirror_status import StatusError, collect, open_store, render_json, render_text

    settings = _mirrored_settings()
    if settings is None or settings.mirror is None:
        return 2
    try:
        store = open_store(settings.mirror)
    except StatusError as exc:
        print(f"music-facade: {exc}", file=sys.stderr)
        return 2
    try:
        rows = collect(store, sorted(settings.users), settings.mirror.interval)
    finally:
        store.close()
    shown = mask_url(settings.mirror.database.reveal())
    (render_json if as_json else render_text)(shown, settings.mirror.interval, rows, sys.stdout)
    return 0


def webhooks(command: str, name: str | None, as_json: bool) -> int:
    """`webhooks status`: each webhook's deliveries; `webhooks retry NAME`: its failed ones
    pending again. Both from the mirror's database alone."""
    from .mirror_status import StatusError, open_store
    from .webhook_status import collect, render_json, render_text

    settings = _mirrored_settings()
    if settings is None or settings.mirror is None:
        return 2
    names = [hook.name for hook in settings.webhooks]
    if not names:
        print("music-facade: the configuration has no [[webhooks]]", file=sys.stderr)
        return 2
    if name is not None and name not in names:
        print(
            f"music-facade: '{name}' is not a configured webhook (configured: {', '.join(names)})",
            file=sys.stderr,
        )
        return 2
    try:
        store = open_store(settings.mirror)
    except StatusError as exc:
        print(f"music-facade: {exc}", file=sys.stderr)
        return 2
    try:
        if command == "retry":
            assert name is not None
            count = store.outbox.retry(name)
            print(f"webhook {name}: {count} failed deliveries pending again, due now")
            return 0
        rows = collect(store, names)
    finally:
        store.close()
    shown = mask_url(settings.mirror.database.reveal())
    (render_json if as_json else render_text)(shown, rows, sys.stdout)
    return 0


def demo(args: argparse.Namespace) -> int:
    """The sandbox, the service and the example app on loopback; see music_facade/demo.py."""
    from .demo import DemoOptions, run_demo

    options = DemoOptions(
        port=args.port,
        app_port=args.app_port,
        cors_origins=tuple(args.cors_origin),
        config=args.config,
    )
    return run_demo(options, DEMO_CONFIG + DEMO_MIRROR)


def sandbox(host: str, port: int) -> int:
    """Run the sandbox upstream alone in the foreground."""
    from .sandbox.__main__ import main as sandbox_main

    return sandbox_main(["--host", host, "--port", str(port)])


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command."""
    parser = argparse.ArgumentParser(
        prog="music-facade",
        description="music-facade: a stable HTTP API in front of useapi.net's TemPolor music list. "
        "Production: gunicorn -c deploy/gunicorn.conf.py 'music_facade:create_app()'.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "demo",
        help="run the service and the example web app on 127.0.0.1 against the built-in sandbox",
        description="Start the sandbox upstream, the service (gunicorn) and the example web app "
        "on loopback, with a client key minted for this run; print the app's URL, the key and "
        "curl commands. Ctrl-C stops everything.",
    )
    d.add_argument(
        "--port", type=int, default=8080, help="the service's port (default 8080; 0: any free)"
    )
    d.add_argument(
        "--app-port",
        type=int,
        default=8090,
        help="the example app's port, its own browser origin (default 8090; 0: any free)",
    )
    d.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="another browser origin allowed to call the service, e.g. http://localhost:5173 "
        "(repeatable; the example app's origin is always allowed)",
    )
    d.add_argument(
        "--config",
        metavar="PATH",
        help="your own TOML configuration, merged over the demo's table by table (the upstream "
        "stays the sandbox; the demo's client key and origins are kept)",
    )
    c = sub.add_parser(
        "check-config",
        help="validate the configuration (PATH, else MUSIC_CONFIG) and the token; print every "
        "error, or the effective configuration (masked)",
    )
    c.add_argument("path", nargs="?", metavar="PATH", help="the TOML file (default: MUSIC_CONFIG)")
    m = sub.add_parser("mint-key", help="make a new random client key and its key_sha256 line")
    m.add_argument(
        "--name", default="app", help=f"the client's name in the printed entry ({ALIAS_RULE})"
    )
    p = sub.add_parser(
        "probe",
        help="call the upstream once per configured alias and report status, latency, "
        "encoding, sizes, records and schema drift (exit 0: all valid, 1: a failure, 2: usage)",
    )
    p.add_argument("--user", metavar="ALIAS", help="probe only this alias")
    p.add_argument("--type", choices=("song", "instrumental"), default="song")
    p.add_argument("--json", action="store_true", help="one JSON document for scripts")
    mirror = sub.add_parser("mirror", help="the mirror's database (see `mirror status`)")
    mirror_sub = mirror.add_subparsers(dest="mirror_command", required=True)
    ms = mirror_sub.add_parser(
        "status",
        help="per alias and type from the mirror's database (no upstream call): tracks, "
        "generating, last complete sync, lag, last error (exit 0, or 2 when it cannot be read)",
    )
    ms.add_argument("--json", action="store_true", help="one JSON document for scripts")
    hooks = sub.add_parser("webhooks", help="the webhooks' outbox in the mirror's database")
    hooks_sub = hooks.add_subparsers(dest="webhooks_command", required=True)
    hs = hooks_sub.add_parser(
        "status",
        help="per webhook: pending, failed, delivered in the last 24 h, the oldest pending "
        "delivery's age, the last failed attempt's answer (exit 0, or 2 when it cannot be read)",
    )
    hs.add_argument("--json", action="store_true", help="one JSON document for scripts")
    hr = hooks_sub.add_parser(
        "retry",
        help="make a webhook's failed deliveries pending again, due now, for another 24 hours",
    )
    hr.add_argument("name", metavar="NAME", help="the webhook's name in [[webhooks]]")
    s = sub.add_parser("sandbox", help="run the sandbox upstream alone")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8081)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args)
    if args.command == "check-config":
        return check_config(args.path)
    if args.command == "mint-key":
        return mint_key(args.name)
    if args.command == "probe":
        return probe(args.user, args.type, args.json)
    if args.command == "mirror":
        return mirror_status(args.json)
    if args.command == "webhooks":
        if args.webhooks_command == "retry":
            return webhooks("retry", args.name, False)
        return webhooks("status", None, args.json)
    return sandbox(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
