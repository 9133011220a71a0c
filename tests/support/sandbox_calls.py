"""Counting the calls the sandbox upstream received, by kind."""

from __future__ import annotations

from music_facade.sandbox import SandboxServer


def calls(sandbox: SandboxServer, kind: str) -> int:
    """How many sandbox calls of one kind: list, record or download."""
    found = 0
    for call in sandbox.state.calls():
        if call.path.rstrip("/").endswith("/music"):
            found += kind == "list"
        elif "/download/" in call.path:
            found += kind == "download"
        else:
            found += kind == "record"
    return found
