"""Shared fixtures: one live sandbox upstream for the session, and apps aimed at it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from music_facade import create_app
from music_facade.sandbox import SandboxServer

from .support import problem_codes
from .support.helpers import AppFactory, CheckedClient, sandbox_settings
from .support.postgres_server import PostgresServer


def pytest_configure(config: pytest.Config) -> None:
    """Track whether the session runs the whole suite (tests/test_problem_catalogue.py)."""
    scope = problem_codes.SessionScope(config)
    config.pluginmanager.register(scope, problem_codes.PLUGIN)
    if config.pluginmanager.hasplugin("xdist"):  # the suite split over workers (./run test)
        config.pluginmanager.register(problem_codes.SplitRun(config, scope), "problem-codes-split")


HERE = Path(__file__).parent
# What every test of a folder needs: tests/live runs the service, Redis, nginx or a browser as
# real processes; tests/deploy checks deploy/ or the wheel (those that start servers are also
# marked live, one by one).
FOLDER_MARKS = {HERE / "live": pytest.mark.live, HERE / "deploy": pytest.mark.deploy}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its folder's marker."""
    for item in items:
        for folder, mark in FOLDER_MARKS.items():
            if item.path.is_relative_to(folder):
                item.add_marker(mark)


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """One SandboxServer on a random loopback port for the whole test session."""
    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Iterator[SandboxServer]:
    """The session's sandbox, reset: no calls recorded, no faults armed."""
    sandbox_server.state.reset()
    yield sandbox_server
    # Release any hang or drip the test left behind.
    sandbox_server.state.reset()


@pytest.fixture
def make_app(sandbox: SandboxServer) -> Iterator[AppFactory]:
    """Build apps aimed at the sandbox; keyword arguments as for sandbox_settings, plus clock."""
    apps: list[Flask] = []

    def factory(clock: Callable[[], float] | None = None, **changes: Any) -> Flask:
        settings = sandbox_settings(sandbox, **changes)
        app = create_app(settings) if clock is None else create_app(settings, clock=clock)
        app.test_client_class = CheckedClient
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["music"].client.close()


@pytest.fixture
def client(make_app: AppFactory) -> FlaskClient:
    """A contract-checking client of an app with the default test settings."""
    return make_app().test_client()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the module's tests (each takes its own database on it)."""
    with PostgresServer() as server:
        yield server


# PostgreSQL is a real server: those cases are live (-m "not live" keeps the SQLite ones, the
# same tests on the embedded database).
@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.live, pytest.mark.postgres])]
)
def mirror_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty mirror database of each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/mirror.db"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.database("mirror_" + uuid.uuid4().hex[:12])
