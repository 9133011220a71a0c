"""The sandbox's live account: a track added through its control API generates as the
upstream's would, its progress moving with the clock until it completes."""

from __future__ import annotations

import requests

from music_facade.sandbox import SandboxServer


def new_track(sandbox: SandboxServer, title: str, seconds: float, user_id: str = "1001") -> str:
    """Start generating a song of `seconds` in the account; its id."""
    made = requests.post(
        f"{sandbox.origin}/_sandbox/accounts/{user_id}/tracks",
        json={"type": "song", "title": title, "seconds": seconds},
        timeout=5,
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])
