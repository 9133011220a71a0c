"""A caller of the client openapi-python-client generates from the contract (as `music_client`).

tests/contract/test_contract_tools.py generates the client from one deployment's served
document, checks this file with mypy --strict, then runs it against another deployment (a live
keyed service): the base URL is the program's to give, and `user` is a plain string on every
operation. It lists every track of an alias (following next_cursor), gets a track's audio link
as JSON, handles 400/401/404 and makes a HEAD call.
Usage: python python_client_usage.py BASE_URL KEY ALIAS
"""

from __future__ import annotations

import sys

from music_client import AuthenticatedClient, Client
from music_client.api.head_and_options import head_music
from music_client.api.meta import get_open_api_json
from music_client.api.music import get_track_audio, list_music
from music_client.models import AudioLink, MusicPage, Problem, Track, TrackStatus
from music_client.types import UNSET, Unset


def all_tracks(client: AuthenticatedClient, user: str) -> list[Track]:
    """Every track of an account, following next_cursor to the last page."""
    tracks: list[Track] = []
    cursor: str | Unset = UNSET
    while True:
        page = list_music.sync(client=client, user=user, cursor=cursor)
        if isinstance(page, Problem):
            raise RuntimeError(f"{page.status} {page.code}: {page.detail}")
        assert isinstance(page, MusicPage)
        tracks.extend(page.items)
        if not page.has_more or not isinstance(page.next_cursor, str):
            return tracks
        cursor = page.next_cursor


def audio_link(client: AuthenticatedClient, user: str, track_id: str) -> AudioLink:
    """A completed track's temporary link. Without accept="application/json" the operation
    answers 302 to the file (for plain links and `curl -L`), which the client returns as None."""
    link = get_track_audio.sync(client=client, id=track_id, user=user, accept="application/json")
    if not isinstance(link, AudioLink):
        raise RuntimeError(f"no link for {track_id}: {link!r}")
    return link


def main(base_url: str, key: str, user: str) -> int:
    """Exercise the generated client; print one line per step."""
    client = AuthenticatedClient(base_url=base_url, token=key)
    tracks = all_tracks(client, user)
    print(f"paged: {len(tracks)} tracks")
    done = next(t for t in tracks if t.status == TrackStatus.COMPLETED and isinstance(t.id, str))
    assert isinstance(done.id, str)
    link = audio_link(client, user, done.id)
    print(f"audio: {link.format_} link until {link.expires_at.isoformat()}")
    bad = list_music.sync(client=client, user=user, cursor="not-a-cursor")
    assert isinstance(bad, Problem) and bad.status == 400, bad
    print(f"400: {bad.code}")
    refused = list_music.sync(client=AuthenticatedClient(base_url=base_url, token="mf_wrong"))
    assert isinstance(refused, Problem) and refused.status == 401, refused
    print(f"401: {refused.code}")
    missing = Client(base_url=base_url).get_httpx_client().get("/nope")
    problem = Problem.from_dict(missing.json())
    assert missing.status_code == 404 and problem.code == "not_found", problem
    print(f"404: {problem.code}")
    head = head_music.sync_detailed(client=client, user=user)
    assert head.status_code == 200 and head.content == b"", head
    print(f"HEAD: {head.status_code} ETag {head.headers['ETag']}")
    document = get_open_api_json.sync(client=Client(base_url=base_url))
    assert not isinstance(document, Problem) and document is not None
    print(f"openapi.json: {document.openapi}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3]))
