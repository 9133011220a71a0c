"""JSON in and out on the hot paths: orjson's speed, the standard library's rules.

A miss reads the upstream's answer and writes the page it becomes, and every request writes a
JSON log line; orjson reads a page in about a third of `json`'s time and writes one in a tenth.
Where orjson refuses a text that `json` reads (a lone surrogate escape such as "\\ud800", which
tracks.py replaces; a number too large for a double), `json` reads it, so what is accepted is
what `json` accepts, minus NaN and Infinity, which are not JSON.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# What the fallback writes matches orjson: UTF-8 text, not \u escapes (log redaction compares
# a secret's encoded form with the line).
_FALLBACK = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":"))


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def loads(text: bytes | str) -> Any:
    """The value of a JSON text; ValueError or RecursionError if it is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text, parse_constant=_reject_constant)


def dumps(doc: Any) -> bytes:
    """A document of JSON types as compact UTF-8 JSON."""
    return orjson.dumps(doc)


def line(doc: dict[str, Any]) -> str:
    """A log record's fields as one line of JSON; anything else JSON lacks as its str()."""
    try:
        return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # an integer past 64 bits
        return _FALLBACK.encode(doc)


def encoded(text: str) -> str:
    """How a string appears inside a line(): its JSON form without the quotes."""
    return orjson.dumps(text).decode()[1:-1]
