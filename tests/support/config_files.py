"""A configuration file written for a test, and the token the tests give it."""

from __future__ import annotations

from pathlib import Path

TOKEN = "tok-CONFIG-SECRET-123"
MINIMAL = '[users]\nstudio = "1234567"\n'


def write(tmp_path: Path, text: str) -> str:
    """text as tmp_path's music.toml; its path."""
    path = tmp_path / "music.toml"
    path.write_text(text)
    return str(path)
