"""The /music query: parsed and validated before anything else happens."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate
from marshmallow.types import UnknownOption
from werkzeug.datastructures import MultiDict

from .config import ALIAS_PATTERN
from .errors import InvalidQuery

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


class MusicQuerySchema(Schema):
    """user, type and cursor; anything else is an error."""

    class Meta:
        unknown: UnknownOption = RAISE

    user = fields.String(
        validate=validate.Regexp(
            ALIAS_PATTERN, error="must be 1-64 characters of A-Z a-z 0-9 _ . -"
        )
    )
    type = fields.String(
        load_default="song",
        validate=validate.OneOf(TYPES, error="must be 'song' or 'instrumental'"),
    )
    cursor = fields.String(
        validate=validate.Regexp(
            CURSOR_PATTERN, error="must be 1-512 printable ASCII characters without spaces"
        )
    )

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> MusicQuery:
        return MusicQuery(user=data.get("user"), type=data["type"], cursor=data.get("cursor"))


_SCHEMA = MusicQuerySchema()


def decode_query(raw: bytes) -> tuple[MultiDict[str, str], dict[str, list[str]]]:
    """Split a raw query string strictly: a name or value that is not UTF-8 is an error.

    (werkzeug's request.args would quietly turn such bytes into other text.)
    """
    args: MultiDict[str, str] = MultiDict()
    errors: dict[str, list[str]] = {}
    for part in raw.split(b"&"):
        if not part:
            continue
        name, _, value = (unquote_to_bytes(p.replace(b"+", b" ")) for p in part.partition(b"="))
        try:
            args.add(name.decode("utf-8"), value.decode("utf-8"))
        except UnicodeDecodeError:
            errors[name.decode("utf-8", "replace")] = ["is not valid UTF-8"]
    return args, errors


def parse_query(raw: bytes) -> MusicQuery:
    """Validate the request's raw query string, or raise InvalidQuery naming each bad parameter."""
    args, errors = decode_query(raw)
    for name in args:
        if len(args.getlist(name)) > 1:
            errors[name] = ["given more than once"]
    try:
        query: MusicQuery = _SCHEMA.load(args.to_dict())
    except ValidationError as exc:
        messages: dict[str, Any] = exc.normalized_messages()  # type: ignore[no-untyped-call]
        for name, problems in messages.items():
            text = [problems] if isinstance(problems, str) else [str(p) for p in problems]
            if text == ["Unknown field."]:
                text = ["is not a parameter of /music (use user, type, cursor)"]
            errors.setdefault(str(name), text)
    if errors:
        # Names come from the caller: shorten them and list a bounded number.
        errors = {name[:64]: errors[name] for name in sorted(errors)[:MAX_REPORTED]}
        names = ", ".join(errors)
        raise InvalidQuery(f"Invalid query parameter(s): {names}.", errors=errors)
    return query
