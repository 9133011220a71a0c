"""Every test in this folder runs the service, Redis, nginx or a browser as real processes."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark this folder's tests `live` (the hook sees every collected test: keep ours)."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.live)
