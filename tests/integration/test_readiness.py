"""Readiness: /readyz while serving, 503 once shutting down (SIGTERM), in-flight requests finish."""

from __future__ import annotations

import logging

import pytest

from tests.support.helpers import AppFactory


def test_ready_then_shutting_down(make_app: AppFactory) -> None:
    app = make_app()
    client = app.test_client()  # checked against openapi.yaml
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "checks": {"redis": "off"}}
    assert ready.headers["Cache-Control"] == "no-store"
    app.extensions["lifecycle"].begin_shutdown()
    leaving = client.get("/readyz")
    assert leaving.status_code == 503
    assert leaving.headers["Content-Type"] == "application/problem+json"
    assert leaving.get_json()["code"] == "shutting_down"
    assert client.get("/healthz").status_code == 200  # liveness is not readiness


def test_probes_are_not_logged_at_info(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="music_facade.access")
    client = make_app().test_client()
    client.get("/healthz")
    client.get("/readyz")
    client.get("/music?user=studio")
    paths = [r.__dict__.get("path") for r in caplog.records if r.name == "music_facade.access"]
    assert paths == ["/music"]
