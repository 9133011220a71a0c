"""`music-facade demo`: the sandbox upstream in this process, the service under gunicorn, and the
example web app on an origin of its own, wired so a browser page can use the service at once."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .auth import mint_key
from .config import ConfigError, parse_settings
from .demo_config import DemoConfigError, demo_document, read_operator_config, to_toml
from .example_app import ExampleAppServer
from .launch import GunicornProcess

PROG = "music-facade demo"


@dataclass(frozen=True)
class DemoOptions:
    """What the command line chose."""

    port: int = 8080
    app_port: int = 8090
    cors_origins: tuple[str, ...] = ()
    config: str | None = None


class DemoError(Exception):
    """A reason the demo cannot start, said in one line."""


def _listen(port: int, flag: str) -> socket.socket:
    """A listening loopback socket on `port`; DemoError naming `flag` when it cannot be had."""
    try:
        return socket.create_server(("127.0.0.1", port), backlog=2048)
    except OSError as exc:
        raise _unlistenable(exc, port, flag) from None


def _gunicorn(port: int) -> GunicornProcess:
    """The service's process, its socket bound now (it is started later)."""
    try:
        return GunicornProcess({}, port=port, workers=1, quiet=False)
    except OSError as exc:
        raise _unlistenable(exc, port, "--port") from None


def _unlistenable(exc: OSError, port: int, flag: str) -> DemoError:
    """Why `port` cannot be listened on, and the flag that picks another."""
    if exc.errno == errno.EADDRINUSE:
        return DemoError(f"port {port} is in use; pick another with {flag}")
    return DemoError(f"cannot listen on port {port} ({exc.strerror}); pick another with {flag}")


def banner(
    app_url: str,
    key: str,
    service_url: str,
    sandbox_origin: str,
    base_url: str,
    config: str | None = None,
) -> str:
    """What the demo prints once everything answers: the app first, then the key, then curl."""
    url = service_url
    # Only with --config: without it there is nothing of the user's to read again.
    reload = (
        f"Edit {config} and reload it (the key stays valid): kill -HUP {os.getpid()}\n"
        if config
        else ""
    )
    auth = '-H "Authorization: Bearer $MUSIC_KEY"'
    new_track = '{"type": "song", "title": "Hello Mirror", "seconds": 6}'
    return (
        f"Open the example app: {app_url}/\n"
        f"Client key (this demo's own, valid until it stops): {key}\n"
        f"music-facade is serving {url} against the sandbox at {base_url}\n"
        f"  export MUSIC_KEY={key}\n"
        f"  curl -s {auth} '{url}/music?user=studio&type=song'\n"
        f"  curl -s {auth} '{url}/music?user=edge'\n"
        f"  curl -s '{url}/openapi.yaml'\n"
        "The mirror (SQLite, synced every 10 s) answers these without calling the upstream:\n"
        f"  curl -s {auth} '{url}/tracks?q=neon&sort=-created_at'\n"
        f"  curl -s {auth} '{url}/tracks?user=studio&status=generating'\n"
        f"  curl -s {auth} '{url}/changes'\n"
        "Watch changes arrive live (in another terminal):\n"
        f"  curl -N {auth} '{url}/events'\n"
        "Add a track to the sandbox's studio account and watch it appear there and generate:\n"
        f"  curl -s -X POST '{sandbox_origin}/_sandbox/accounts/1001/tracks' "
        f"-H 'Content-Type: application/json' -d '{new_track}'\n"
        f"{reload}"
        "Ctrl-C stops them all."
    )


