"""The demo's configuration: the operator's tables merged over the demo's, and written as TOML
that reads back the same."""

from __future__ import annotations

import datetime
import tomllib

from music_facade.__main__ import DEMO_CONFIG, DEMO_MIRROR
from music_facade.demo_config import DEMO_CLIENT, demo_document, merge, to_toml

BASE = "http://127.0.0.1:9/v1/tempolor"


def document(**operator: object) -> dict[str, object]:
    return demo_document(
        DEMO_CONFIG + DEMO_MIRROR,
        base_url=BASE,
        database="sqlite:////tmp/x/mirror.db",
        key_digest="ab" * 32,
        origins=["http://127.0.0.1:8090"],
        operator=operator,
    )


def test_the_demo_alone_has_its_client_and_the_apps_origin() -> None:
    doc = document()
    assert doc["clients"] == [{"name": DEMO_CLIENT, "key_sha256": "ab" * 32, "users": ["*"]}]
    assert doc["cors"] == {"origins": ["http://127.0.0.1:8090"]}
    assert doc["upstream"]["base_url"] == BASE  # type: ignore[index]
    assert doc["mirror"]["database"] == "sqlite:////tmp/x/mirror.db"  # type: ignore[index]


def test_the_operators_tables_merge_key_by_key_but_the_demo_keeps_what_it_needs() -> None:
    doc = document(
        upstream={"base_url": "https://api.useapi.net/v1/tempolor", "retries": 3},
        mirror={"interval": 1},
        clients=[{"name": "mine", "key_sha256": "cd" * 32, "users": ["studio"]}],
        cors={"origins": ["http://localhost:5173"]},
        limits={"default": "5/minute"},
    )
    assert doc["upstream"]["base_url"] == BASE  # type: ignore[index]
    assert doc["upstream"]["retries"] == 3  # type: ignore[index]
    assert doc["mirror"]["interval"] == 1  # type: ignore[index]
    assert doc["mirror"]["active_interval"] == 2  # type: ignore[index]
    assert [c["name"] for c in doc["clients"]] == ["mine", DEMO_CLIENT]  # type: ignore[attr-defined]
    assert doc["cors"] == {"origins": ["http://localhost:5173", "http://127.0.0.1:8090"]}
    assert doc["limits"] == {"default": "5/minute"}


def test_merge_replaces_what_is_not_a_table() -> None:
    assert merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}, "d": 0}) == {
        "a": {"b": 1, "c": [2]},
        "d": 0,
    }


def test_to_toml_reads_back_the_same() -> None:
    doc = document(
        webhooks=[{"name": "w", "url": 'https://x.example/"quoted"\n', "events": ["a", "b"]}],
        oidc={"scopes": {"music-studio": ["studio"]}},
        odd={"t": True, "f": 0.25, "n": -3, "when": datetime.date(2026, 1, 2), "é": "ü\t"},
    )
    assert tomllib.loads(to_toml(doc)) == doc
