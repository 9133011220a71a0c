"""Plain-text tables for the operator commands (`mirror status`, `webhooks status`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO


def write_table(lines: Sequence[Sequence[str]], out: TextIO) -> None:
    """Rows of cells, each column padded to its widest cell but the last (free text, so a long
    error does not widen every line)."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        out.write("  ".join([*cells, line[-1]]).rstrip() + "\n")
