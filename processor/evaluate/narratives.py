"""`otel-insights evaluate narratives`: do insights point at the faulted entity, and are they grounded?

The `evaluate faults` scenario (generated shop traffic with labelled faults, one fault slot
at a time) runs through the detectors and the incident tracker as stage 2 does; each
incident, once it has ended, gets stage 3's facts bundle (from its anomaly rows and the
edge rows of its windows) and a narrative. Against the labels it reports, per fault, the
first incident that matches it (an on-call engineer reads that one): is the fault's target
the suspected origin (top 1), among the first three candidates (top 3); and the share of
narratives that are grounded, with what they cost (0 for the template).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from processor.config.components import AnomalyConfig
from processor.detect.incidents import IncidentTracker
from processor.detect.window import WindowDetector
from processor.evaluate.faults import START_NS, TAIL_WINDOWS, _span_ms
from processor.evaluate.faults_scenario import (
    LabelledFault,
    make_schedule,
    related_entities,
    window_rows,
    with_silences,
)
from processor.generate import ShopGenerator
from processor.insights import facts as facts_mod
from processor.insights import grounding, lifecycle
from processor.insights.message import Narration, template_narration

DAY_S = 86_400.0


@dataclass
class IncidentResult:
    incident_id: str
    first_ms: int
    last_ms: int
    entities: set[tuple[str, str]]
    candidates: list[str]  # ranked suspected origins
    grounded: bool
    narrator: str
    cost_usd: float


@dataclass
class FaultOutcome:
    kind: str
    size: str
    target: str
    expected_origin: str
    incident: str | None = None
    rank: int | None = None  # of the expected origin among the candidates (1 = top)
    candidates: list[str] = field(default_factory=list)


def expected_origin(target: str) -> str:
    """The node an insight should name: the target, or an edge fault's server."""
    return target.partition("->")[2] or target


def run(seed: int, rate: float, days: float, warmup_windows: int, window_s: int, slot_windows: int,
        settings: AnomalyConfig, narrate: Callable[[facts_mod.Facts], Narration] = template_narration,
        ) -> tuple[list[IncidentResult], list[LabelledFault]]:
    """Every incident of one generated fault run, narrated once it has ended."""
    window_ms = window_s * 1000
    windows = warmup_windows + int(days * DAY_S / window_s)
    sched = make_schedule(seed, START_NS, window_s * 10**9, windows, warmup_windows, with_faults=True,
                          slot_windows=slot_windows)
    gen = ShopGenerator(seed=seed, rate=rate, start_ns=START_NS, faults=[f.spec for f in sched.faults] + sched.blips)
    det = WindowDetector(settings, window_ms)
    tracker = IncidentTracker(window_ms, settings.incident_gap_windows)
    first_ms = (START_NS + warmup_windows * window_s * 10**9) // 10**6
    rows: dict[str, list[dict[str, Any]]] = {}
    last: dict[str, int] = {}
    edges: dict[int, list[dict[str, Any]]] = {}
    out: list[IncidentResult] = []

    def close(incident: str) -> None:
        anomalies = rows.pop(incident)
        lo, hi = min(r["window_start"] for r in anomalies), last.pop(incident)
        edge_rows = [e for ws in range(lo, hi + window_ms, window_ms) for e in edges.get(ws, ())]
        facts = facts_mod.build(incident, anomalies, edge_rows, window_ms)
        n = narrate(facts)
        grounded = n.grounded and not grounding.check(dict(n.narrative), facts)
        out.append(IncidentResult(incident, lo, hi, {(r["entity_type"], r["entity"]) for r in anomalies},
                                  [c.entity for c in facts.origin], grounded, n.narrator, n.cost_usd))

    for wr in with_silences(window_rows(gen, windows * window_s, window_s * 10**9), window_ms):
        ws = wr.window_start_ms
        found = det.observe_window(ws, wr.health, wr.edges)
        edges[ws] = wr.edges
        edges.pop(ws - 64 * window_ms, None)  # only incidents' recent windows are read
        if ws < first_ms:
            continue
        for v, a in zip(found, tracker.assign(found), strict=True):
            attribution = det.attribution(v, wr.edges) if v.entity_type == "service" else []
            rows.setdefault(a.incident_id, []).append({
                "window_start": ws, "entity_type": v.entity_type, "entity": v.entity, "metric": v.metric,
                "observed": float(v.observed), "expected": float(v.expected), "score": float(v.score),
                "severity": v.severity, "attribution": attribution})
            last[a.incident_id] = ws
        for incident in [i for i, lw in last.items()
                         if lifecycle.ended(lw, ws, window_ms, settings.incident_gap_windows)]:
            close(incident)
    for incident in list(last):
        close(incident)
    return out, sched.faults


