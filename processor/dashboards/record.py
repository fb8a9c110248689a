"""A dashboard spec as a row of the `dashboards` table and as a record of the `dashboard-specs` topic."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from processor.dashboards.spec import encode
from processor.insights.message import iso_ms


def row(spec: Mapping[str, Any], published: int) -> dict[str, Any]:
    gen = spec["generator"]
    return {"dashboard_id": spec["id"], "version": spec["version"], "kind": spec["kind"], "title": spec["title"],
            "audience": spec["audience"], "incident_id": spec.get("incident_id") or "",
            "service": spec.get("service") or "",
            "generator": gen.get("model") or gen["kind"], "updated_at": iso_ms(spec["generated_at"]),
            "published": published, "spec": encode(spec).decode()}


def key(spec: Mapping[str, Any]) -> bytes:
    """Records are keyed by dashboard id: one partition holds a dashboard's versions in order."""
    return str(spec["id"]).encode()


def from_row(r: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(r["spec"])


