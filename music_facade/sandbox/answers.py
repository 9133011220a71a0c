"""The sandbox's JSON answers: a body as JSON, and the upstream's error shape."""

from __future__ import annotations

import json
from typing import Any

from flask import Response

from music_facade.sandbox.faults import JSON


def json_answer(body: Any, status: int = 200) -> Response:
    """A JSON answer."""
    return Response(json.dumps(body), status=status, content_type=JSON)


def error(message: str, status: int) -> Response:
    """The upstream's error shape: {"error": message, "code": status}."""
    return json_answer({"error": message, "code": status}, status)
