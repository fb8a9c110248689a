"""What the UI shows live: the newest version of each insight and dashboard spec from the topics,
and the browsers listening for changes.

Records arrive from the topics (replayed from their recent history at start, then live);
each id keeps its newest version, older or repeated versions are ignored (the topics are
at-least-once across a stage-3 handover). Every accepted change is offered to every
subscriber's bounded queue; a browser too slow to drain its queue is dropped and
reconnects, so one stuck tab never holds memory or the others.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from processor.dashboards.spec import dashboard_id, shape_problems
from processor.insights import message

SUBSCRIBER_QUEUE = 256


@dataclass
class Latest:
    """Newest version per id, at most ``cap`` ids (the least recently changed go first)."""

    id_field: str
    cap: int
    items: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)

    def offer(self, body: Mapping[str, Any]) -> bool:
        """Keep ``body`` if it is newer than what is held for its id; whether it was."""
        key = str(body[self.id_field])
        held = self.items.get(key)
        if held is not None and int(held["version"]) >= int(body["version"]):
            return False
        self.items[key] = dict(body)
        self.items.move_to_end(key)
        while len(self.items) > self.cap:
            self.items.popitem(last=False)
        return True

    def newest_first(self) -> list[dict[str, Any]]:
        return list(reversed(self.items.values()))


class LiveState:
    def __init__(self, max_insights: int = 500, max_dashboards: int = 500) -> None:
        self.insights = Latest("insight_id", max_insights)
        self.dashboards = Latest("id", max_dashboards)
        self._subscribers: set[asyncio.Queue[tuple[str, dict[str, Any]] | None]] = set()
        self.records = 0
        self.rejected = 0

    # -- from the topics ------------------------------------------------------------------

    def take(self, kind: str, value: bytes | None) -> None:
        """One record of the insights (``kind`` insight) or specs (``dashboard``) topic."""
        self.records += 1
        try:
            body = json.loads(value or b"")
            if kind == "insight":
                message.validate(body)
            elif shape_problems(body):
                raise ValueError("not a dashboard spec")
            accepted = (self.insights if kind == "insight" else self.dashboards).offer(body)
        except (ValueError, KeyError, TypeError, RecursionError, jsonschema.ValidationError):
            self.rejected += 1  # not ours, or not valid: the topic is shared with whoever writes it
            return
        if accepted:
            payload = with_links(body) if kind == "insight" else summary(body)
            self._publish(kind, payload)

    # -- to the browsers ------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[tuple[str, dict[str, Any]] | None]:
        q: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[tuple[str, dict[str, Any]] | None]) -> None:
        self._subscribers.discard(q)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _publish(self, kind: str, payload: dict[str, Any]) -> None:
        for q in list(self._subscribers):
            try:
                q.put_nowait((kind, payload))
            except asyncio.QueueFull:  # a stalled browser: end its stream, it reconnects
                self._subscribers.discard(q)
                q.get_nowait()
                q.put_nowait(None)

    def close(self) -> None:
        for q in list(self._subscribers):
            try:
                q.put_nowait(None)
            except asyncio.QueueFull:
                pass
        self._subscribers.clear()


def with_links(insight: Mapping[str, Any]) -> dict[str, Any]:
    """An insight with the id of its incident's dashboard (where the feed links to)."""
    return {**insight, "dashboard_id": dashboard_id("incident", str(insight["incident_id"]))}


def summary(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What a dashboard list shows of a spec."""
    gen = spec.get("generator") or {}
    return {"dashboard_id": spec["id"], "version": spec["version"], "kind": spec["kind"], "title": spec["title"],
            "audience": spec["audience"], "incident_id": spec.get("incident_id") or "",
            "service": spec.get("service") or "", "generator": gen.get("model") or gen.get("kind", ""),
            "updated_at": spec.get("generated_at", "")}
