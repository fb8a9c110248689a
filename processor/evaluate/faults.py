"""`otel-insights evaluate faults`: WindowDetector vs labelled injected faults -> recall, precision, false alarms.

Two runs of the demo shop's traffic (diurnal rate, per-minute rate noise, harmless blips),
turned into final window rows without a broker (:mod:`processor.evaluate.faults_scenario`):
one with a fault in every slot of 24 windows (4 kinds x 3 sizes, random targets and
times), one fault-free. Both stream through one WindowDetector each, in window order, after
an unscored warm-up, windows without any traffic included as the pipeline judges them
(``judge_empty_windows``); with ``autoencoder`` among the detectors, models are trained on
the pipeline's schedule. The runs are independent processes (``jobs``).

Scoring:
- a fault is detected if a verdict lands on a detecting entity (the target service; for an
  edge fault the edge or either endpoint) within ``DETECT_WINDOWS`` windows of the window
  holding its onset; delay = windows from that onset window to the first such verdict;
- an alarm is a run of verdicts on one entity (gaps of at most 2 windows merged); in the
  fault run it is explained if it overlaps a fault (plus ``TAIL_WINDOWS`` of recovery) whose
  blast radius holds the entity; precision = explained alarms / all alarms;
- false alarms per entity-day: alarms of the fault-free run / (entities x days), and the
  unexplained alarms of the fault run over its quiet time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from processor.config.components import AnomalyConfig, AutoencoderConfig
from processor.detect.autoencoder import Autoencoder
from processor.detect.entity_models import TrainingSet, model_spec, train_models
from processor.detect.window import WindowDetector
from processor.evaluate.faults_scenario import (
    SIZES,
    LabelledFault,
    detecting_entities,
    make_schedule,
    related_entities,
    window_rows,
    with_silences,
)
from processor.generate import FaultSpec, ShopGenerator

DETECT_WINDOWS = 2
TAIL_WINDOWS = 5
MERGE_WINDOWS = 2
DAY_S = 86_400.0
START_NS = 1_700_000_000 * 10**9 // 86_400_000_000_000 * 86_400_000_000_000  # a midnight


@dataclass(frozen=True)
class RunSpec:
    """One generated run: what the worker process needs."""

    name: str  # "faults" or "clean"
    seed: int
    rate: float
    days: float
    warmup_windows: int
    window_s: int
    diurnal_amplitude: float
    rate_noise: float
    slot_windows: int
    settings: AnomalyConfig


@dataclass
class RunResult:
    spec: RunSpec
    verdicts: list[tuple[str, str, int, str, float]]  # (entity_type, entity, window_start_ms, metric, score)
    faults: list[LabelledFault]
    blips: list[FaultSpec]
    entities: int
    first_ms: int  # first scored window
    end_ms: int  # end of the last window
    entity_windows: int
    detect_s: float
    wall_s: float


def run_one(spec: RunSpec) -> RunResult:
    """Generate one run's windows and stream them through a fresh WindowDetector."""
    t_wall = time.perf_counter()
    window_ns = spec.window_s * 10**9
    windows = spec.warmup_windows + int(spec.days * DAY_S / spec.window_s)
    sched = make_schedule(spec.seed, START_NS, window_ns, windows, spec.warmup_windows,
                          with_faults=spec.name == "faults", slot_windows=spec.slot_windows)
    gen = ShopGenerator(seed=spec.seed, rate=spec.rate, start_ns=START_NS,
                        faults=[f.spec for f in sched.faults] + sched.blips,
                        diurnal_amplitude=spec.diurnal_amplitude, rate_noise=spec.rate_noise)
    det = WindowDetector(spec.settings, spec.window_s * 1000)
    first_ms = (START_NS + spec.warmup_windows * window_ns) // 10**6
    verdicts: list[tuple[str, str, int, str, float]] = []
    entities: set[tuple[str, str]] = set()
    n_obs, detect_s = 0, 0.0
    trainer = _ScheduledTraining(spec) if "autoencoder" in spec.settings.detectors else None
    for i, wr in enumerate(with_silences(window_rows(gen, windows * spec.window_s, window_ns),
                                         spec.window_s * 1000)):
        if trainer is not None:
            trainer.maybe_train(i, det)
        entities.update(("service", r["service"]) for r in wr.health)
        entities.update(("edge", f"{r['client']}->{r['server']}") for r in wr.edges)
        n_obs += len(wr.health) + len(wr.edges)
        t = time.process_time()  # CPU time: other load on the machine does not count
        found = det.observe_window(wr.window_start_ms, wr.health, wr.edges)
        detect_s += time.process_time() - t
        if wr.window_start_ms >= first_ms:
            verdicts.extend((v.entity_type, v.entity, v.window_start_ms, v.metric, v.score) for v in found)
        if trainer is not None:
            trainer.history.add_window(wr.health, wr.edges, exclude={(v.entity_type, v.entity) for v in found})
    end_ms = (START_NS + windows * window_ns) // 10**6
    return RunResult(spec, verdicts, sched.faults, sched.blips, len(entities), first_ms, end_ms,
                     n_obs, detect_s, time.perf_counter() - t_wall)


