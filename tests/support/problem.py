"""The problem+json answer a test expects: status, code, and the fields every problem carries."""

from __future__ import annotations

from typing import Any

from werkzeug.test import TestResponse


def problem(resp: TestResponse, status: int, code: str) -> dict[str, Any]:
    """Assert resp is the problem+json answer with this status and code; return its body."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    assert resp.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = resp.get_json(force=True)
    assert body["status"] == status
    assert body["code"] == code
    assert body["title"]
    assert body["detail"]
    assert body["type"]
    assert body["request_id"] == resp.headers["X-Request-ID"]
    return body
