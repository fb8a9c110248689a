"""Fault-evaluation scenarios: a labelled fault schedule, and generated traffic as final window rows.

The rows are what stage 2 would finalise, built from the generator's own call records
(:class:`~processor.generate.GroundTruth`), so no broker or database is needed: services get
calls/errors/p50/p95/p99 (read from the pipeline's sketch), edges requests/failed and both
latency sides (0 for an absent side, as ``Finalizer.final_edges`` stores it).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from processor.generate import FaultSpec, GroundTruth, ShopGenerator
from processor.generate import topology as topo
from processor.windows import sketch

# (kind, size label, magnitude): latency = own-work multiplier, errors = error probability,
# traffic = fraction of calls dropped, edge failure = fraction of calls failing fast.
SIZES: tuple[tuple[str, str, float], ...] = (
    ("latency_shift", "small", 2.0), ("latency_shift", "medium", 4.0),
    ("latency_shift", "large", 10.0),
    ("error_burst", "small", 0.05), ("error_burst", "medium", 0.2), ("error_burst", "large", 0.5),
    ("traffic_drop", "small", 0.5), ("traffic_drop", "medium", 0.8), ("traffic_drop", "large", 1.0),
    ("edge_failure", "small", 0.1), ("edge_failure", "medium", 0.3), ("edge_failure", "large", 1.0),
)
# Harmless blips: short and mild, part of the background (not labelled as faults).
BLIPS: tuple[tuple[str, float], ...] = (("latency_shift", 1.3), ("error_burst", 0.02),
                                         ("traffic_drop", 0.2))


def shop_edges() -> list[tuple[str, str]]:
    """Every (client, server) edge of the demo shop, the root user->frontend included."""
    edges = {("user", topo.ROOT_SERVICE)}
    for (service, _method), calls in topo.HANDLERS.items():
        edges.update((service, ds.target) for ds in calls)
    return sorted(edges)


NODES = sorted(topo.SERVICES) + sorted(topo.DATABASES)


@dataclass(frozen=True)
class LabelledFault:
    """A fault with its size class; ``spec`` is what the generator injects."""

    spec: FaultSpec
    size: str

    @property
    def kind(self) -> str:
        return self.spec.kind


@dataclass
class Schedule:
    faults: list[LabelledFault] = field(default_factory=list)
    blips: list[FaultSpec] = field(default_factory=list)


def make_schedule(seed: int, start_ns: int, window_ns: int, windows: int, warmup_windows: int,
                  with_faults: bool, slot_windows: int = 24, blip_p: float = 0.3) -> Schedule:
    """Faults one per slot of ``slot_windows`` after the warm-up, cycling through SIZES.

    Each fault starts at a random second in the first 5 windows of its slot and lasts 5-10
    windows, so detectors see clean traffic (at least 9 windows) between faults. Blips
    (15-40 s, mild) land in the quiet tail of some slots, in both kinds of run.
    """
    rng = random.Random(seed)
    sched = Schedule()
    grid = list(SIZES)
    rng.shuffle(grid)
    edges = [f"{c}->{s}" for c, s in shop_edges()]
    w_s = window_ns / 1e9
    slot = warmup_windows
    i = 0
    while slot + slot_windows <= windows:
        t0 = start_ns + slot * window_ns
        quiet_from = t0 + int(16 * window_ns)
        if with_faults:
            kind, size, magnitude = grid[i % len(grid)]
            if i % len(grid) == len(grid) - 1:
                rng.shuffle(grid)
            target = rng.choice(edges) if kind == "edge_failure" else rng.choice(NODES)
            start = t0 + int(rng.uniform(0.0, 5.0 * w_s) * 1e9)
            end = start + int(rng.uniform(5.0 * w_s, 10.0 * w_s) * 1e9)
            sched.faults.append(LabelledFault(FaultSpec(kind, target, start, end, magnitude), size))
            i += 1
        if rng.random() < blip_p:
            kind, magnitude = rng.choice(BLIPS)
            start = quiet_from + int(rng.uniform(0.0, (slot_windows - 18) * w_s) * 1e9)
            end = start + int(rng.uniform(15.0, 40.0) * 1e9)
            sched.blips.append(FaultSpec(kind, rng.choice(NODES), start, end, magnitude))
        slot += slot_windows
    return sched


@dataclass
class WindowRows:
    """One window's final rows, as stage 2 would produce them."""

    window_start_ms: int
    health: list[dict[str, Any]]
    edges: list[dict[str, Any]]


def with_silences(windows: Iterable[WindowRows], window_ms: int) -> Iterator[WindowRows]:
    """The windows plus an empty one for every window in between that had no traffic at all.

    What the pipeline judges with ``processors.anomaly.judge_empty_windows``: a total outage
    (the entry service stops, so nothing downstream runs) leaves no rows, only silence.
    """
    last: int | None = None
    for wr in windows:
        if last is not None:
            for ws in range(last + window_ms, wr.window_start_ms, window_ms):
                yield WindowRows(ws, [], [])
        last = wr.window_start_ms
        yield wr


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    """p50/p95/p99 as stage 2 reads them: from the pipeline's own log-bucket sketch."""
    if not values:
        return 0.0, 0.0, 0.0
    keys, counts = sketch.merge(sketch.keys_for(np.asarray(values)), np.ones(len(values)))
    p50, p95, p99 = sketch.quantiles(keys, counts, (0.5, 0.95, 0.99))
    return p50, p95, p99


