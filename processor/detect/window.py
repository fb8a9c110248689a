"""WindowDetector: per-entity anomaly detection on final health/edge windows -> Verdicts, attribution.

The pipeline's stage 2 calls it once per final window and entity. Per entity it keeps an
:class:`~processor.detect.ensemble.Ensemble` over the window vector (rate, p50, p95, p99,
error ratio) with direction-aware members per metric (latency up, traffic down): robust
median/MAD and EWMA, plus seasonal members in a second ensemble that scores once a day of
history is in. Latency is scored as log(ms), the request count on a square-root scale
(:func:`~processor.detect.entity_vector.to_model`). Counts get exact tests
(:mod:`processor.detect.counts`) over sums of the last 1-3 windows: the error
ratio a beta-binomial tail (a median/MAD of mostly-zero ratios calls one stray error in 40
requests a 5-sigma event), traffic a lasting drop. A score in [threshold, critical) alarms
only if its metric was suspicious in the previous window too, and a flagged value is not
learned (the Thresholded convention) until it has lasted ``adapt_after_windows``.

Contract with the caller (see :meth:`WindowDetector.observe_window`):

- windows of one entity arrive in time order; a window at or before the entity's last one is
  ignored (replays and re-finalised windows must not be learned twice);
- an entity seen recently but with no row in a window is reported with
  :meth:`WindowDetector.observe_missing` (a zero-traffic window) — that is how a service that
  disappears is caught; a plain jump in window_start is treated as "no data" (e.g. the
  pipeline was down), recorded as gaps, not as zero traffic;
- stage 2 may finalise several windows at once: group the rows by ``window_start`` and call
  :meth:`WindowDetector.observe_window` per window, oldest first;
- state survives restarts by replaying stored final rows through
  :meth:`WindowDetector.replay` (or per entity :meth:`WindowDetector.warm_up`), or by
  :meth:`WindowDetector.state_bytes` / :meth:`WindowDetector.from_bytes`.

>>> det = WindowDetector(AnomalySettings(grace_windows=5))
>>> for i in range(30):
...     row = {"calls": 500 + 7 * (i % 3), "errors": 1, "p50_ms": 10.0 + 0.1 * (i % 4),
...            "p95_ms": 40.0 + (i % 5), "p99_ms": 80.0 + 2 * (i % 3)}
...     assert det.observe("service", "cart", i * 60_000, row) is None
>>> v = det.observe("service", "cart", 30 * 60_000, {"calls": 505, "errors": 2, "p50_ms": 10.1,
...                 "p95_ms": 160.0, "p99_ms": 300.0})
>>> v.metric in ("p95_ms", "p99_ms"), v.severity, round(v.expected)
(True, 'critical', 42)
>>> det.observe("service", "cart", 31 * 60_000, {"calls": 40, "errors": 0, "p50_ms": 10.0,
...             "p95_ms": 41.0, "p99_ms": 81.0}).metric
'rate'
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from processor.detect.attribution import rank_edges
from processor.detect.autoencoder import Autoencoder
from processor.detect.base import BaseDetector, Detector
from processor.detect.counts import ErrorRatioTest, sustained_drop
from processor.detect.ensemble import Ensemble
from processor.detect.entity_models import score_vector, vector_features, window_vectors
from processor.detect.entity_vector import (
    EDGE,
    ERRORS,
    FEATURES,
    LATENCY,
    RATE,
    SERVICE,
    Evidence,
    edge_entity,
    features,
    from_model,
    group_by_window,
    merge_edge_rows,
    to_model,
)
from processor.detect.ewma import EWMA
from processor.detect.robust import RobustBaseline
from processor.detect.seasonal import Seasonal
from processor.detect.settings import STATE_VERSION, AnomalySettings


@dataclass
class Verdict:
    """An anomalous entity window: score, severity and the facts behind it (strongest first)."""

    entity_type: str
    entity: str
    window_start_ms: int
    score: float
    severity: str | None
    metric: str  # the top factor's metric: rate, error_ratio, p50_ms, p95_ms or p99_ms
    observed: float
    expected: float
    deviation: float  # signed, in sigmas of the top detector's scale
    detectors: tuple[str, ...]  # detector kinds scoring >= threshold
    factors: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)




_VECTOR = "vector"  # the autoencoder's key in _Entity.prev


class _Entity:
    """One entity's detectors and bookkeeping."""

    __slots__ = ("ensemble", "seasonal", "errors", "volumes", "last_ms", "refused", "prev", "slots",
                 "rate_base", "recent_n")

    def __init__(self, ensemble: Ensemble, seasonal: Ensemble | None, errors: ErrorRatioTest) -> None:
        self.ensemble = ensemble
        # The traffic member whose baseline the multi-window drop test uses (robust first).
        self.rate_base = next((d for _, m, d in ensemble.members if m == RATE and isinstance(d, Detector)),
                              None)
        self.recent_n: list[int] = []  # request counts of the last windows, for that test
        self.seasonal = seasonal  # apart: it learns from the start but scores once warm
        self.errors = errors
        self.slots = 0  # windows since the state was created, gaps included
        self.volumes: list[float] = []  # last volume_windows learned request counts
        self.last_ms: int | None = None
        self.refused = dict.fromkeys(FEATURES, 0)  # consecutive refused windows per metric
        self.prev = dict.fromkeys(FEATURES, 0.0)  # each metric's score in its last assessed window

    def baseline_volume(self) -> float:
        if not self.volumes:
            return 0.0
        s = sorted(self.volumes)
        return 0.5 * (s[(len(s) - 1) // 2] + s[len(s) // 2])


class WindowDetector:
    """Per-entity, per-metric streaming detectors over final windows; see the module docstring."""

    def __init__(self, settings: AnomalySettings | None = None) -> None:
        self.settings = settings or AnomalySettings()
        self._entities: dict[tuple[str, str], _Entity] = {}
        # Autoencoders are trained elsewhere (on stored history, on a schedule) and loaded.
        self._models: dict[tuple[str, str], Autoencoder] = {}

    def load_models(self, models: Mapping[tuple[str, str], Autoencoder]) -> None:
        """Use these fitted autoencoders ((entity_type, entity) -> model) from the next window on.

        Ignored unless "autoencoder" is among the settings' detectors; a model whose width
        does not match the entity's vector is skipped when scoring.
        """
        if "autoencoder" in self.settings.detectors:
            self._models.update(models)

    def models(self) -> dict[tuple[str, str], Autoencoder]:
        return dict(self._models)

    # -- building ---------------------------------------------------------------------------
    def _members(self, seasonal: bool) -> tuple[tuple[str, str | None, BaseDetector[Any]], ...]:
        s = self.settings
        members: list[tuple[str, str | None, BaseDetector[Any]]] = []
        for metric in (RATE, *LATENCY):
            direction = s.traffic_direction if metric == RATE else "up"
            # Floors on the model scale (see to_model): a relative change r of the count is
            # r/2 of its square root; latency's log scale takes an absolute floor.
            lo, rel = (0.0, s.rate_min_relative_scale / 2) if metric == RATE else (s.latency_min_scale, 0.0)
            if seasonal:
                members.append((f"{metric}.seasonal", metric, Seasonal(
                    period=s.period_windows, lags=s.seasonal_lags, direction=direction,
                    min_scale=lo, min_relative_scale=rel)))
                continue
            if "robust" in s.detectors:
                members.append((f"{metric}.robust", metric, RobustBaseline(
                    window=s.robust_windows, direction=direction, grace_period=s.grace_windows,
                    min_scale=lo, min_relative_scale=rel)))
            if "ewma" in s.detectors:
                members.append((f"{metric}.ewma", metric, EWMA(
                    alpha=s.ewma_alpha, direction=direction, grace_period=s.grace_windows,
                    min_scale=lo, min_relative_scale=rel)))
        return tuple(members)

    def _new_entity(self) -> _Entity:
        s = self.settings

        def ensemble(seasonal: bool) -> Ensemble:
            return Ensemble(FEATURES, self._members(seasonal), info=s.info, warning=s.warning,
                            critical=s.critical)

        seasonal = ensemble(True) if "seasonal" in s.detectors else None
        errors = ErrorRatioTest(window=s.error_windows, grace_period=s.grace_windows,
                                unit=s.error_ratio_unit, span=s.error_span_windows)
        return _Entity(ensemble(False), seasonal, errors)

    # -- the per-window step ----------------------------------------------------------------
    def observe(self, entity_type: str, entity: str, window_start_ms: int,
                row: Mapping[str, Any], vector: np.ndarray | None = None) -> Verdict | None:
        """Score one final window of an entity against its past, then learn it; a Verdict if anomalous.

        ``row`` is a final_health row (services) or final_edges row (edges); only the counts
        and quantiles are read. ``vector`` is the entity's window vector for its autoencoder
        (:func:`~processor.detect.entity_models.window_vectors`; :meth:`observe_window` passes
        it). Windows at or before the entity's last are ignored.
        """
        st = self._entity(entity_type, entity, window_start_ms)
        if st is None:
            return None
        return self._step(st, entity_type, entity, window_start_ms, features(entity_type, row), vector)

    def observe_missing(self, entity_type: str, entity: str, window_start_ms: int) -> Verdict | None:
        """A tracked entity had no row in this window: zero traffic (the extreme drop)."""
        if (entity_type, entity) not in self._entities:
            return None
        st = self._entity(entity_type, entity, window_start_ms)
        if st is None:
            return None
        nan = math.nan
        return self._step(st, entity_type, entity, window_start_ms, (0, 0, nan, nan, nan))

    def observe_window(self, window_start_ms: int, health_rows: Iterable[Mapping[str, Any]],
                       edge_rows: Iterable[Mapping[str, Any]]) -> list[Verdict]:
        """All final rows of one window (of the entities this worker owns), plus the absentees.

        Entities tracked by this detector (seen within ``forget_after_windows``) with no row
        here are observed as missing. Pass each window once, in time order.
        """
        out: list[Verdict] = []
        seen: set[tuple[str, str]] = set()
        health_rows, edge_rows = list(health_rows), merge_edge_rows(edge_rows)
        vectors = window_vectors(health_rows, edge_rows, self.settings.min_requests) if self._models else {}
        for kind, rows in ((SERVICE, health_rows), (EDGE, edge_rows)):
            for row in rows:
                name = str(row["service"]) if kind == SERVICE else edge_entity(row)
                seen.add((kind, name))
                v = self.observe(kind, name, window_start_ms, row, vectors.get((kind, name)))
                if v is not None:
                    out.append(v)
        for key in [k for k in self._entities if k not in seen]:
            v = self.observe_missing(key[0], key[1], window_start_ms)
            if v is not None:
                out.append(v)
        return out

    def warm_up(self, entity_type: str, entity: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Replay one entity's stored rows (oldest first, ``window_start`` in ms) without emitting.

        Windows missing from ``rows`` count as "no data", not zero traffic; :meth:`replay`
        (all entities at once) tells the two apart the way live observation does.
        """
        n = 0
        for row in rows:
            self.observe(entity_type, entity, int(row["window_start"]), row)
            n += 1
        return n

    def replay(self, health_rows: Iterable[Mapping[str, Any]], edge_rows: Iterable[Mapping[str, Any]]) -> int:
        """Warm up from stored final rows of every entity (e.g. ``Store.final_rows_between``):
        grouped by window and fed through :meth:`observe_window`, verdicts dropped; returns windows."""
        n = 0
        for ws, health, edges in group_by_window(health_rows, edge_rows):
            self.observe_window(ws, health, edges)
            n += 1
        return n

    def _entity(self, entity_type: str, entity: str, ws: int) -> _Entity | None:
        key = (entity_type, entity)
        st = self._entities.get(key)
        size = self.settings.window_size_ms
        if st is None or (st.last_ms is not None and
                          ws - st.last_ms > self.settings.forget_after_windows * size):
            st = self._entities[key] = self._new_entity()
        elif st.last_ms is not None:
            if ws <= st.last_ms:
                return None
            # Windows with no data at all (not even a zero row): unknown, not zero traffic.
            # Clocked members record gaps so the day/week phase holds.
            gaps = min((ws - st.last_ms) // size - 1, self.settings.period_windows * 8)
            for _ in range(gaps):
                st.ensemble.skip_one()
                if st.seasonal is not None:
                    st.seasonal.skip_one()
            if gaps > 0:  # multi-window sums must not span the gap
                st.recent_n = []
                for _ in range(min(gaps, st.errors.span)):
                    st.errors.push(0, 0, learn=False)
            st.slots += gaps
        st.last_ms = ws
        st.slots += 1
        return st

    def _step(self, st: _Entity, entity_type: str, entity: str, ws: int,
              feats: tuple[int, int, float, float, float], vector: np.ndarray | None = None) -> Verdict | None:
        s = self.settings
        n, k = feats[0], feats[1]
        enough = n >= s.min_requests
        x = self._vector(st, feats)
        xl = x.tolist()  # plain floats for the scalar checks below (numpy indexing is slow)
        assessments = [st.ensemble.assess(x)]
        if st.seasonal is not None and st.slots > s.period_windows * min(s.seasonal_lags) \
                + s.seasonal_grace_windows:
            assessments.append(st.seasonal.assess(x))
        err = st.errors.assess(k, n, s.min_requests) if n > 0 else None
        evidence = [Evidence(f.metric, from_model(f.metric, f.observed), from_model(f.metric, f.expected),
                             f.deviation, f.detector.rpartition(".")[2], f.score)
                    for a in assessments for f in a.factors]
        if err is not None and err.score >= s.info:
            evidence.append(Evidence(ERRORS, k / n, err.expected, err.deviation, "binomial", err.score))
        drop = sustained_drop(st.rate_base, st.recent_n, xl[0], n, s.traffic_direction,
                              s.rate_drop_unit)
        if drop is not None and drop.score >= s.info:
            evidence.append(drop)
        model = self._models.get((entity_type, entity)) if vector is not None else None
        if model is not None and vector is not None and vector.size == model.n_features:
            vector_score, found = score_vector(model, vector, vector_features(entity_type), s.info,
                                               s.traffic_direction)
            evidence.extend(found)
        else:
            vector_score = math.nan
        scores = dict.fromkeys(FEATURES, 0.0)
        if evidence:  # almost never: most windows are quiet
            evidence.sort(key=lambda e: -e.score)
            for e in evidence:
                scores[e.metric] = max(scores.get(e.metric, 0.0), e.score)
        assessed = [not math.isnan(v) for v in xl[:4]] + [err is not None]
        # One noisy window is common in low-volume quantiles and counts: a moderate score
        # needs its metric's previous window to have been suspicious too; a critical one
        # alarms at once. Errors and lasting drops need no confirmation: their multi-window
        # sums already are one. The autoencoder's factors share one score: its confirmation
        # is by vector, not metric.
        firing = [e for e in evidence if e.score >= s.critical or (e.score >= s.threshold and (
            e.metric == ERRORS or e.detector == "sustained"
            or st.prev.get(_VECTOR if e.detector == "autoencoder" else e.metric, 0.0) >= s.confirm_level))]
        for j, metric in enumerate(FEATURES):
            if assessed[j]:  # a window without evidence neither confirms nor clears
                st.prev[metric] = scores[metric]
        if not math.isnan(vector_score):
            st.prev[_VECTOR] = vector_score
        self._learn(st, x, xl, scores, assessed, k, n, enough)
        if not firing:
            return None
        top = firing[0]
        return Verdict(entity_type, entity, ws, top.score, s.severity(top.score), top.metric,
                       top.observed, top.expected, top.deviation,
                       tuple(dict.fromkeys(e.detector for e in firing)), [e._asdict() for e in evidence])

    def _vector(self, st: _Entity, feats: tuple[int, int, float, float, float]) -> np.ndarray:
        """The window on the model scale, NaN where it is no evidence (members skip NaN)."""
        s = self.settings
        n, k, p50, p95, p99 = feats
        enough = n >= s.min_requests
        # Traffic is judged against the volume the entity normally has: a drop to 3 requests
        # from 600 is the anomaly, so its guard uses the baseline volume, not this window's.
        rate_ok = n >= s.min_baseline_requests or st.baseline_volume() >= s.min_baseline_requests
        # A quantile with fewer than min_tail_requests requests above it is the max, not a p99.
        tail, nan = s.min_tail_requests, math.nan
        return np.array([to_model(RATE, n) if rate_ok else nan,
                         to_model("p50_ms", p50) if enough and n * 0.5 >= tail else nan,
                         to_model("p95_ms", p95) if enough and n * 0.05 >= tail else nan,
                         to_model("p99_ms", p99) if enough and n * 0.01 >= tail else nan,
                         k / n if enough else nan])

    def _learn(self, st: _Entity, x: np.ndarray, xl: list[float], scores: dict[str, float],
               assessed: list[bool], k: int, n: int, enough: bool) -> None:
        """Thresholded convention per metric: a flagged value is not learned (the incident stays
        out of the baseline) unless it has lasted adapt_after_windows (then it is the new level)."""
        s = self.settings
        learn = x
        refused = [False] * len(FEATURES)
        for j, metric in enumerate(FEATURES):
            if scores[metric] >= s.threshold:
                st.refused[metric] += 1
                if st.refused[metric] <= s.adapt_after_windows:
                    if learn is x:
                        learn = x.copy()
                    learn[j] = math.nan
                    refused[j] = True
            elif assessed[j]:
                st.refused[metric] = 0
        st.ensemble.learn_one(learn)
        if st.seasonal is not None:
            st.seasonal.learn_one(learn)
        # Requests below the guard still count in the errors' multi-window sums.
        st.errors.push(k, n, learn=enough and not (refused[4] or math.isnan(xl[4])))
        if s.rate_span_windows > 1:
            st.recent_n.append(n)
            if len(st.recent_n) > s.rate_span_windows - 1:
                del st.recent_n[0]
        if not refused[0] or math.isnan(xl[0]):  # a refused drop is not the new volume
            st.volumes.append(float(n))
            if len(st.volumes) > s.volume_history_windows:
                del st.volumes[0]

    # -- explanation and attribution ----------------------------------------------------------
    def baseline(self, entity_type: str, entity: str) -> dict[str, tuple[float, float]]:
        """metric -> (expected, sigma) from the entity's current state; {} for unknown entities.

        Sigmas are on the scale the metric is scored on (see :func:`to_model`): log units for
        latency (0.1 = about 10%), square-root units for the request count.
        """
        st = self._entities.get((entity_type, entity))
        if st is None:
            return {}
        out: dict[str, tuple[float, float]] = {}
        for _name, metric, det in st.ensemble.members:
            if metric is None or metric in out or not isinstance(det, (RobustBaseline, EWMA)):
                continue
            expected = det.explain_one(0.0).expected
            if math.isnan(expected) or det.n_learned < det.grace_period:
                continue
            # explain_one is the public view of the scale: deviation of expected + 1 is 1/sigma.
            out[metric] = (from_model(metric, expected), 1.0 / det.explain_one(expected + 1.0).deviation)
        p0 = st.errors.expected()
        if not math.isnan(p0):
            out[ERRORS] = (p0, max(self.settings.error_ratio_unit, 1e-12))
        return out

    def attribution(self, verdict: Verdict, edge_rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """For a service verdict, the edges touching it ranked by how far they moved.

        Uses this detector's own baselines of each edge (call it after the window's edge rows
        were observed; flagged windows are not learned, so the baseline is the pre-incident one).
        """
        rows = list(edge_rows)
        baselines = {edge_entity(r): self.baseline(EDGE, edge_entity(r)) for r in rows}
        return rank_edges(verdict.entity, rows, baselines, self.settings)

    # -- persistence ----------------------------------------------------------------------------
    def entities(self) -> list[tuple[str, str]]:
        return sorted(self._entities)

    def state_bytes(self) -> bytes:
        """All entity state (pickle, versioned); restore with :meth:`from_bytes`."""
        return pickle.dumps((STATE_VERSION, self.settings, self._entities), protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> WindowDetector:
        """State written by :meth:`state_bytes` of a trusted peer (pickle); ValueError if another version."""
        version, settings, entities = pickle.loads(data)  # noqa: S301 - our own state, trusted store
        if version != STATE_VERSION:
            raise ValueError(f"window detector state version {version}, this build reads {STATE_VERSION}")
        det = cls(settings)
        det._entities = entities
        return det
