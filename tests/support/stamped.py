"""The service with one more step in its request pipeline: a header on every response.

`stamped_steps` is the one-line change a new response header takes in music_facade.pipeline;
the in-process and the live tests (gunicorn: `APP`) build the app with it.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from music_facade import app, pipeline
from music_facade.config import Settings

HEADER = ("X-Served-By", "music-facade")
APP = "tests.support.stamped:create_app()"


class Stamp(pipeline.Step):
    """Adds HEADER to the response."""

    def headers(self, ex: pipeline.Exchange, out: pipeline.Headers) -> None:
        """The one header."""
        out.append(HEADER)


def stamped_steps(*parts: Any) -> list[pipeline.Step]:
    """music_facade.pipeline.steps with the Stamp step after the common headers."""
    return [*pipeline.steps(*parts), Stamp()]


def create_app(settings: Settings | None = None) -> Flask:
    """The service's app with stamped_steps."""
    return app.create_app(settings, steps=stamped_steps)