def window_rows(gen: ShopGenerator, duration_s: float, window_ns: int) -> Iterator[WindowRows]:
    """Generated traffic as final window rows, oldest window first, streamed (bounded memory).

    Traces come in start order and end after they start, so once traces start at T every
    window ending at or before T is complete: each chunk of one window of trace starts is
    counted by its own GroundTruth and merged into the pending windows. Windows reaching past
    the end of the run (only the tails of its last traces) are left out.
    """
    run_end_ns = gen.start_ns + int(duration_s * 1e9)
    pending_s: dict[int, dict[str, dict[str, Any]]] = {}
    pending_e: dict[int, dict[tuple[str, str, str], dict[str, Any]]] = {}
    chunk: GroundTruth | None = None
    chunk_end = gen.start_ns

    def merge(gt: GroundTruth) -> None:
        for (svc, ws), v in gt.service_windows().items():
            acc = pending_s.setdefault(ws, {}).setdefault(svc, {"calls": 0, "errors": 0, "lat": []})
            acc["calls"] += v["calls"]
            acc["errors"] += v["errors"]
            acc["lat"].extend(v["latencies_ms"])
        for (c, s, ct, ws), e in gt.edge_windows().items():
            acc = pending_e.setdefault(ws, {}).setdefault(
                (c, s, ct), {"requests": 0, "failed": 0, "server": [], "client": []})
            acc["requests"] += e["requests"]
            acc["failed"] += e["failed"]
            acc["server"].extend(e["server_latencies_ms"])
            acc["client"].extend(e["client_latencies_ms"])

    def flush(before_ns: int) -> Iterator[WindowRows]:
        for ws in sorted(set(pending_s) | set(pending_e)):
            if ws + window_ns > before_ns:
                break
            yield _rows(ws, pending_s.pop(ws, {}), pending_e.pop(ws, {}))

    for tr in gen.traces(duration_s):
        if chunk is None or tr.start_ns >= chunk_end:
            if chunk is not None:
                merge(chunk)
                yield from flush(tr.start_ns)
            chunk = GroundTruth(window_ns)
            chunk_end = tr.start_ns - tr.start_ns % window_ns + window_ns
        chunk.add(tr)
    if chunk is not None:
        merge(chunk)
    yield from flush(run_end_ns)


def _rows(ws_ns: int, services: dict[str, dict[str, Any]],
          edges: dict[tuple[str, str, str], dict[str, Any]]) -> WindowRows:
    ws = ws_ns // 1_000_000
    health = []
    for svc, a in sorted(services.items()):
        p50, p95, p99 = _quantiles(a["lat"])
        health.append({"window_start": ws, "service": svc, "calls": a["calls"], "errors": a["errors"],
                       "error_rate": a["errors"] / a["calls"] if a["calls"] else 0.0,
                       "p50_ms": p50, "p95_ms": p95, "p99_ms": p99})
    edge_rows = []
    for (c, s, ct), e in sorted(edges.items()):
        sq, cq = _quantiles(e["server"]), _quantiles(e["client"])
        edge_rows.append({
            "window_start": ws, "client": c, "server": s, "connection_type": ct,
            "requests": e["requests"], "failed": e["failed"],
            "error_rate": e["failed"] / e["requests"] if e["requests"] else 0.0,
            "server_p50_ms": sq[0], "server_p95_ms": sq[1], "server_p99_ms": sq[2],
            "client_p50_ms": cq[0], "client_p95_ms": cq[1], "client_p99_ms": cq[2]})
    return WindowRows(ws, health, edge_rows)


def related_entities(target: str, kind: str) -> set[tuple[str, str]]:
    """Entities a fault of ``kind`` on ``target`` (a node or "client->server") can move.

    Latency and errors propagate to every caller above the target; lost traffic to every
    callee below it. A failing call also ends its caller's request early when it is critical
    (checkout stops at a failed cart call), so for failures and drops the callees of every
    caller lose traffic too. An alarm there while the fault is on is a symptom of the fault,
    not a false alarm.
    """
    edges = shop_edges()
    node = target.partition("->")[2] or target
    callers = _closure({node}, edges, forward=False)
    nodes = callers | _closure({node}, edges, forward=True)
    if kind != "latency_shift":
        nodes |= _closure(callers, edges, forward=True)
    out = {("service", n) for n in nodes}
    out |= {("edge", f"{c}->{s}") for c, s in edges if c in nodes and s in nodes}
    return out


def _closure(start: set[str], edges: list[tuple[str, str]], forward: bool) -> set[str]:
    """``start`` and every node reachable from it along edges (callees if forward, else callers)."""
    seen = set(start)
    frontier = list(start)
    while frontier:
        n = frontier.pop()
        for c, s in edges:
            src, dst = (c, s) if forward else (s, c)
            if src == n and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    return seen


def detecting_entities(fault: FaultSpec) -> set[tuple[str, str]]:
    """Where a detection counts for a fault: the target service (edges into a database node,
    which has no service row); for an edge fault, the edge or either endpoint service."""
    if fault.is_edge:
        c, s = fault.edge
        return {("edge", fault.target), ("service", c), ("service", s)}
    if fault.target in topo.DATABASES:
        return {("edge", f"{c}->{s}") for c, s in shop_edges() if s == fault.target}
    return {("service", fault.target)}
