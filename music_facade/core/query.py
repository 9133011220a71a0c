"""The /music query: parsed and validated before anything else happens.

A rule table of compiled patterns (no schema library: this runs on every request, hits
included): each parameter's pattern, its default, and the message when it does not match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from ..errors import InvalidQuery
from .alias import ALIAS_RE, ALIAS_RULE

CURSOR_PATTERN = r"\A[!-~]{1,512}\Z"
CURSOR_RE = re.compile(CURSOR_PATTERN)
TYPES = ("song", "instrumental")
MAX_REPORTED = 10


@dataclass(frozen=True)
class MusicQuery:
    """A valid /music query; user is None when the caller named no alias."""

    user: str | None
    type: str
    cursor: str | None


@dataclass(frozen=True)
class Rule:
    """One parameter: what its value must match, and what to say when it does not."""

    pattern: re.Pattern[str]
    message: str
    default: str | None = None


RULES = {
    "user": Rule(ALIAS_RE, ALIAS_RULE),
    "type": Rule(
        re.compile(r"\A(song|instrumental)\Z"), "must be 'song' or 'instrumental'", "song"
    ),
    "cursor": Rule(CURSOR_RE, "must be 1-512 printable ASCII characters without spaces"),
}
UNKNOWN = "is not a parameter of /music (use user, type, cursor)"
REPEATED = "given more than once"
NOT_UTF8 = "is not valid UTF-8"


def decode_query(raw: bytes) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Split a raw query string strictly: a name or value that is not UTF-8 is an error.

    (werkzeug's request.args would quietly turn such bytes into other text.) Returns every
    value of every name, in order, and the names that could not be decoded.
    """
    args: dict[str, list[str]] = {}
    errors: dict[str, list[str]] = {}
    for part in raw.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        if b"%" in part or b"+" in part:
            name = unquote_to_bytes(name.replace(b"+", b" "))
            value = unquote_to_bytes(value.replace(b"+", b" "))
        try:
            text_name, text_value = name.decode("utf-8"), value.decode("utf-8")
        except UnicodeDecodeError:
            errors[name.decode("utf-8", "replace")] = [NOT_UTF8]
        else:
            args.setdefault(text_name, []).append(text_value)
    return args, errors


def parse_query(raw: bytes) -> MusicQuery:
    """Validate the request's raw query string, or raise InvalidQuery naming each bad parameter."""
    values = parse_params(raw, RULES, UNKNOWN)
    return MusicQuery(
        user=values.get("user"),
        type=values.get("type") or RULES["type"].default or "song",
        cursor=values.get("cursor"),
    )


def parse_params(raw: bytes, rules: dict[str, Rule], unknown: str) -> dict[str, str]:
    """The valid parameters of a raw query string by a rule table, defaults filled in, or
    InvalidQuery naming each bad parameter (`unknown` is the message for a name not in rules)."""
    args, errors = decode_query(raw)
    values: dict[str, str] = {}
    for name, given in args.items():
        rule = rules.get(name)
        if len(given) > 1:
            errors.setdefault(name, [REPEATED])
        elif rule is None:
            errors.setdefault(name, [unknown])
        elif not rule.pattern.match(given[0]):
            errors.setdefault(name, [rule.message])
        else:
            values[name] = given[0]
    if errors:
        # Names come from the caller: shorten them and list a bounded number.
        errors = {name[:64]: errors[name] for name in sorted(errors)[:MAX_REPORTED]}
        names = ", ".join(errors)
        raise InvalidQuery(f"Invalid query parameter(s): {names}.", errors=errors)
    for name, rule in rules.items():
        if rule.default is not None:
            values.setdefault(name, rule.default)
    return values


ITEM_ID_PATTERN = r"\A[A-Za-z0-9_-]{1,64}\Z"
ITEM_ID_RE = re.compile(ITEM_ID_PATTERN)
FORMATS = ("mp3", "wav", "stems")
TRACK_RULES = {"user": RULES["user"]}
AUDIO_RULES = {
    "user": RULES["user"],
    "format": Rule(re.compile(r"\A(mp3|wav|stems)\Z"), "must be 'mp3', 'wav' or 'stems'", "mp3"),
}
LIBRARY_RULES = {
    "user": RULES["user"],
    "type": RULES["type"],
    "limit": Rule(re.compile(r"\A[1-9][0-9]{0,6}\Z"), "must be a whole number from 1"),
}


def unknown_message(endpoint: str, rules: dict[str, Rule]) -> str:
    """The error for a parameter the endpoint does not take."""
    return f"is not a parameter of {endpoint} (use {', '.join(rules)})"


def item_id(value: str) -> str:
    """A track id from the path, or InvalidQuery."""
    if not ITEM_ID_RE.match(value):
        raise InvalidQuery(
            "Invalid track id.", errors={"id": ["must be 1-64 characters of A-Z a-z 0-9 _ -"]}
        )
    return value