def match(incidents: list[IncidentResult], faults: list[LabelledFault], window_ms: int
          ) -> tuple[list[FaultOutcome], set[str]]:
    """Each fault of one run with the first incident of that run that matches it (its time
    span and the entities it can move); and the ids of the incidents that matched one."""
    outcomes = []
    matched: set[str] = set()
    for lf in faults:
        lo, hi = _span_ms(lf.spec, window_ms, TAIL_WINDOWS)
        related = related_entities(lf.spec.target, lf.kind)
        want = expected_origin(lf.spec.target)
        o = FaultOutcome(lf.kind, lf.size, lf.spec.target, want)
        for inc in sorted(incidents, key=lambda i: i.first_ms):
            if inc.first_ms <= hi and lo <= inc.last_ms and inc.entities & related:
                o.incident, o.candidates = inc.incident_id, inc.candidates[:5]
                o.rank = inc.candidates.index(want) + 1 if want in inc.candidates else None
                matched.add(inc.incident_id)
                break
        outcomes.append(o)
    return outcomes, matched


def score(runs: list[tuple[list[IncidentResult], list[LabelledFault]]], window_ms: int) -> dict[str, Any]:
    """The report over runs (each run's incidents matched only to its own faults)."""
    outcomes: list[FaultOutcome] = []
    incidents: list[IncidentResult] = []
    matched = 0
    for run_incidents, run_faults in runs:
        o, m = match(run_incidents, run_faults, window_ms)
        outcomes += o
        incidents += run_incidents
        matched += len(m)
    found = [o for o in outcomes if o.incident is not None]
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in sorted({o.kind for o in outcomes}):
        of = [o for o in found if o.kind == kind]
        by_kind[kind] = {"faults": sum(1 for o in outcomes if o.kind == kind), "with_incident": len(of),
                         "top1": sum(1 for o in of if o.rank == 1), "top3": sum(1 for o in of if o.rank and o.rank <= 3)}
    grounded = sum(1 for i in incidents if i.grounded)
    return {
        "faults": len(outcomes), "with_incident": len(found),
        "top1": sum(1 for o in found if o.rank == 1), "top3": sum(1 for o in found if o.rank and o.rank <= 3),
        "by_kind": by_kind, "incidents": len(incidents), "unmatched_incidents": len(incidents) - matched,
        "grounded": grounded, "narrators": sorted({i.narrator for i in incidents}),
        "cost_usd": sum(i.cost_usd for i in incidents),
        "misses": [o.__dict__ for o in outcomes if o.rank != 1],
    }


def evaluate_narratives(seed: int = 1, rate: float = 10.0, days: float = 1.0, warmup_windows: int = 120,
                        window_s: int = 60, slot_windows: int = 24, settings: AnomalyConfig | None = None,
                        jobs: int = 2) -> dict[str, Any]:
    """One fault run per seed in ``seed .. seed + jobs - 1`` (in parallel), scored together."""
    settings = settings or AnomalyConfig()
    t0 = time.perf_counter()
    seeds = [seed * 2 + k * 2 for k in range(max(1, jobs))]  # evaluate faults' fault runs use seed * 2
    args = [(s, rate, days, warmup_windows, window_s, slot_windows, settings) for s in seeds]
    if len(args) > 1:
        with ProcessPoolExecutor(max_workers=len(args)) as pool:
            results = list(pool.map(_run_args, args))
    else:
        results = [_run_args(args[0])]
    report = score(results, window_s * 1000)
    report.update(seeds=seeds, days=days, rate=rate, wall_s=time.perf_counter() - t0)
    return report


def _run_args(a: tuple) -> tuple[list[IncidentResult], list[LabelledFault]]:
    return run(*a)
