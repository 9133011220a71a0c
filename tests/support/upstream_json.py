"""Hypothesis strategies for the JSON an upstream could send, biased toward the edges the
record mapping cares about, and the settings every property test runs with."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Deterministic runs (derandomize, no example database): CI must not flake.
PROPERTIES = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- JSON values, biased toward the edges the mapping cares about ------------------------------

EDGE_INTEGERS = [
    0, -1, 1, 9, 10, 29, 30, 99, 100, 101,
    2**31, 2**53 - 1, 2**53, 2**63, -(2**63), 10**30, -(10**30), 10**400,
    253_402_300_799_999, 253_402_300_800_000,  # the last epoch ms of year 9999, and one past
]  # fmt: skip
EDGE_FLOATS = [
    -0.0, 0.5, 9.999, 29.5, 99.5, 100.4, 100.5, 1e-300, 5e-324, 1.7976931348623157e308,
    253_402_300_799_999.9, 1.7e12, -1.5, math.inf, -math.inf, math.nan,
]  # fmt: skip
EDGE_STRINGS = [
    "", " ", "\x00", "null", "0", "30", "true", "\ud800", "a\udfffb", "🎵", "é" * 3,
    "1716565425000", "2024-05-24T15:43:45Z",
]  # fmt: skip

integers = st.integers() | st.sampled_from(EDGE_INTEGERS)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(EDGE_FLOATS)
# Any code point, lone surrogates included (json.loads accepts "\ud800").
texts = (
    st.text(st.characters(exclude_categories=()), max_size=30)
    | st.sampled_from(EDGE_STRINGS)
    | st.integers(min_value=1_000, max_value=200_000).map(lambda n: "ü" * n)  # long
)
scalars = st.none() | st.booleans() | integers | floats | texts

FIELDS = [
    "itemId", "titleEn", "status", "progress", "cover", "musicMaterial", "ltmMaterialExtendDto",
    "createTime", "updateTime", "style", "mood", "key", "bpm", "dur", "prompt", "description",
    "lyricsPrompt", "modelShowName",
]  # fmt: skip
keys = st.sampled_from(FIELDS) | st.text(max_size=12)

json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
# A field's value: any type, but shallow (the mapping never looks deeper), so generation is cheap.
field_values = scalars | st.lists(scalars, max_size=2) | st.dictionaries(keys, scalars, max_size=2)
