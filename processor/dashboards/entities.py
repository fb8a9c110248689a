"""Which services, edges and incidents exist, from the catalogue, for checking what a spec names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Query = Callable[[str, Mapping[str, Any]], list[dict[str, Any]]]  # catalogue query by name


class StoredEntities:
    """``exists(param, value)`` over what ClickHouse holds since ``since_ms``; each kind is read
    once, on first use (a spec names a few entities, a check reads at most three queries)."""

    def __init__(self, query: Query, since_ms: int) -> None:
        self.query = query
        self.since_ms = since_ms
        self._nodes: set[str] | None = None
        self._incidents: dict[str, bool] = {}

    def nodes(self) -> set[str]:
        if self._nodes is None:  # names only: no sketch is merged to check that a name exists
            rows = self.query("entity_names", {"since_ms": self.since_ms})
            self._nodes = {str(r["name"]) for r in rows}
        return self._nodes

    def __call__(self, param: str, value: str) -> bool:
        if param in ("service", "client", "server"):
            return value in self.nodes()
        if param == "incident_id":
            if value not in self._incidents:
                rows = self.query("anomalies", {"since_ms": self.since_ms, "incident_id": value, "limit": 1})
                self._incidents[value] = bool(rows)
            return self._incidents[value]
        return True
