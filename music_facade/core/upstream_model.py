"""The upstream's published record model: every field of a list record and its JSON type.

useapi.net documents every field as optional. The service reads only a few of them (see
tracks.TrackSchema); the probe compares real records with this model to spot schema drift, and the
sandbox builds its records from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

RECORD_FIELDS: Mapping[str, Any] = MappingProxyType(
    {
        "bizType": "string",
        "childType": "string",
        "matChildType": "string",
        "sourceType": "string",
        "itemId": "string",
        "job_id": "string",
        "genItemId": "string",
        "userId": "string",
        "titleEn": "string",
        "cover": "string",
        "mp3OssId": "string",
        "wavOssId": "string",
        "ossWatermarkMp3": "string",
        "officialPlaylistSong": "boolean",
        "status": "number",
        "status_name": "string",
        "status_final": "boolean",
        "progress": "number",
        "downloadTotal": "number",
        "likeTotal": "number",
        "collectTotal": "number",
        "musicMaterial": {
            "style": "string",
            "chord": "string",
            "mood": "string",
            "inst": "string",
            "instInfo": "string",
            "scene": "string",
            "otherInfo": "string",
            "otherInfoCn": "string",
            "key": "string",
            "bpm": "number",
            "dur": "number",
            "seed": "number",
            "src": "string",
            "ossSrc": "string",
            "waveformOssId": "string",
            "waveformUrl": "string",
            "batchId": "string",
        },
        "readStatus": "boolean",
        "downloadStatus": "boolean",
        "createTime": "number",
        "updateTime": "number",
        "materialQualityScore": "number",
        "ltmMaterialExtendDto": {
            "lyricsPrompt": "string",
            "description": "string",
            "ltmVocalModel": "boolean",
            "ltmMidiModel": "boolean",
            "lrcTimestamp": "string",
            "genItemId": "string",
            "prompt": "string",
            "genMode": "number",
            "model": "string",
            "modelShowName": "string",
            "dynamicModel": "string",
            "oriCacheDir": "string",
        },
        "editType": "string",
        "operatorType": "string",
        "rootItemId": "string",
        "parentItemId": "string",
        "canExtend": "boolean",
        "canEditLyrics": "boolean",
        "canFixVocals": "boolean",
        "canReplaced": "boolean",
    }
)
"""Every field of the upstream's record model and its JSON type; nested objects as mappings."""


def json_type(value: Any) -> str:
    """The model's name for a JSON value's type: string, number, boolean, object, array, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    return "array"


def model_type(kind: Any) -> str:
    """The JSON type a RECORD_FIELDS entry stands for (a nested mapping is an object)."""
    return kind if isinstance(kind, str) else "object"
