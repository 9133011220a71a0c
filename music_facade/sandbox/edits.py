"""The track fields the sandbox's control API sets: how each is checked and where it lives."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

TEXT = "text"
NUMBER = "number"

FIELDS: Mapping[str, tuple[str | None, str, str]] = {
    # name in the control API: (nested object or None for the top level, record field, kind)
    "title": (None, "titleEn", TEXT),
    "style": ("musicMaterial", "style", TEXT),
    "mood": ("musicMaterial", "mood", TEXT),
    "key": ("musicMaterial", "key", TEXT),
    "bpm": ("musicMaterial", "bpm", NUMBER),
    "duration": ("musicMaterial", "dur", NUMBER),
    "prompt": ("ltmMaterialExtendDto", "prompt", TEXT),
    "lyrics": ("ltmMaterialExtendDto", "lyricsPrompt", TEXT),
}


def check_edits(body: Mapping[str, Any]) -> dict[str, Any]:
    """The FIELDS entries of a request body, each checked; ValueError names a bad one."""
    edits: dict[str, Any] = {}
    for name, (_, _, kind) in FIELDS.items():
        if name not in body:
            continue
        value = body[name]
        if kind == TEXT and not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        if kind == NUMBER and not is_number(value, low=0):
            raise ValueError(f"{name} must be a number of at least 0")
        edits[name] = value
    return edits


def is_number(value: Any, *, low: float) -> bool:
    """Whether a JSON value is a finite number (not a boolean) of at least `low`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value >= low


def edited(record: dict[str, Any], edits: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a record with the edits applied; the record and its nested objects are not
    changed, so a record being served is never changed under the serializer."""
    copy = dict(record)
    for name, value in edits.items():
        nested, field, _ = FIELDS[name]
        if nested is None:
            copy[field] = value
            continue
        inner = copy.get(nested)
        copy[nested] = {**(inner if isinstance(inner, dict) else {}), field: value}
    return copy
