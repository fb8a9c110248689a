"""Groups anomalous windows into incidents so later stages narrate once, then update.

One incident holds: the same entity over consecutive anomalous windows (gaps up to
`gap_windows`), and, within one window, a service together with its anomalous edges
(an edge `a->b` joins the incidents of `a` and `b`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from processor.detect.entity_vector import edge_endpoints


class Flagged(Protocol):
    entity_type: str
    entity: str
    window_start_ms: int


@dataclass
class Incident:
    id: str
    first_window_ms: int
    last_window_ms: int
    entities: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class Assignment:
    incident_id: str
    new: bool  # True for the first window of the incident


class IncidentTracker:
    """Assigns incident ids to each window's anomalies (call once per window, in order)."""

    def __init__(self, window_ms: int, gap_windows: int) -> None:
        self.window_ms = window_ms
        self.gap_windows = gap_windows
        self.open: dict[str, Incident] = {}
        self._by_entity: dict[tuple[str, str], str] = {}

    def _expire(self, window_ms: int) -> None:
        horizon = window_ms - self.gap_windows * self.window_ms
        for iid in [i for i, inc in self.open.items() if inc.last_window_ms < horizon]:
            for ent in self.open.pop(iid).entities:
                if self._by_entity.get(ent) == iid:
                    del self._by_entity[ent]

    def assign(self, flagged: Sequence[Flagged]) -> list[Assignment]:
        """Incident for each anomaly of one window (all items share window_start_ms)."""
        if not flagged:
            return []
        window_ms = flagged[0].window_start_ms
        self._expire(window_ms)
        groups = _group_same_window(flagged)
        out: list[Assignment | None] = [None] * len(flagged)
        for members in groups:
            keys = [(flagged[i].entity_type, flagged[i].entity) for i in members]
            known = sorted({self._by_entity[k] for k in keys if k in self._by_entity},
                           key=lambda iid: self.open[iid].first_window_ms)
            if known:
                inc, new = self.open[known[0]], False
                for other in known[1:]:  # two running incidents met: the older absorbs
                    inc.entities |= self.open.pop(other).entities
            else:
                iid = _incident_id(window_ms, keys)
                inc, new = Incident(iid, window_ms, window_ms), True
                self.open[iid] = inc
            inc.last_window_ms = max(inc.last_window_ms, window_ms)
            inc.entities.update(keys)
            for ent in inc.entities:
                self._by_entity[ent] = inc.id
            for i in members:
                out[i] = Assignment(inc.id, new)
        return [a for a in out if a is not None]

    def seed(self, rows: Iterable[dict[str, Any]]) -> None:
        """Rebuild open incidents from stored anomaly rows (window_start in ms), oldest first."""
        for r in rows:
            key = (str(r["entity_type"]), str(r["entity"]))
            ws = int(r["window_start"])
            inc = self.open.get(r["incident_id"])
            if inc is None:
                inc = self.open[r["incident_id"]] = Incident(r["incident_id"], ws, ws)
            inc.last_window_ms = max(inc.last_window_ms, ws)
            inc.entities.add(key)
            self._by_entity[key] = inc.id


def _group_same_window(flagged: Sequence[Flagged]) -> list[list[int]]:
    """Union-find: edge anomalies join the anomalies of their endpoint services."""
    parent = list(range(len(flagged)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    services = {f.entity: i for i, f in enumerate(flagged) if f.entity_type == "service"}
    for i, f in enumerate(flagged):
        ends = edge_endpoints(f.entity) if f.entity_type == "edge" else None
        for svc in ends or ():
            j = services.get(svc)
            if j is not None:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(flagged)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _incident_id(window_ms: int, keys: list[tuple[str, str]]) -> str:
    digest = hashlib.sha1(repr(sorted(keys)).encode()).hexdigest()[:8]
    return f"inc-{window_ms}-{digest}"
