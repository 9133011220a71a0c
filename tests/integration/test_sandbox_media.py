"""The sandbox's covers and download files, fetched over real HTTP from a SandboxServer."""

from __future__ import annotations

import io
import struct
import wave
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from music_facade.sandbox import SANDBOX_TOKEN, SandboxServer, SandboxState, media
from music_facade.sandbox.data import job_id
from tests.support.clock import Clock

AUTH = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
DONE = "6dc9a08fa3e7d6a"  # account 1001's third song: completed
TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "stems": "application/zip"}


def completed_songs(sandbox: SandboxServer, origin: str | None = None) -> list[dict[str, Any]]:
    """Account 1001's first page of songs that have files, asked at `origin` (the server's)."""
    base = (origin or sandbox.origin) + "/v1/tempolor"
    resp = requests.get(f"{base}/music/", params={"user_id": "1001"}, headers=AUTH, timeout=10)
    assert resp.status_code == 200
    return [record for record in resp.json()["records"] if record["status"] >= 30]


def link(sandbox: SandboxServer, item: str, file_format: str) -> dict[str, Any]:
    """The download endpoint's answer for one of account 1001's tracks."""
    resp = requests.get(
        f"{sandbox.base_url}/music/download/{job_id('1001', item)}",
        params={"file_format": file_format},
        headers=AUTH,
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


def fetch(url: str, **headers: str) -> requests.Response:
    return requests.get(url, headers=headers, timeout=10)


def png_size(data: bytes) -> tuple[int, int]:
    """The width and height of a PNG, after checking its signature, chunks and pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        chunks[kind] = body
        pos += 12 + length
    assert list(chunks) == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)  # 8-bit RGB
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * (1 + 3 * width)
    return width, height


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth()) == (1, 2)
        frames = reader.readframes(reader.getnframes())
        assert len(frames) == 2 * reader.getnframes()
        assert any(frames)  # not silence
        seconds: float = reader.getnframes() / reader.getframerate()
        return seconds


@pytest.fixture
def clocked() -> Iterator[tuple[SandboxServer, Clock]]:
    """A sandbox of its own whose clock the test moves."""
    clock = Clock()
    with SandboxServer(SandboxState(clock=clock)) as server:
        yield server, clock


def test_covers_are_pngs_from_the_sandbox_origin_and_differ_per_track(
    sandbox: SandboxServer,
) -> None:
    records = completed_songs(sandbox)
    covers = []
    for record in records[:3]:
        assert record["cover"] == f"{sandbox.origin}/cdn/tempolor/cover/{record['itemId']}.png"
        resp = fetch(record["cover"])
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "image/png"
        assert int(resp.headers["Content-Length"]) == len(resp.content)
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert png_size(resp.content) == (media.COVER_SIZE, media.COVER_SIZE)
        covers.append(resp.content)
    assert len(set(covers)) == 3
    assert fetch(records[0]["cover"]).content == covers[0]  # the same track, the same image


def test_records_name_the_origin_they_were_asked_at(sandbox: SandboxServer) -> None:
    # The same server reached as localhost: covers and links follow the Host asked.
    other = sandbox.origin.replace("127.0.0.1", "localhost")
    record = completed_songs(sandbox, other)[0]
    assert record["cover"].startswith(f"{other}/cdn/tempolor/cover/")
    assert fetch(record["cover"]).status_code == 200
    one = requests.get(f"{other}/v1/tempolor/music/{record['job_id']}", headers=AUTH, timeout=10)
    assert one.json()["cover"] == record["cover"]


def test_a_cover_that_names_no_track_is_a_404(sandbox: SandboxServer) -> None:
    for name in ("nothex!!!!!!!!!.png", f"{DONE}.jpg", f"{DONE}0.png", DONE):
        assert fetch(f"{sandbox.origin}/cdn/tempolor/cover/{name}").status_code == 404


@pytest.mark.parametrize("file_format", ["mp3", "wav", "stems"])
def test_download_links_open_real_files(sandbox: SandboxServer, file_format: str) -> None:
    answer = link(sandbox, DONE, file_format)
    ext = {"stems": "zip"}.get(file_format, file_format)
    prefix = f"{sandbox.origin}/cdn/tempolor/{file_format}/{DONE}.{ext}?auth_key="
    assert answer["url"].startswith(prefix)
    resp = fetch(answer["url"])
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == TYPES[file_format]
    assert int(resp.headers["Content-Length"]) == len(resp.content)
    assert resp.headers["Accept-Ranges"] == "bytes"
    data = resp.content
    if file_format == "wav":
        assert 2 <= wav_seconds(data) <= 4
    elif file_format == "mp3":
        # MPEG audio frames: 11 sync bits, then MPEG version and layer III.
        assert data[0] == 0xFF
        assert data[1] & 0xE0 == 0xE0
        assert data[1] & 0x06 == 0x02  # layer III
        seconds = len(data) * 8 / (media.MP3_KBPS * 1000)
        assert 2 <= seconds <= 4.5
    else:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert archive.namelist() == list(media.STEMS)
            lengths = {wav_seconds(archive.read(name)) for name in media.STEMS}
            assert len(lengths) == 1
            assert 2 <= lengths.pop() <= 4
            assert archive.read(media.STEMS[0]) != archive.read(media.STEMS[1])


def test_two_tracks_sound_different_and_one_track_always_the_same(sandbox: SandboxServer) -> None:
    first, second = (record["itemId"] for record in completed_songs(sandbox)[:2])
    for file_format in ("mp3", "wav"):
        one = fetch(link(sandbox, first, file_format)["url"]).content
        other = fetch(link(sandbox, second, file_format)["url"]).content
        assert one != other
        assert fetch(link(sandbox, first, file_format)["url"]).content == one


def test_ranges_heads_and_revalidation(sandbox: SandboxServer) -> None:
    url = link(sandbox, DONE, "wav")["url"]
    whole = fetch(url).content
    size = len(whole)
    for asked, (start, end) in {
        "bytes=10-19": (10, 19),
        "bytes=100-": (100, size - 1),
        "bytes=-44": (size - 44, size - 1),
        f"bytes=0-{size + 500}": (0, size - 1),  # clipped to the file
    }.items():
        resp = fetch(url, Range=asked)
        assert resp.status_code == 206, asked
        assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert int(resp.headers["Content-Length"]) == end - start + 1
        assert resp.content == whole[start : end + 1]
        assert resp.headers["Content-Type"] == "audio/wav"
    refused = fetch(url, Range=f"bytes={size}-")
    assert refused.status_code == 416
    assert refused.headers["Content-Range"] == f"bytes */{size}"
    head = requests.head(url, timeout=10)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == str(size)
    assert head.headers["Content-Type"] == "audio/wav"
    assert head.headers["Accept-Ranges"] == "bytes"
    assert fetch(url, **{"If-None-Match": head.headers["ETag"]}).status_code == 304
    cover = completed_songs(sandbox)[0]["cover"]
    part = fetch(cover, Range="bytes=0-7")
    assert (part.status_code, part.content) == (206, b"\x89PNG\r\n\x1a\n")


def test_a_link_stops_working_after_remain_seconds(
    clocked: tuple[SandboxServer, Clock],
) -> None:
    server, clock = clocked
    server.state.link_seconds = 5
    answer = link(server, DONE, "mp3")
    assert answer["remainSeconds"] == 5
    assert fetch(answer["url"]).status_code == 200
    clock.now += 4.9
    assert fetch(answer["url"]).status_code == 200
    clock.now += 0.1
    expired = fetch(answer["url"])
    assert expired.status_code == 403
    assert "expired" in expired.json()["error"]
    # A fresh link works again.
    assert fetch(link(server, DONE, "mp3")["url"]).status_code == 200


def test_a_missing_wrong_or_borrowed_auth_key_is_a_403(sandbox: SandboxServer) -> None:
    url = link(sandbox, DONE, "mp3")["url"]
    path, _, key = url.partition("?auth_key=")
    expires, _, signature = key.partition("-")
    other = next(r["itemId"] for r in completed_songs(sandbox) if r["itemId"] != DONE)
    tampered = [
        path,  # none
        f"{path}?auth_key=",
        f"{path}?auth_key={expires}",
        f"{path}?auth_key={int(expires) + 3600}-{signature}",  # a later expiry, same signature
        f"{path}?auth_key={expires}-{'0' * 32}",
        path.replace("/mp3/", "/wav/").replace(".mp3", ".wav") + f"?auth_key={key}",
        path.replace(DONE, other) + f"?auth_key={key}",
    ]
    for bad in tampered:
        assert fetch(bad).status_code == 403, bad
    # Another sandbox (another secret) does not honour this one's links.
    with SandboxServer() as stranger:
        assert fetch(url.replace(sandbox.origin, stranger.origin)).status_code == 403


def test_media_is_not_an_upstream_call(sandbox: SandboxServer) -> None:
    url = link(sandbox, DONE, "mp3")["url"]
    before = sandbox.state.call_count()
    sandbox.state.set_fault("*", {"kind": "status", "status": 503})
    assert fetch(url).status_code == 200  # faults are the API's, not the CDN's
    assert sandbox.state.call_count() == before


def test_generated_files_are_cached_in_bounded_caches() -> None:
    for cached in (media.cover_png, media.mp3_file, media.wav_file, media.stems_file):
        maxsize = cached.cache_info().maxsize
        assert maxsize is not None
        assert maxsize <= 1024
    before = media.wav_file.cache_info()
    media.wav_file(DONE)
    media.wav_file(DONE)
    assert media.wav_file.cache_info().hits >= before.hits + 1
