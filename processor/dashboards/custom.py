"""Saved (custom) dashboards: a generated dashboard kept under a user's title, its panels chosen and ordered.

Saving makes a new dashboard (kind `custom`) from any dashboard; changing a saved one makes
its next version. The user picks which of the panels stay and in which order; the panels
themselves (their queries, fields and thresholds) are the generated ones, so a saved
dashboard passes the same checks as a generated one and reads only the catalogue.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from processor.dashboards import record
from processor.dashboards.layout import flow
from processor.insights.message import iso

MAX_TITLE = 300


def customize(base: Mapping[str, Any], body: Any, new: bool, now_ms: int | None = None) -> dict[str, Any]:
    """``body``: {"title": str, "panels": [panel ids, in the order to show them]}. ValueError
    when it is not that, names a panel ``base`` does not have, or keeps none."""
    if not isinstance(body, dict):
        raise ValueError("a JSON object with title and panels")
    title = str(body.get("title") or "").strip()
    if not title or len(title) > MAX_TITLE:
        raise ValueError(f"title: 1 to {MAX_TITLE} characters")
    order = body.get("panels")
    if not isinstance(order, list) or not order or not all(isinstance(i, int) for i in order):
        raise ValueError("panels: the ids of the panels to keep, in order")
    if len(set(order)) != len(order):
        raise ValueError("panels: an id is given twice")
    by_id = {int(p["id"]): p for p in base["panels"]}
    unknown = [i for i in order if i not in by_id]
    if unknown:
        raise ValueError(f"panels: {unknown} are not panels of {base['id']}")
    kept = [({k: v for k, v in by_id[i].items() if k not in ("id", "grid")}, by_id[i]["grid"]["w"],
             by_id[i]["grid"]["h"]) for i in order]
    now = int(time.time() * 1000) if now_ms is None else now_ms
    did = f"custom-{uuid.uuid4().hex[:16]}" if new else str(base["id"])
    version = 1 if new else int(base["version"]) + 1
    based_on = base["id"] if new else (base.get("generator") or {}).get("based_on")
    return {**base, "id": did, "version": version, "kind": "custom", "title": title, "panels": flow(kept),
            "generator": {"kind": "user", "model": None, "based_on": based_on}, "generated_at": iso(now)}


def row(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A saved dashboard's row: stored published (the UI publishes it after storing)."""
    return record.row(spec, published=1)
