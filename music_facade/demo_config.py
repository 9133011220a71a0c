"""The demo's configuration: its own TOML, the operator's file merged over it, written back out.

The demo's template (music_facade.__main__.DEMO_CONFIG + DEMO_MIRROR) points the service at the
sandbox. What the demo adds at start: a client entry for the key it minted (every alias), the
browser origins CORS allows, and, with `--config`, the operator's own tables merged over it.
"""

from __future__ import annotations

import datetime
import json
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

# The client the demo's minted key belongs to: the example app signs in as it.
DEMO_CLIENT = "demo-app"


class DemoConfigError(Exception):
    """The operator's --config file cannot be read or merged."""


def read_operator_config(path: str) -> dict[str, Any]:
    """The operator's TOML file as a table; DemoConfigError saying why when it is not one."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise DemoConfigError(f"--config {path}: cannot read it: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise DemoConfigError(f"--config {path}: not valid TOML: {exc}") from None


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` merged into `base`: tables key by key, recursively; any other value replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def demo_document(
    template: str,
    *,
    base_url: str,
    database: str,
    key_digest: str,
    origins: Sequence[str],
    operator: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The demo's whole configuration as a table.

    The operator's tables win, except where the demo would stop working: the upstream is always
    the sandbox, the demo's client is kept beside the operator's clients, and the demo's origins
    are allowed beside the operator's.
    """
    document = tomllib.loads(template.format(base_url=base_url, database=json.dumps(database)))
    document = merge(document, operator or {})
    document.setdefault("upstream", {})["base_url"] = base_url
    client = {"name": DEMO_CLIENT, "key_sha256": key_digest, "users": ["*"]}
    clients = [c for c in document.get("clients", []) if c.get("name") != DEMO_CLIENT]
    document["clients"] = [*clients, client]
    cors = document.setdefault("cors", {})
    cors["origins"] = list(dict.fromkeys([*cors.get("origins", []), *origins]))
    return document


def to_toml(document: Mapping[str, Any]) -> str:
    """TOML text for a table read by tomllib: one `key = value` line per top-level key.

    Nested tables and arrays of tables are written inline, so no section headers are needed
    and any document round-trips through tomllib.
    """
    return "".join(f"{_key(k)} = {_value(v)}\n" for k, v in document.items())


def _key(key: str) -> str:
    return json.dumps(key)  # a TOML basic string: JSON's escapes are a subset of TOML's


def _value(value: Any) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int | str):
        return json.dumps(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")
