"""Placing panels on Grafana's 24-column grid: left to right, a new row when one is full."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

GRID_COLUMNS = 24


def flow(panels: Iterable[tuple[dict[str, Any], int, int]]) -> list[dict[str, Any]]:
    """Panels (each with its width and height) numbered from 1 and placed in order; a row
    is as tall as its tallest panel, so nothing overlaps."""
    out: list[dict[str, Any]] = []
    x = y = row_h = 0
    for i, (panel, w, h) in enumerate(panels, start=1):
        w = max(1, min(GRID_COLUMNS, w))
        if x + w > GRID_COLUMNS:
            x, y, row_h = 0, y + row_h, 0
        out.append({"id": i, **panel, "grid": {"x": x, "y": y, "w": w, "h": h}})
        x += w
        row_h = max(row_h, h)
    return out
