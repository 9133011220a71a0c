"""The caps on one worker's long-lived answers against worker_connections: the defaults fit,
/events counts only where it is served (with [mirror]), and a misfit names every cap."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from music_facade import connection_budget
from music_facade.config import EventsSettings, Settings, load_settings

BASE = '[upstream]\nbase_url = "https://api.useapi.net"\n[users]\nstudio = "1001"\n'
MIRROR = '[mirror]\ndatabase = "sqlite:///{path}"\n'


def settings(tmp: Path, extra: str = "") -> Settings:
    config = tmp / "music.toml"
    config.write_text(BASE + extra)
    return load_settings({"MUSIC_CONFIG": str(config), "USEAPI_TOKEN": "t0ken"})


def test_the_defaults_fit_the_default_worker_connections(tmp_path: Path) -> None:
    mirrored = settings(tmp_path, MIRROR.format(path=tmp_path / "m.db"))
    # 1000 event streams + 16 library streams + 100 upstream calls + the headroom
    assert connection_budget.needed(mirrored) == 1116 + connection_budget.HEADROOM
    assert connection_budget.problem(mirrored, connection_budget.DEFAULT_WORKER_CONNECTIONS) is None


def test_event_streams_count_only_where_they_are_served(tmp_path: Path) -> None:
    plain = settings(tmp_path)
    assert connection_budget.needed(plain) == 116 + connection_budget.HEADROOM
    said = connection_budget.problem(plain, 100)
    assert said is not None
    assert "[events]" not in said
    assert said.startswith("worker_connections (100) must be at least 372: ")


def test_a_misfit_names_each_cap_and_both_ways_out(tmp_path: Path) -> None:
    mirrored = settings(tmp_path, MIRROR.format(path=tmp_path / "m.db"))
    bigger = replace(mirrored, events=EventsSettings(max_streams=5000))
    said = connection_budget.problem(bigger, 4000)
    assert said == (
        "worker_connections (4000) must be at least 5372: one worker may hold [events] "
        "max_streams (5000) + [library] max_streams (16) + [upstream] max_concurrent_calls "
        "(100) connections, plus 256 for /healthz and other short requests; raise "
        "MUSIC_WORKER_CONNECTIONS (or gunicorn's worker_connections) or lower those caps"
    )
    assert connection_budget.problem(bigger, 5372) is None


def test_the_variable_is_read_as_gunicorn_settings_read_it() -> None:
    assert connection_budget.from_environment({}) == 4000
    assert connection_budget.from_environment({"MUSIC_WORKER_CONNECTIONS": "300"}) == 300
    for bad in ("0", "many", "-5", ""):
        said = connection_budget.from_environment({"MUSIC_WORKER_CONNECTIONS": bad})
        assert said == f"MUSIC_WORKER_CONNECTIONS: {bad!r} is not a positive number of connections"
