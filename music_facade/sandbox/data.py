"""The sandbox's deterministic TemPolor accounts and their records, newest first."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

# The model is the service's (the probe checks real records against it); the sandbox builds on it.
from music_facade.core.upstream_model import RECORD_FIELDS as RECORD_FIELDS

SONG = "song"
INSTRUMENTAL = "instrumental"
TYPES = (SONG, INSTRUMENTAL)

USEAPI_ACCOUNT = "12345"
"""The useapi.net account number every job_id names."""

# 2025-05-15T09:06:40Z, in epoch milliseconds, as the upstream sends times.
_NEWEST = 1_747_300_000_000
COVER_BASE = "https://example.com/tempolor/cover/"
"""Where the records' covers point; the sandbox serves them from its own origin instead
(music_facade.sandbox.cdn), which a record cannot know."""
_MINUTE = 60_000


@dataclass(frozen=True)
class Account:
    """One TemPolor account: its records per type (newest first) and how its pages look."""

    user_id: str
    songs: tuple[Any, ...] = ()
    instrumentals: tuple[Any, ...] = ()
    single_page: bool = False
    """Serve every record on one page, whatever the sandbox's page size."""
    has_records_key: bool = True
    """False: every page comes without a "records" key."""

    def records(self, music_type: str) -> tuple[Any, ...]:
        """The account's records of one type, newest first; callers must not mutate them."""
        return self.songs if music_type == SONG else self.instrumentals


def status_name(status: int) -> str:
    """The upstream's name for a numeric status band."""
    if status < 10:
        return "GENERATING"
    if status < 30:
        return "FAILED"
    return "COMPLETED"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def item_id(user_id: str, music_type: str, index: int) -> str:
    """A stable 15-hex-digit itemId, shaped like the upstream's."""
    return _digest(f"tempolor:{user_id}:{music_type}:{index}")[:15]


def job_id(user_id: str, item: str) -> str:
    """The useapi.net job id naming the useapi account, the TemPolor account and the item."""
    return f"user:{USEAPI_ACCOUNT}-tempolor:{user_id}-job:{item}"


_SONG_TITLES = (
    "Neon Harbor",
    "Paper Lanterns",
    "Glass Horizon",
    "Midnight Tram",
    "Salt and Cedar",
    "Satellite Hearts",
    "Rust Belt Lullaby",
    "Copper Rain",
    "Northbound Static",
    "Velvet Alarm",
    "Lighthouse Keeper",
    "Borrowed Summer",
    "Hollow Bones",
    "Signal Fires",
    "Tidewater",
    "Second Skin",
    "Quiet Riot Girl",
    "Open Road Hymn",
    "Silver Thread",
    "Afterglow Avenue",
    "Ember Season",
    "Wildflower Code",
    "Last Train Home",
)
_INSTRUMENTAL_TITLES = (
    "Epic Orchestral",
    "Lo-fi Morning",
    "Desert Suite",
    "Cathedral Drone",
    "Arcade Sunrise",
    "Rainforest Pulse",
    "Clockwork Waltz",
    "Deep Field",
    "Monsoon Strings",
    "Glacier Piano",
    "Harbor Lights Dub",
    "Stellar Drift",
)
TITLE_WORDS = tuple(
    sorted({word for title in _SONG_TITLES + _INSTRUMENTAL_TITLES for word in title.split()})
)
"""Every word of the accounts' titles, for made-up titles that text search can find."""
_STYLES = ("Orchestral", "Synthwave", "Indie Folk", "Lo-fi Hip Hop", "Dream Pop", "Jazz", "Ambient")
_MOODS = ("Epic", "Melancholic", "Uplifting", "Calm", "Energetic", "Romantic")
_INSTRUMENTS = ("Strings", "Piano", "Synth", "Acoustic Guitar", "Drums", "Saxophone")
_SCENES = ("Film", "Travel", "Night Drive", "Study", "Workout", "Wedding")
_KEYS = ("F:minor", "C:major", "A:minor", "D:major", "E:minor", "G:major", "B:minor")
_MODELS = (("v1-dit-obleck-stereo-zh-en-270-wf", "v3.5"), ("v1-dit-obleck-stereo-zh-en-250", "v3"))

# index → (status, progress); every other record is COMPLETED at 100. Newest are still generating.
_SONG_STATUSES = {0: (0, 5), 1: (5, 62), 4: (10, 0), 9: (31, 100), 11: (21, 37), 17: (29, 88)}
_INSTRUMENTAL_STATUSES = {0: (2, 18), 5: (12, 0), 9: (40, 100)}