class _ScheduledTraining:
    """The pipeline's autoencoder schedule (``processors.anomaly.autoencoder`` defaults) in
    simulated time: every ``retrain_interval``, on the last ``training_window``, once an entity
    has ``min_history`` of usable windows (trained in process here; flagged windows stay
    out, as in the pipeline)."""

    def __init__(self, spec: RunSpec) -> None:
        cfg, window_ms = AutoencoderConfig(), spec.window_s * 1000
        self.every = max(1, cfg.retrain_interval.ms // window_ms)
        self.spec = model_spec(cfg, window_ms)
        self.history = TrainingSet(spec.settings.min_requests, self.spec.max_windows)

    def maybe_train(self, i: int, det: WindowDetector) -> None:
        if i < self.spec.min_windows or (i - self.spec.min_windows) % self.every:
            return
        blobs = train_models(self.history.matrices(), self.spec)
        det.load_models({k: Autoencoder.from_bytes(b) for k, b in blobs.items()})


@dataclass
class Cell:
    """Detection figures of one (kind, size) group of faults."""

    faults: int = 0
    detected: int = 0  # within DETECT_WINDOWS of onset
    detected_late: int = 0  # at any time during the fault (+ DETECT_WINDOWS)
    delays: list[int] = field(default_factory=list)

    def add(self, other: Cell) -> None:
        self.faults += other.faults
        self.detected += other.detected
        self.detected_late += other.detected_late
        self.delays += other.delays

    def to_dict(self) -> dict[str, Any]:
        return {"faults": self.faults, "detected": self.detected, "detected_any": self.detected_late,
                "recall": _ratio(self.detected, self.faults),
                "recall_any": _ratio(self.detected_late, self.faults),
                "median_delay_windows": statistics.median(self.delays) if self.delays else None,
                "mean_delay_windows": statistics.fmean(self.delays) if self.delays else None}


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def alarms(verdicts: list[tuple[str, str, int, str, float]], window_ms: int) -> list[tuple[tuple[str, str], int, int]]:
    """Runs of verdicts per entity -> [(entity, first window, last window)]; gaps <= MERGE_WINDOWS merged."""
    by: dict[tuple[str, str], list[int]] = {}
    for et, e, ws, _m, _s in verdicts:
        by.setdefault((et, e), []).append(ws)
    out = []
    for key, wss in by.items():
        wss = sorted(set(wss))
        start = prev = wss[0]
        for ws in wss[1:]:
            if ws - prev > MERGE_WINDOWS * window_ms:
                out.append((key, start, prev))
                start = ws
            prev = ws
        out.append((key, start, prev))
    return sorted(out, key=lambda a: a[1])


def _span_ms(f: FaultSpec, window_ms: int, tail: int) -> tuple[int, int]:
    start_ms, end_ms = f.start_ns // 10**6, (f.end_ns - 1) // 10**6
    return start_ms - start_ms % window_ms, end_ms - end_ms % window_ms + tail * window_ms


def _detections(res: RunResult, cells: dict[tuple[str, str], Cell]) -> list[dict[str, Any]]:
    """Add each fault of a run to its cell; returns one line per fault (delay None: missed)."""
    w_ms = res.spec.window_s * 1000
    out = []
    for lf in res.faults:
        lo, hi = _span_ms(lf.spec, w_ms, DETECT_WINDOWS)
        targets = detecting_entities(lf.spec)
        hits = [ws for et, e, ws, _m, _s in res.verdicts if lo <= ws <= hi and (et, e) in targets]
        cell = cells[(lf.kind, lf.size)]
        cell.faults += 1
        delay = (min(hits) - lo) // w_ms if hits else None
        if delay is not None:
            cell.detected_late += 1
            cell.delays.append(delay)
            cell.detected += delay <= DETECT_WINDOWS
        out.append({"kind": lf.kind, "size": lf.size, "target": lf.spec.target,
                    "magnitude": lf.spec.magnitude, "onset_window": (lo - res.first_ms) // w_ms,
                    "windows": (hi - lo) // w_ms - DETECT_WINDOWS + 1, "delay_windows": delay})
    return out


def _explained(res: RunResult) -> tuple[int, int, int, float]:
    """(alarms, explained by a fault, on a blip, quiet entity-days) of a fault run."""
    w_ms = res.spec.window_s * 1000
    spans = [(_span_ms(lf.spec, w_ms, TAIL_WINDOWS), related_entities(lf.spec.target, lf.kind))
             for lf in res.faults]
    blip_spans = [(_span_ms(b, w_ms, TAIL_WINDOWS), related_entities(b.target, b.kind)) for b in res.blips]
    runs = alarms(res.verdicts, w_ms)
    explained = blips = 0
    for key, a0, a1 in runs:
        if any(lo <= a1 and a0 <= hi and key in rel for (lo, hi), rel in spans):
            explained += 1
        elif any(lo <= a1 and a0 <= hi and key in rel for (lo, hi), rel in blip_spans):
            blips += 1
    quiet_ms = max(0, res.end_ms - res.first_ms - _union_ms([sp for sp, _ in spans]))
    return len(runs), explained, blips, res.entities * quiet_ms / (DAY_S * 1000)


def score_runs(results: Sequence[RunResult]) -> dict[str, Any]:
    """The report: per-(kind, size) cells, totals, precision/F1 and false-alarm rates."""
    cells: dict[tuple[str, str], Cell] = {(k, s): Cell() for k, s, _ in SIZES}
    total_alarms = explained = blip_alarms = clean_alarms = 0
    quiet_entity_days = clean_entity_days = 0.0
    per_fault: list[dict[str, Any]] = []
    for res in results:
        if res.spec.name == "clean":
            clean_alarms += len(alarms(res.verdicts, res.spec.window_s * 1000))
            clean_entity_days += res.entities * (res.end_ms - res.first_ms) / (DAY_S * 1000)
            continue
        per_fault += _detections(res, cells)
        n, ok, blips, quiet = _explained(res)
        total_alarms, explained, blip_alarms = total_alarms + n, explained + ok, blip_alarms + blips
        quiet_entity_days += quiet
    by_kind: dict[str, Cell] = {}
    for (kind, _size), c in cells.items():
        by_kind.setdefault(kind, Cell()).add(c)
    overall = Cell()
    for c in cells.values():
        overall.add(c)
    recall = _ratio(overall.detected, overall.faults)
    precision = _ratio(explained, total_alarms)
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0 else None)
    entity_windows = sum(r.entity_windows for r in results)
    return {
        "cells": {f"{k}/{s}": c.to_dict() for (k, s), c in cells.items()},
        "kinds": {k: c.to_dict() for k, c in by_kind.items()},
        "overall": overall.to_dict(),
        "precision": precision, "recall": recall, "f1": f1,
        "alarms": total_alarms, "explained_alarms": explained, "blip_alarms": blip_alarms,
        "false_alarms_per_entity_day_clean": _ratio_f(clean_alarms, clean_entity_days),
        "clean_alarms": clean_alarms, "clean_entity_days": clean_entity_days,
        "false_alarms_per_entity_day_quiet": _ratio_f(total_alarms - explained, quiet_entity_days),
        "observe_us": 1e6 * sum(r.detect_s for r in results) / entity_windows if entity_windows else None,
        "entity_windows": entity_windows,
        "faults": per_fault,
    }


def _ratio_f(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _union_ms(spans: list[tuple[int, int]]) -> int:
    total, cur_lo, cur_hi = 0, None, None
    for lo, hi in sorted(spans):
        if cur_hi is None or lo > cur_hi:
            if cur_hi is not None and cur_lo is not None:
                total += cur_hi - cur_lo
            cur_lo, cur_hi = lo, hi
        else:
            cur_hi = max(cur_hi, hi)
    if cur_hi is not None and cur_lo is not None:
        total += cur_hi - cur_lo
    return total


def evaluate_faults(seed: int = 1, rate: float = 10.0, fault_days: float = 1.0, clean_days: float = 1.0,
                    settings: AnomalyConfig | None = None, jobs: int = 2, warmup_windows: int = 120,
                    window_s: int = 60, diurnal_amplitude: float = 0.5, rate_noise: float = 0.05,
                    slot_windows: int = 24) -> dict[str, Any]:
    """Run the fault and fault-free runs (in ``jobs`` processes) and score them; see the module doc."""
    settings = settings or AnomalyConfig()
    common = dict(rate=rate, warmup_windows=warmup_windows, window_s=window_s,
                  diurnal_amplitude=diurnal_amplitude, rate_noise=rate_noise,
                  slot_windows=slot_windows, settings=settings)
    specs = [RunSpec("faults", seed * 2, days=fault_days, **common)]  # type: ignore[arg-type]
    if clean_days > 0:
        specs.append(RunSpec("clean", seed * 2 + 1, days=clean_days, **common))  # type: ignore[arg-type]
    t0 = time.perf_counter()
    if jobs > 1 and len(specs) > 1:
        with ProcessPoolExecutor(max_workers=min(jobs, len(specs))) as pool:
            results = list(pool.map(run_one, specs))
    else:
        results = [run_one(s) for s in specs]
    report = score_runs(results)
    report["wall_s"] = time.perf_counter() - t0
    report["runs"] = [{"name": r.spec.name, "seed": r.spec.seed, "days": r.spec.days,
                       "entities": r.entities, "faults": len(r.faults), "blips": len(r.blips),
                       "verdicts": len(r.verdicts), "seconds": r.wall_s} for r in results]
    return report