def run_demo(options: DemoOptions, template: str) -> int:
    """Run the demo until interrupted; `template` is the demo's TOML with {base_url} and
    {database} to fill in. Exit 2 (one line on stderr) when it cannot start."""
    from .sandbox import SandboxServer

    # Before anything starts: a SIGTERM that lands while the banner is being read would otherwise
    # kill this process outright and orphan gunicorn (which holds our stdout open).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        operator = None if options.config is None else read_operator_config(options.config)
        # Both ports before anything starts, so a busy one costs nothing and says which flag.
        app_sock = _listen(options.app_port, "--app-port")
    except (DemoError, DemoConfigError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        server = _gunicorn(options.port)
    except DemoError as exc:
        app_sock.close()
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    app = ExampleAppServer(app_sock, api_base=server.url)
    key, digest = mint_key()
    with SandboxServer() as sandbox, tempfile.TemporaryDirectory() as tmp:

        def build(operator: dict[str, Any] | None) -> dict[str, Any]:
            """The whole configuration: the demo's, the operator's file merged over it."""
            return demo_document(
                template,
                base_url=sandbox.base_url,
                database=f"sqlite:///{Path(tmp) / 'mirror.db'}",
                key_digest=digest,
                origins=[app.url, *options.cors_origins],
                operator=operator,
            )

        def rebuilt() -> dict[str, Any]:
            """The configuration again, from the operator's file as it is now."""
            return build(None if options.config is None else read_operator_config(options.config))

        document = build(operator)
        env = {"USEAPI_TOKEN": sandbox.token}
        problems = _check(document, env)
        if problems:
            server.stop()
            app.server.server_close()
            for line in problems:
                print(f"{PROG}: configuration error: {line}", file=sys.stderr)
            return 2
        config = Path(tmp) / "music.toml"
        config.write_text(to_toml(document))
        server.env.update(env, MUSIC_CONFIG=str(config))

        with server, app:
            gunicorn = server.proc
            assert gunicorn is not None
            signal.signal(signal.SIGHUP, lambda *_: _reload(rebuilt, env, config, gunicorn))
            print(
                banner(app.url, key, server.url, sandbox.origin, sandbox.base_url, options.config),
                flush=True,
            )
            try:
                return _wait(gunicorn)
            except KeyboardInterrupt:
                return 0


def _wait(gunicorn: subprocess.Popen[bytes]) -> int:
    """gunicorn's exit status, waiting in short slices. The kernel hands a signal sent to this
    process (SIGTERM, SIGHUP) to any of its threads; when that is the sandbox's or the app's
    server thread, a main thread blocked in one long waitpid() never returns to run the Python
    handler, and the demo would ignore it until gunicorn exits by itself."""
    while True:
        try:
            return gunicorn.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            continue


def _reload(
    rebuild: Callable[[], dict[str, Any]],
    env: dict[str, str],
    config: Path,
    gunicorn: subprocess.Popen[bytes],
) -> None:
    """SIGHUP: merge the operator's --config again and have the service reload it (gunicorn's
    own SIGHUP: new workers with the new file, the old ones drained). A file that cannot be read
    or does not check is one line per error, and the service keeps what it runs with; the
    demo's key, origins, sandbox and mirror database stay as they were."""
    try:
        document = rebuild()
    except DemoConfigError as exc:
        print(f"{PROG}: reload: {exc}; still serving the previous configuration", file=sys.stderr)
        return
    problems = _check(document, env)
    for line in problems:
        print(f"{PROG}: reload: configuration error: {line}", file=sys.stderr)
    if problems:
        print(f"{PROG}: reload: still serving the previous configuration", file=sys.stderr)
        return
    # Replaced in one step: gunicorn's master must never read a half-written file.
    staged = config.with_name(config.name + ".new")
    staged.write_text(to_toml(document))
    os.replace(staged, config)
    gunicorn.send_signal(signal.SIGHUP)
    print(f"{PROG}: configuration reloaded", file=sys.stderr, flush=True)


def _check(document: dict[str, Any], env: dict[str, str]) -> Sequence[str]:
    """Every error in the merged configuration (none: it is good to start with)."""
    try:
        parse_settings(document, env)
    except ConfigError as exc:
        return exc.errors
    return ()