def full_record(
    user_id: str,
    music_type: str,
    index: int,
    *,
    item: str | None = None,
    title: str | None = None,
    status: tuple[int, int] = (30, 100),
) -> dict[str, Any]:
    """One record in the upstream example's full shape, every field derived from its index."""
    item = item or item_id(user_id, music_type, index)
    song = music_type == SONG
    titles = _SONG_TITLES if song else _INSTRUMENTAL_TITLES
    title = title or titles[index % len(titles)]
    code, progress = status
    done = code >= 30
    style = _STYLES[index % len(_STYLES)]
    mood = _MOODS[index % len(_MOODS)]
    description = f"A {mood.lower()} {style.lower()} piece called {title}"
    # Songs and instrumentals interleave in time: different spacing and a 97-minute offset.
    created = _NEWEST - index * (313 if song else 461) * _MINUTE - (0 if song else 97 * _MINUTE)
    dur = 120 + (index * 37) % 180
    model, model_name = _MODELS[index % len(_MODELS)]
    lyrics = f"[Verse]\n{title}, calling through the night\n[Chorus]\n{title}, hold on tight"
    return {
        "bizType": "ai_material_music",
        "childType": "lyric_to_material" if song else "prompt_to_material",
        "matChildType": "lyric_to_material" if song else "prompt_to_material",
        "sourceType": "sm_user_gen",
        "itemId": item,
        "job_id": job_id(user_id, item),
        "genItemId": item,
        "userId": user_id,
        "titleEn": title,
        "cover": f"{COVER_BASE}{item}.png",
        # Only a finished track has audio files.
        "mp3OssId": f"ai_material/ai_material/mp3/{item}.mp3" if done else "",
        "wavOssId": f"ai_material/ai_material/wav/{item}.wav" if done else "",
        "ossWatermarkMp3": "",
        "officialPlaylistSong": False,
        "status": code,
        "status_name": status_name(code),
        "status_final": code >= 10,
        "progress": progress,
        "downloadTotal": index % 4,
        "likeTotal": (index * 7) % 13,
        "collectTotal": index % 3,
        "musicMaterial": {
            "style": style,
            "chord": "",
            "mood": mood,
            "inst": _INSTRUMENTS[index % len(_INSTRUMENTS)],
            "instInfo": "",
            "scene": _SCENES[index % len(_SCENES)],
            "otherInfo": description,
            "otherInfoCn": "",
            "key": _KEYS[index % len(_KEYS)],
            "bpm": 70 + (index * 17) % 90,
            "dur": dur,
            "seed": int(_digest(item)[:8], 16),
            "src": "",
            "ossSrc": "",
            "waveformOssId": f"ai_material/ai_material/waveform/{item}.json" if done else "",
            "waveformUrl": f"https://example.com/tempolor/waveform/{item}.json" if done else "",
            "batchId": f"batch-{item[:6]}",
        },
        "readStatus": index % 2 == 0,
        "downloadStatus": index % 5 == 0,
        "createTime": created,
        "updateTime": created + (dur * 1000 if done else 40_000),
        "materialQualityScore": 0,
        "ltmMaterialExtendDto": {
            "lyricsPrompt": lyrics if song else "",
            "description": description,
            "ltmVocalModel": False,
            "ltmMidiModel": False,
            "lrcTimestamp": "",
            "genItemId": item,
            "prompt": description,
            "genMode": 0,
            "model": model,
            "modelShowName": model_name,
            "dynamicModel": "",
            "oriCacheDir": "",
        },
        "editType": "gen",
        "operatorType": "gen",
        "rootItemId": item,
        "parentItemId": item,
        "canExtend": True,
        "canEditLyrics": song,
        "canFixVocals": song,
        "canReplaced": False,
    }


def _complete_account() -> Account:
    """Account 1001: 23 songs and 12 instrumentals, all in the full shape, all status bands."""
    songs = tuple(
        full_record("1001", SONG, i, status=_SONG_STATUSES.get(i, (30, 100))) for i in range(23)
    )
    instrumentals = tuple(
        full_record("1001", INSTRUMENTAL, i, status=_INSTRUMENTAL_STATUSES.get(i, (30, 100)))
        for i in range(12)
    )
    return Account("1001", songs, instrumentals)


def _empty_strings(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Every string field as "", every nested object present but empty, nothing else."""
    return {
        name: "" if kind == "string" else {}
        for name, kind in fields.items()
        if kind == "string" or not isinstance(kind, str)
    }


def _odd_account() -> Account:
    """Account 1002: one page of awkward songs for testing the service's reshaping."""

    def base(index: int, item: str, title: str) -> dict[str, Any]:
        return full_record("1002", SONG, index, item=item, title=title)

    no_nested = base(3, "odd-no-nested", "No Nested Objects")
    del no_nested["musicMaterial"], no_nested["ltmMaterialExtendDto"]
    no_prompt = base(4, "odd-no-prompt", "Description Without Prompt")
    del no_prompt["ltmMaterialExtendDto"]["prompt"]
    empty_prompt = base(5, "odd-empty-prompt", "Empty Prompt")
    empty_prompt["ltmMaterialExtendDto"]["prompt"] = ""
    failed = full_record("1002", SONG, 6, item="odd-failed", title="Failed", status=(15, 0))
    running = full_record("1002", SONG, 7, item="odd-generating", title="Halfway", status=(5, 40))
    negative = base(8, "odd-negative-status", "Negative Status")
    # A status below every documented band; status_name/status_final keep what a bug might send.
    negative.update(status=-1, status_name="UNKNOWN", status_final=False, progress=0)
    records: tuple[Any, ...] = (
        # Only an itemId: every other field is absent.
        {"itemId": "odd-only-itemid"},
        # Every string field "" (itemId too, the only record with that itemId), nested objects
        # present but empty, numbers and booleans absent.
        _empty_strings(RECORD_FIELDS),
        # Every field of the model present as null, itemId included.
        dict.fromkeys(RECORD_FIELDS),
        # Full record without musicMaterial and ltmMaterialExtendDto.
        no_nested,
        # ltmMaterialExtendDto has a description but no prompt key.
        no_prompt,
        # ltmMaterialExtendDto has prompt "" and a description.
        empty_prompt,
        # Status 15: FAILED, progress 0.
        failed,
        # Status 5, progress 40: still GENERATING.
        running,
        # Status -1: outside every documented band.
        negative,
        # Array members that are not JSON objects at all.
        "oops",
        42,
        None,
        [],
    )
    return Account("1002", songs=records, single_page=True)


ACCOUNTS: Mapping[str, Account] = MappingProxyType(
    {
        "1001": _complete_account(),
        "1002": _odd_account(),
        # No records of either type.
        "1003": Account("1003"),
        # Pages come as {"hasNext": false}: no "records" key at all.
        "1004": Account("1004", has_records_key=False),
    }
)
"""The sandbox's TemPolor accounts by user_id; their records must not be mutated."""
