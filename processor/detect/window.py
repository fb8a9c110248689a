"""WindowDetector: per-entity anomaly detection on final health/edge windows -> Verdicts, attribution.

The pipeline's stage 2 calls it once per final window. Per entity and metric of the window
vector (rate, p50, p95, p99, error ratio) it runs direction-aware detectors (latency up,
traffic down): robust median/MAD and EWMA, plus seasonal members that score once a day of
history is in. Latency is scored as log(ms), the request count on a square-root scale
(:func:`~processor.detect.entity_vector.to_model`). Counts get exact tests
(:mod:`processor.detect.counts`) over sums of the last 1-3 windows: the error
ratio a beta-binomial tail (a median/MAD of mostly-zero ratios calls one stray error in 40
requests a 5-sigma event), traffic a lasting drop. A score in [threshold, critical) alarms
only if its metric was suspicious in the previous window too, and a flagged value is not
learned (:func:`~processor.detect.threshold.refusals`) until it has lasted
``tuning.adapt_after_windows``.

Every entity of a window is scored and learned in one batch: the state is columnar
(:class:`~processor.detect.entity_state.EntityState`, one row per entity), each kind of
detector is a bank over all rows (:mod:`processor.detect.banks`) and one pass scores them all
(:mod:`processor.detect.scoring`). Only the rare entity with evidence is explained in Python.

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

>>> det = WindowDetector(AnomalyConfig(grace_windows=5), window_ms=60_000)
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from processor.config.components import AnomalyConfig, WindowsConfig
from processor.detect.attribution import rank_edges
from processor.detect.autoencoder import Autoencoder
from processor.detect.entity_models import score_vector, vector_features, window_vectors
from processor.detect.entity_state import NO_WINDOW, SCORED, EntityState
from processor.detect.entity_vector import (
    EDGE,
    ERRORS,
    FEATURES,
    RATE,
    SERVICE,
    Evidence,
    edge_entity,
    features,
    from_model,
    group_by_window,
    merge_edge_rows,
)
from processor.detect.scoring import Feats, Scores, model_vectors, score_window
from processor.detect.threshold import refusals

STATE_VERSION = 3  # 3: the settings are processors.anomaly and the window size
_ABSENT: Feats = (0, 0, math.nan, math.nan, math.nan)
_METRIC = {m: j for j, m in enumerate(FEATURES)}


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


class WindowDetector:
    """Per-entity, per-metric streaming detectors over final windows; see the module docstring."""

    def __init__(self, cfg: AnomalyConfig | None = None, window_ms: int | None = None) -> None:
        """`cfg` is processors.anomaly; `window_ms` the size of the windows it judges."""
        self.cfg = cfg or AnomalyConfig()
        self.window_ms = window_ms or WindowsConfig().size.ms
        self.period = self.cfg.period_windows(self.window_ms)
        self._state = EntityState(self.cfg, self.period)
        # Autoencoders are trained elsewhere (on stored history, on a schedule) and loaded.
        self._models: dict[tuple[str, str], Autoencoder] = {}

    def load_models(self, models: Mapping[tuple[str, str], Autoencoder]) -> None:
        """Use these fitted autoencoders ((entity_type, entity) -> model) from the next window on.

        Ignored unless "autoencoder" is among the settings' detectors; a model whose width
        does not match the entity's vector is skipped when scoring.
        """
        if "autoencoder" in self.cfg.detectors:
            self._models.update(models)

    def models(self) -> dict[tuple[str, str], Autoencoder]:
        return dict(self._models)

    # -- the per-window step ----------------------------------------------------------------
    def observe(self, entity_type: str, entity: str, window_start_ms: int,
                row: Mapping[str, Any], vector: np.ndarray | None = None) -> Verdict | None:
        """Score one final window of an entity against its past, then learn it; a Verdict if anomalous.

        ``row`` is a final_health row (services) or final_edges row (edges); only the counts
        and quantiles are read. ``vector`` is the entity's window vector for its autoencoder
        (:func:`~processor.detect.entity_models.window_vectors`; :meth:`observe_window` passes
        it). Windows at or before the entity's last are ignored.
        """
        return self._step(window_start_ms, [((entity_type, entity), features(entity_type, row), vector)])[0]

    def observe_missing(self, entity_type: str, entity: str, window_start_ms: int) -> Verdict | None:
        """A tracked entity had no row in this window: zero traffic (the extreme drop)."""
        if (entity_type, entity) not in self._state.index:
            return None
        return self._step(window_start_ms, [((entity_type, entity), _ABSENT, None)])[0]

    def observe_window(self, window_start_ms: int, health_rows: Iterable[Mapping[str, Any]],
                       edge_rows: Iterable[Mapping[str, Any]]) -> list[Verdict]:
        """All final rows of one window (of the entities this worker owns), plus the absentees.

        Entities tracked by this detector with no row here are observed as missing, until
        they have had no row for ``forget_after_windows``: then they are forgotten. Pass each window once, in time order. Every entity of
        the window is scored and learned in one batch (the banks' numpy passes).
        """
        health_rows, edge_rows = list(health_rows), merge_edge_rows(edge_rows)
        vectors = window_vectors(health_rows, edge_rows, self.cfg.min_requests) if self._models else {}
        batch: list[tuple[tuple[str, str], Feats, np.ndarray | None]] = []
        seen: set[tuple[str, str]] = set()
        for kind, rows in ((SERVICE, health_rows), (EDGE, edge_rows)):
            for row in rows:
                key = (kind, str(row["service"]) if kind == SERVICE else edge_entity(row))
                if key not in seen:  # a repeated row is a repeated window: ignored
                    seen.add(key)
                    batch.append((key, features(kind, row), vectors.get(key)))
        st, horizon = self._state, self.cfg.tuning.forget_after_windows * self.window_ms
        for key in [k for k in st.index if k not in seen]:
            if window_start_ms - st.last_seen_ms[st.index[key]] > horizon:
                st.forget(key)  # gone for good (a renamed service, a retired edge): stop tracking it
            else:
                batch.append((key, _ABSENT, None))
        return [v for v in self._step(window_start_ms, batch) if v is not None]

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

    def _clock(self, key: tuple[str, str], ws: int) -> int | None:
        """The entity's row, its clock moved to window ``ws``; None for a window at or before its last."""
        st, s = self._state, self.cfg
        row = st.index.get(key)
        if row is None:
            row = st.add(key)
        else:
            last = st.last_ms[row]
            if last != NO_WINDOW and ws - last > s.tuning.forget_after_windows * self.window_ms:
                st.reset(row)
            elif last != NO_WINDOW:
                if ws <= last:
                    return None
                gaps = min((ws - last) // self.window_ms - 1, self.period * 8)
                if gaps > 0:
                    st.gap(row, gaps)
        st.last_ms[row] = ws
        return row

    def _step(self, ws: int, batch: Sequence[tuple[tuple[str, str], Feats, np.ndarray | None]]
              ) -> list[Verdict | None]:
        """Score each entity's window against its past, then learn it (one numpy pass per member)."""
        s, st = self.cfg, self._state
        out: list[Verdict | None] = [None] * len(batch)
        rows_l: list[int] = []
        at: list[int] = []  # batch position of each stepped row
        for i, (key, _, _) in enumerate(batch):
            row = self._clock(key, ws)
            if row is not None:
                rows_l.append(row)
                at.append(i)
        if not rows_l:
            return out
        rows = np.array(rows_l, dtype=np.int64)
        st.slots[rows] += 1
        for row, i in zip(rows_l, at, strict=True):
            if batch[i][1] is not _ABSENT:
                st.last_seen_ms[row] = ws
        feats = [batch[i][1] for i in at]
        n = np.array([f[0] for f in feats], dtype=np.int64)
        k = np.array([f[1] for f in feats], dtype=np.int64)
        x = model_vectors(self.cfg, self._state, rows, feats, n)
        sc = score_window(self.cfg, self._state, self.period, rows, x, n, k)
        scores = np.zeros((len(rows), len(FEATURES)))
        assessed = np.c_[np.isfinite(x[:, :4]), n > 0]  # a window without evidence neither confirms nor clears
        hot = sc.errors >= s.info
        hot |= sc.drop >= s.info
        for m in (sc.robust, sc.ewma, sc.seasonal):
            if m is not None:
                hot |= (m >= s.info).any(axis=1)
        models = self._models
        for b, i in enumerate(at):
            key, _, vector = batch[i]
            if hot[b] or (vector is not None and key in models):
                out[i] = self._judge(b, int(rows[b]), key, ws, x[b], int(n[b]), int(k[b]), vector, sc,
                                     scores[b])
        st.prev[rows] = np.where(assessed, scores, st.prev[rows])
        self._learn(rows, x, scores, assessed, n, k, sc.references)
        return out

    def _judge(self, b: int, row: int, key: tuple[str, str], ws: int, x: np.ndarray, n: int, k: int,
               vector: np.ndarray | None, sc: Scores, scores: np.ndarray) -> Verdict | None:
        """One entity window with some evidence: its factors, its verdict; fills ``scores`` (per
        metric, the strongest evidence) and the autoencoder's confirmation state."""
        s, st = self.cfg, self._state
        xl = x.tolist()
        evidence: list[Evidence] = []
        members = ((sc.robust, st.robust, "robust"), (sc.ewma, st.ewma, "ewma"))
        for j, metric in enumerate(SCORED):  # the members' order: per metric, robust then EWMA
            for m_scores, bank, kind in members:
                if m_scores is not None and bank is not None and m_scores[b, j] >= s.info:
                    ex = bank.explain(row, j, xl[j])
                    evidence.append(Evidence(metric, from_model(metric, xl[j]), from_model(metric, ex.expected),
                                             ex.deviation, kind, float(m_scores[b, j])))
        if sc.seasonal is not None and st.seasonal is not None:
            for j, metric in enumerate(SCORED):
                if sc.seasonal[b, j] >= s.info:
                    ex = st.seasonal.explain(row, j, xl[j])
                    evidence.append(Evidence(metric, from_model(metric, xl[j]), from_model(metric, ex.expected),
                                             ex.deviation, "seasonal", float(sc.seasonal[b, j])))
        if sc.errors[b] >= s.info:
            p0 = float(st.errors.expected(np.array([row]))[0])
            evidence.append(Evidence(ERRORS, k / n, p0, st.errors.deviation(row, k, n), "binomial",
                                     float(sc.errors[b])))
        if sc.drop[b] >= s.info:
            evidence.append(Evidence(RATE, float(sc.drop_observed[b]), float(sc.drop_expected[b]),
                                     -float(sc.drop_z[b]), "sustained", float(sc.drop[b])))
        model = self._models.get(key) if vector is not None else None
        vector_score = math.nan
        if model is not None and vector is not None and vector.size == model.n_features:
            vector_score, found = score_vector(model, vector, vector_features(key[0]), s.info,
                                               s.tuning.traffic_direction)
            evidence.extend(found)
        evidence.sort(key=lambda e: -e.score)
        for e in evidence:
            col = _METRIC.get(e.metric)
            if col is not None:
                scores[col] = max(scores[col], e.score)
        # One noisy window is common in low-volume quantiles and counts: a moderate score
        # needs its metric's previous window to have been suspicious too; a critical one
        # alarms at once. Errors and lasting drops need no confirmation: their multi-window
        # sums already are one. The autoencoder's factors share one score: its confirmation
        # is by vector, not metric.
        prev = st.prev[row].tolist()

        def confirmed(e: Evidence) -> bool:
            if e.detector == "autoencoder":
                return float(st.prev_vector[row]) >= s.tuning.confirm_level
            col = _METRIC.get(e.metric)
            return col is not None and prev[col] >= s.tuning.confirm_level

        firing = [e for e in evidence if e.score >= s.severity_critical or (e.score >= s.threshold and (
            e.metric == ERRORS or e.detector == "sustained" or confirmed(e)))]
        if not math.isnan(vector_score):
            st.prev_vector[row] = vector_score
        if not firing:
            return None
        top = firing[0]
        return Verdict(key[0], key[1], ws, top.score, s.severity(top.score), top.metric,
                       top.observed, top.expected, top.deviation,
                       tuple(dict.fromkeys(e.detector for e in firing)), [e._asdict() for e in evidence])

    def _learn(self, rows: np.ndarray, x: np.ndarray, scores: np.ndarray, assessed: np.ndarray,
               n: np.ndarray, k: np.ndarray, references: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> None:
        """Thresholded convention per metric: a flagged value is not learned (the incident stays
        out of the baseline) unless it has lasted adapt_after_windows (then it is the new level)."""
        s, st = self.cfg, self._state
        st.refused[rows], refuse = refusals(scores >= s.threshold, assessed, st.refused[rows],
                                            s.tuning.adapt_after_windows)
        learn = np.where(refuse, np.nan, x)
        x4 = learn[:, :4]
        if st.robust is not None:
            st.robust.learn(rows, x4)
        if st.ewma is not None:
            st.ewma.learn(rows, x4)
        if st.seasonal is not None and references is not None:
            st.seasonal.learn(rows, x4, references)
        # Requests below the guard still count in the errors' multi-window sums.
        st.errors.push(rows, k, n, (n >= s.min_requests) & np.isfinite(learn[:, 4]))
        st.push_recent(rows, n)
        keep = ~refuse[:, 0] | np.isnan(x[:, 0])  # a refused drop is not the new volume
        st.push_volume(rows[keep], n[keep].astype(np.float64))

    # -- explanation and attribution ----------------------------------------------------------
    def baseline(self, entity_type: str, entity: str) -> dict[str, tuple[float, float]]:
        """metric -> (expected, sigma) from the entity's current state; {} for unknown entities.

        Sigmas are on the scale the metric is scored on (see :func:`to_model`): log units for
        latency (0.1 = about 10%), square-root units for the request count.
        """
        st = self._state
        row = st.index.get((entity_type, entity))
        if row is None:
            return {}
        out: dict[str, tuple[float, float]] = {}
        for j, metric in enumerate(SCORED):
            for bank in (st.robust, st.ewma):
                if bank is None or metric in out or bank.n_learned[row, j] < bank.grace_period:
                    continue
                expected = bank.explain(row, j, 0.0).expected
                if math.isnan(expected):
                    continue
                # explain is the public view of the scale: deviation of expected + 1 is 1/sigma.
                out[metric] = (from_model(metric, expected), 1.0 / bank.explain(row, j, expected + 1.0).deviation)
        p0 = float(st.errors.expected(np.array([row]))[0])
        if not math.isnan(p0):
            out[ERRORS] = (p0, max(self.cfg.tuning.error_ratio_unit, 1e-12))
        return out

    def attribution(self, verdict: Verdict, edge_rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """For a service verdict, the edges touching it ranked by how far they moved.

        Uses this detector's own baselines of each edge (call it after the window's edge rows
        were observed; flagged windows are not learned, so the baseline is the pre-incident one).
        """
        rows = list(edge_rows)
        baselines = {edge_entity(r): self.baseline(EDGE, edge_entity(r)) for r in rows}
        return rank_edges(verdict.entity, rows, baselines, self.cfg)

    # -- persistence ----------------------------------------------------------------------------
    def entities(self) -> list[tuple[str, str]]:
        return sorted(self._state.index)

    def state_bytes(self) -> bytes:
        """All entity state (pickle, versioned); restore with :meth:`from_bytes`."""
        return pickle.dumps((STATE_VERSION, self.cfg, self.window_ms, self._state),
                            protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> WindowDetector:
        """State written by :meth:`state_bytes` of a trusted peer (pickle); ValueError if another version."""
        version, *rest = pickle.loads(data)  # noqa: S301 - our own state, trusted store
        if version != STATE_VERSION:
            raise ValueError(f"window detector state version {version}, this build reads {STATE_VERSION}")
        cfg, window_ms, state = rest
        det = cls(cfg, window_ms)
        det._state = state
        return det
