"""Command line: `python -m music_facade demo | check-config | mint-key | probe | mirror status |
webhooks status | webhooks retry | sandbox`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from . import connection_budget
from .config import ConfigError, Settings, load_settings, mask_url
from .core.alias import ALIAS_RE, ALIAS_RULE
from .startup import DEFAULT_WORKERS, summarize

DEMO_CONFIG = """\
default_user = "studio"

[upstream]
base_url = "{base_url}"
retries = 1

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


def demo(port: int) -> int:
    """Serve the sandbox upstream in this process and the service under gunicorn on `port`."""
    from .launch import GunicornProcess
    from .sandbox import SandboxServer

    # Before anything starts: a SIGTERM that lands while the banner is being read would otherwise
    # kill this process outright and orphan gunicorn (which holds our stdout open).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with SandboxServer() as sandbox, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "music.toml"
        database = json.dumps(f"sqlite:///{Path(tmp) / 'mirror.db'}")  # a TOML string
        config.write_text(
            DEMO_CONFIG.format(base_url=sandbox.base_url) + DEMO_MIRROR.format(database=database)
        )
        env = {"MUSIC_CONFIG": str(config), "USEAPI_TOKEN": sandbox.token}
        server = GunicornProcess(env, port=port, workers=1, quiet=False)
        new_track = '{"type": "song", "title": "Hello Mirror", "seconds": 6}'
        with server:
            print(
                f"music-facade is serving {server.url} against the sandbox at {sandbox.base_url}\n"
                f"  curl -s '{server.url}/music?user=studio&type=song'\n"
                f"  curl -s '{server.url}/music?user=edge'\n"
                f"  curl -s '{server.url}/openapi.yaml'\n"
                "The mirror (SQLite, synced every 10 s) answers these without calling the "
                "upstream:\n"
                f"  curl -s '{server.url}/tracks?q=neon&sort=-created_at'\n"
                f"  curl -s '{server.url}/tracks?user=studio&status=generating'\n"
                f"  curl -s '{server.url}/changes'\n"
                "Watch changes arrive live (in another terminal):\n"
                f"  curl -N '{server.url}/events'\n"
                "Add a track to the sandbox's studio account and watch it appear there and "
                "generate:\n"
                f"  curl -s -X POST '{sandbox.origin}/_sandbox/accounts/1001/tracks' "
                f"-H 'Content-Type: application/json' -d '{new_track}'\n"
                "Ctrl-C stops both.",
                flush=True,
            )
            try:
                assert server.proc is not None
                return server.proc.wait()
            except KeyboardInterrupt:
                return 0


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
    d = sub.add_parser("demo", help="run the service on 127.0.0.1 against the built-in sandbox")
    d.add_argument("--port", type=int, default=8080)
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
        return demo(args.port)
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
