"""The sandbox's generated media: a cover image and a few seconds of sound per track.

Everything is derived from the track's itemId, so a track always gets the same files and two
tracks get different ones. Files are made when first asked for and kept in small bounded caches:
a sandbox of a million synthetic tracks makes only the files a caller fetches.

The sound is a short melody from a seeded pentatonic scale over a bass line (the "vocals" and
"instrumental" stems, mixed for mp3 and wav). Each note's waveform repeats exactly: every voice
of a note does a whole number of cycles in one short loop, so a note is one loop computed in
Python and repeated by array multiplication, and it starts and ends at zero (no clicks).
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import struct
import sys
import wave
import zipfile
import zlib
from array import array
from collections.abc import Sequence

import lameenc

RATE = 22_050
"""Samples per second of every generated sound (mono, 16 bit)."""
SECONDS = 3.0
"""About how long each track's sound lasts."""
MP3_KBPS = 96
COVER_SIZE = 256
"""Width and height of a cover, in pixels."""
STEMS = ("vocals.wav", "instrumental.wav")
"""The files in a track's stems ZIP."""
_CACHED = 32
"""Tracks whose audio files are kept (about 0.8 MB each); covers are smaller and kept longer."""
_CACHED_COVERS = 512
# Semitones of a major pentatonic scale over two octaves.
_SCALE = (0, 2, 4, 7, 9, 12, 14, 16, 19, 21)
# Loop of one note: 6 cycles of the melody's pitch (and its second harmonic), 3 of the octave
# below and 4 of the fifth below: the bass under each melody note.
_MELODY = ((6, 0.30), (12, 0.08))
_BASS = ((3, 0.22), (4, 0.12))
_FULL_SCALE = 32_767


def _seed(item: str) -> bytes:
    return hashlib.sha256(f"sandbox-media:{item}".encode()).digest()


def _loop(length: int, partials: Sequence[tuple[int, float]]) -> list[float]:
    """One loop of `length` samples: each partial does a whole number of cycles in it."""
    step = 2 * math.pi / length
    # One sine per sample, then each partial reads it at its own speed: half the time of a
    # sine per partial per sample.
    table = [math.sin(step * i) for i in range(length)]
    total = [0.0] * length
    for cycles, amplitude in partials:
        total = [t + amplitude * table[cycles * i % length] for i, t in enumerate(total)]
    return total


def _pcm(loop: list[float], repeat: int) -> array[int]:
    samples = array("h", [round(value * _FULL_SCALE) for value in loop])
    return samples * repeat


@functools.lru_cache(maxsize=_CACHED)
def _voices(item: str) -> tuple[bytes, bytes, bytes]:
    """The melody ("vocals"), the bass ("instrumental") and the two mixed, as 16-bit mono PCM,
    little endian."""
    seed = _seed(item)
    root = 196.0 * 2 ** (seed[0] % 7 / 12)  # G3 up to C#4
    note_seconds = 0.3 + seed[1] % 4 * 0.1
    notes = max(1, round(SECONDS / note_seconds))
    voices = (array("h"), array("h"), array("h"))
    for n in range(notes):
        pitch = root * 2 ** (_SCALE[seed[2 + n % 30] % len(_SCALE)] / 12)
        # Six cycles of the pitch in the loop: the loop's length is a whole number of samples,
        # so the pitch is rounded to the nearest one that fits (well under a semitone off).
        length = round(6 * RATE / pitch)
        repeat = max(1, round(note_seconds * RATE / length))
        melody, bass = _loop(length, _MELODY), _loop(length, _BASS)
        # Mixed per loop (the amplitudes are chosen so the sum never clips): a few hundred
        # additions per note instead of one per sample.
        mixed = list(map(float.__add__, melody, bass))
        for voice, loop in zip(voices, (melody, bass, mixed), strict=True):
            voice += _pcm(loop, repeat)
    vocals, instrumental, both = (_little_endian(voice) for voice in voices)
    return vocals, instrumental, both


def _little_endian(samples: array[int]) -> bytes:
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def _wav(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(RATE)
        writer.writeframes(pcm)
    return out.getvalue()


@functools.lru_cache(maxsize=_CACHED)
def wav_file(item: str) -> bytes:
    """The track's sound as a WAV file (PCM, 16 bit, mono, 22.05 kHz)."""
    return _wav(_voices(item)[2])


@functools.lru_cache(maxsize=_CACHED)
def mp3_file(item: str) -> bytes:
    """The track's sound as an MP3 file (LAME, constant bit rate, mono)."""
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(MP3_KBPS)
    encoder.set_in_sample_rate(RATE)
    encoder.set_channels(1)
    encoder.set_quality(7)  # fast; the sound is a few pure tones
    return bytes(encoder.encode(_voices(item)[2]) + encoder.flush())


@functools.lru_cache(maxsize=_CACHED)
def stems_file(item: str) -> bytes:
    """The track's stems: a ZIP of the vocals and the instrumental as WAV files."""
    out = io.BytesIO()
    # Stored, not deflated: audio hardly compresses, as with the real stems.
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, pcm in zip(STEMS, _voices(item)[:2], strict=True):
            # A fixed date: the same track's ZIP is the same bytes each time it is made.
            archive.writestr(zipfile.ZipInfo(name, date_time=(2025, 5, 15, 9, 6, 40)), _wav(pcm))
    return out.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _blend(a: Sequence[int], b: Sequence[int], t: float) -> bytes:
    return bytes(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))


def _colour(byte: int, light: float) -> tuple[int, int, int]:
    """A saturated colour around the colour wheel (hue from `byte`), at a lightness 0-1."""
    hue = byte / 256 * 6
    sector, within = int(hue), hue - int(hue)
    rising, falling = within, 1 - within
    rgb = [
        (1, rising, 0),
        (falling, 1, 0),
        (0, 1, rising),
        (0, falling, 1),
        (rising, 0, 1),
        (1, 0, falling),
    ][sector]
    return (
        round(255 * (light + (1 - light) * rgb[0] * 0.8)),
        round(255 * (light + (1 - light) * rgb[1] * 0.8)),
        round(255 * (light + (1 - light) * rgb[2] * 0.8)),
    )


@functools.lru_cache(maxsize=_CACHED_COVERS)
def cover_png(item: str) -> bytes:
    """The track's cover: a PNG of diagonal stripes over a vertical gradient between two
    colours, all chosen by the itemId."""
    seed = _seed(item)
    top, bottom = _colour(seed[0], 0.15), _colour(seed[3], 0.05)
    stripe = 8 + seed[4] % 24
    size = COVER_SIZE
    rows = []
    for y in range(size):
        t = y / (size - 1)
        dark = _blend(top, bottom, t)
        light = _blend(dark, (255, 255, 255), 0.25)
        # One row of stripes, longer than the image, read from a shifting offset: diagonals.
        band = (dark * stripe + light * stripe) * (size // stripe + 2)
        start = (y % (2 * stripe)) * 3
        rows.append(b"\x00" + band[start : start + 3 * size])
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB, not interlaced
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(b"".join(rows), 6)),
            _png_chunk(b"IEND", b""),
        )
    )
