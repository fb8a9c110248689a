"""The suspected origin of an incident, ranked deterministically from the call graph.

Latency and errors travel up the call graph: a slow database makes its callers slow, and
theirs. So among the anomalous nodes the likeliest origin of a latency or error incident
is the deepest one whose callees are healthy (nothing below it explains it) and whose
callers are anomalous too (the symptom spread upward from it). Traffic drops travel down:
for an incident of traffic drops only, the likeliest origin is the shallowest anomalous
node whose callers are healthy. Every candidate carries the evidence for its rank.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from processor.insights.text import quote

VIRTUAL_ROOTS = frozenset({"user"})  # the caller of root spans: never a suspect, depth 0


@dataclass(frozen=True)
class Candidate:
    """One anomalous node, with what its rank rests on."""

    entity: str
    rank: int  # 1 = the suspected origin
    score: float  # its strongest anomaly score
    depth: int  # calls from the nearest entry point; -1 if not reachable from one
    callers: tuple[str, ...]
    anomalous_callers: tuple[str, ...]
    callees: tuple[str, ...]
    anomalous_callees: tuple[str, ...]
    traffic_only: bool  # every anomaly of it is a traffic drop
    facts: tuple[str, ...]  # ids of the metric facts that make it anomalous

    def reasons(self) -> list[str]:
        """The evidence in words, names quoted safely."""
        out = []
        if not self.callees:
            out.append("it calls nothing that is traced")
        elif not self.anomalous_callees:
            out.append(_count(len(self.callees), "callee") + (" is" if len(self.callees) == 1 else " are")
                       + " healthy")
        else:
            out.append(f"{_share(self.anomalous_callees, self.callees, 'callee')} anomalous too")
        if self.callers:
            if self.anomalous_callers:
                out.append(f"{_share(self.anomalous_callers, self.callers, 'caller')} anomalous too")
            else:
                out.append(_count(len(self.callers), "caller") + (" is" if len(self.callers) == 1 else " are")
                           + " healthy")
        if self.depth >= 0:
            out.append("it takes the requests at the entry point" if self.depth == 0
                       else f"it sits {self.depth} call{'s' if self.depth > 1 else ''} below the entry point")
        return out


def _count(n: int, what: str) -> str:
    return f"its only {what}" if n == 1 else f"all {n} of its {what}s"


def _share(some: tuple[str, ...], of: tuple[str, ...], what: str) -> str:
    names = ", ".join(quote(n) for n in some[:5]) + (", ..." if len(some) > 5 else "")
    if len(of) == 1:
        return f"its only {what}, {names}, is"
    return f"{len(some)} of its {len(of)} {what}s ({names}) {'is' if len(some) == 1 else 'are'}"


def rank(anomalous: Mapping[str, tuple[float, bool, tuple[str, ...]]],
         calls: Iterable[tuple[str, str]]) -> list[Candidate]:
    """Rank the anomalous nodes as suspected origins, most likely first.

    ``anomalous``: node -> (strongest score, traffic drops only, metric fact ids);
    ``calls``: (client, server) pairs of the call graph around them.
    """
    callers: dict[str, set[str]] = {}
    callees: dict[str, set[str]] = {}
    for client, server in calls:
        if client == server:
            continue
        callees.setdefault(client, set()).add(server)
        if client not in VIRTUAL_ROOTS:
            callers.setdefault(server, set()).add(client)
    depth = _depths(callers, callees)
    cands = []
    for node, (score, traffic_only, facts) in anomalous.items():
        if node in VIRTUAL_ROOTS:
            continue
        up, down = sorted(callers.get(node, ())), sorted(callees.get(node, ()))
        cands.append(Candidate(
            entity=node, rank=0, score=score, depth=depth.get(node, -1), callers=tuple(up),
            anomalous_callers=tuple(c for c in up if c in anomalous),
            callees=tuple(down), anomalous_callees=tuple(c for c in down if c in anomalous),
            traffic_only=traffic_only, facts=facts))
    quality_incident = any(not c.traffic_only for c in cands)

    def key(c: Candidate) -> tuple:
        caller_share = len(c.anomalous_callers) / len(c.callers) if c.callers else 1.0
        if quality_incident:
            # Latency or errors: below everything else it explains, above what it spread to.
            return (c.traffic_only, bool(c.anomalous_callees), -caller_share, -c.depth, -c.score, c.entity)
        # Traffic drops only: the most upstream node whose callers still send as before.
        return (bool(c.anomalous_callers), c.depth if c.depth >= 0 else 1 << 30, -c.score, c.entity)

    ranked = sorted(cands, key=key)
    return [Candidate(**{**c.__dict__, "rank": i + 1}) for i, c in enumerate(ranked)]


def _depths(callers: Mapping[str, set[str]], callees: Mapping[str, set[str]]) -> dict[str, int]:
    """Shortest number of calls from an entry point (a node nobody traced calls)."""
    nodes = set(callers) | set(callees) | {s for v in callees.values() for s in v}
    roots = sorted(n for n in nodes if not callers.get(n) and n not in VIRTUAL_ROOTS)
    depth = {n: 0 for n in roots}
    queue = deque(roots)
    while queue:
        node = queue.popleft()
        for nxt in sorted(callees.get(node, ())):
            if nxt not in depth:
                depth[nxt] = depth[node] + 1
                queue.append(nxt)
    return depth
