"""Per-entity autoencoder models: window vectors, bounded training sets, training and scoring."""

from __future__ import annotations

import math
import zlib
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from processor.config.components import AutoencoderConfig
from processor.detect.autoencoder import Autoencoder
from processor.detect.entity_vector import (
    EDGE,
    ERRORS,
    LATENCY,
    RATE,
    SERVICE,
    Evidence,
    edge_entity,
    features,
    from_model,
    merge_edge_rows,
    to_model,
)

FAN_IN, FAN_OUT = "fan_in", "fan_out"
SERVICE_FEATURES = (RATE, "p50_ms", "p95_ms", "p99_ms", ERRORS, FAN_IN, FAN_OUT)
EDGE_FEATURES = (RATE, "p50_ms", "p95_ms", "p99_ms", ERRORS)
DETECTOR = "autoencoder"
MIN_SHARE = 0.1  # a feature with less of the squared error is not named as a factor
# The smallest standard deviation a feature is measured against, in its model units: a
# steady entity's std is tiny and every wobble would otherwise be many sigmas. As for the
# univariate members: ~5% for latency (log), 1 point for the error ratio, half a request
# of sqrt-scale rate noise (Poisson noise is 1 there), a quarter of a peer (one lost caller
# is 4 sigma).
MIN_STD = {RATE: 0.5, "p50_ms": 0.05, "p95_ms": 0.05, "p99_ms": 0.05, ERRORS: 0.01, FAN_IN: 0.25, FAN_OUT: 0.25}
_INITIAL_ROWS = 64  # first allocation of an entity's rows; doubled up to max_windows


def vector_features(entity_type: str) -> tuple[str, ...]:
    """The feature names of an entity type's window vector, in vector order."""
    if entity_type == SERVICE:
        return SERVICE_FEATURES
    if entity_type == EDGE:
        return EDGE_FEATURES
    raise ValueError(f"entity_type must be {SERVICE!r} or {EDGE!r}, got {entity_type!r}")


def fan_counts(edge_rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """service -> (fan_in, fan_out): distinct clients calling it, distinct servers it calls.

    Only edges with requests count; an edge seen under two connection types is one peer.

    >>> fan_counts([{"client": "web", "server": "cart", "requests": 5},
    ...             {"client": "api", "server": "cart", "requests": 2},
    ...             {"client": "cart", "server": "redis", "requests": 0}])
    {'cart': (2, 0), 'web': (0, 1), 'api': (0, 1)}
    """
    callers: dict[str, set[str]] = {}
    callees: dict[str, set[str]] = {}
    for row in edge_rows:
        if int(row.get("requests", 0)) <= 0:
            continue
        client, server = str(row["client"]), str(row["server"])
        callers.setdefault(server, set()).add(client)
        callees.setdefault(client, set()).add(server)
    return {s: (len(callers.get(s, ())), len(callees.get(s, ()))) for s in {**callers, **callees}}


def window_vector(entity_type: str, row: Mapping[str, Any], fan: tuple[int, int] | None,
                  min_requests: int) -> np.ndarray | None:
    """The entity's window on the model scale (:func:`~processor.detect.entity_vector.to_model`).

    Services append their fan counts as plain counts ((0, 0) when ``fan`` is None). None when
    the window cannot be judged as a whole: fewer than ``min_requests`` requests, or a
    latency quantile missing — an autoencoder has no notion of a missing feature.

    >>> window_vector("edge", {"requests": 100, "failed": 5, "server_p50_ms": 10.0,
    ...               "server_p95_ms": 20.0, "server_p99_ms": 40.0}, None, 20).round(3).tolist()
    [20.037, 2.303, 2.996, 3.689, 0.05]
    >>> window_vector("service", {"calls": 5, "errors": 0, "p50_ms": 1.0, "p95_ms": 2.0,
    ...               "p99_ms": 3.0}, (1, 2), 20) is None
    True
    """
    names = vector_features(entity_type)
    n, k, p50, p95, p99 = features(entity_type, row)
    if n <= 0 or n < min_requests or not all(v > 0.0 for v in (p50, p95, p99)):  # NaN fails too
        return None
    out = np.empty(len(names))
    out[0] = to_model(RATE, n)
    out[1:4] = [math.log(p50), math.log(p95), math.log(p99)]
    out[4] = k / n
    if entity_type == SERVICE:
        out[5:7] = fan if fan is not None else (0, 0)
    return out


def window_vectors(health_rows: Iterable[Mapping[str, Any]], edge_rows: Iterable[Mapping[str, Any]],
                   min_requests: int) -> dict[tuple[str, str], np.ndarray]:
    """Every judgeable entity vector of one window: (entity_type, entity) -> vector.

    Fan counts come from this window's edge rows. An edge seen under two connection types
    (two rows, one entity name) is one entity (:func:`~processor.detect.entity_vector.merge_edge_rows`),
    as the univariate detectors see it. Training and scoring both go through here, so a
    model is scored on exactly the vectors it was trained on.
    """
    edges = merge_edge_rows(edge_rows)
    fans = fan_counts(edges)
    out: dict[tuple[str, str], np.ndarray] = {}
    for row in health_rows:
        name = str(row["service"])
        v = window_vector(SERVICE, row, fans.get(name, (0, 0)), min_requests)
        if v is not None:
            out[(SERVICE, name)] = v
    for row in edges:
        v = window_vector(EDGE, row, None, min_requests)
        if v is not None:
            out[(EDGE, edge_entity(row))] = v
    return out


@dataclass(frozen=True)
class ModelSpec:
    """How entity models are built: network shape, training length, history bounds, seed.

    The pipeline's comes from processors.anomaly.autoencoder through :func:`model_spec`."""

    hidden: tuple[int, ...]
    epochs: int
    min_windows: int  # an entity needs this many usable windows to get a model
    max_windows: int  # train on at most the newest this many
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_windows < 2 or self.max_windows < self.min_windows:
            raise ValueError("need 2 <= min_windows <= max_windows")


def model_spec(cfg: AutoencoderConfig, window_ms: int) -> ModelSpec:
    """The ModelSpec of ``processors.anomaly.autoencoder`` for windows of ``window_ms``."""
    min_windows = max(2, cfg.min_history.ms // window_ms)
    return ModelSpec(hidden=tuple(cfg.hidden), epochs=cfg.epochs, min_windows=min_windows,
                     max_windows=max(min_windows, cfg.training_window.ms // window_ms))


class _Rows:
    """One entity's newest rows: a float64 array grown by doubling, then a ring at ``cap`` rows."""

    __slots__ = ("buf", "cap", "n", "pos")

    def __init__(self, width: int, cap: int) -> None:
        self.cap = cap
        self.buf = np.empty((min(_INITIAL_ROWS, cap), width))
        self.n = 0  # rows held
        self.pos = 0  # next slot to write once the ring is full

    def push(self, row: np.ndarray) -> None:
        if self.n < len(self.buf):
            self.buf[self.n] = row
            self.n += 1
            return
        if len(self.buf) < self.cap:
            grown = np.empty((min(2 * len(self.buf), self.cap), self.buf.shape[1]))
            grown[: self.n] = self.buf
            self.buf = grown
            self.buf[self.n] = row
            self.n += 1
            return
        self.buf[self.pos] = row
        self.pos = (self.pos + 1) % self.cap

    def oldest_first(self) -> np.ndarray:
        if self.n < self.cap or self.pos == 0:
            return self.buf[: self.n].copy()
        return np.concatenate((self.buf[self.pos:], self.buf[: self.pos]))


class TrainingSet:
    """Usable window vectors per entity, newest ``max_windows`` kept, fed one window at a time.

    Memory is the vectors themselves (float64, 7 or 5 per window) plus a little per entity:
    300 services x 2,880 windows is about 48 MB.
    """

    def __init__(self, min_requests: int, max_windows: int) -> None:
        if max_windows < 1 or min_requests < 0:
            raise ValueError("need max_windows >= 1 and min_requests >= 0")
        self.min_requests = min_requests
        self.max_windows = max_windows
        self._rows: dict[tuple[str, str], _Rows] = {}
        self._windows = 0

    def add_window(self, health_rows: Iterable[Mapping[str, Any]], edge_rows: Iterable[Mapping[str, Any]],
                   exclude: Container[tuple[str, str]] = ()) -> None:
        """All final rows of one window; call once per window, oldest window first.

        ``exclude``: entities flagged anomalous in this window. Their vectors stay out, so a
        model is not taught that an incident is normal (fan counts still see every edge).
        """
        for key, v in window_vectors(health_rows, edge_rows, self.min_requests).items():
            if key in exclude:
                continue
            rows = self._rows.get(key)
            if rows is None:
                rows = self._rows[key] = _Rows(v.size, self.max_windows)
            rows.push(v)
        self._windows += 1

    def matrices(self) -> dict[tuple[str, str], np.ndarray]:
        """(entity_type, entity) -> its usable vectors, oldest first (copies)."""
        return {key: rows.oldest_first() for key, rows in sorted(self._rows.items())}

    def __len__(self) -> int:
        return self._windows


def entity_seed(seed: int, entity_type: str, entity: str) -> int:
    """A model's seed: stable across processes and runs (unlike ``hash``), distinct per entity."""
    return zlib.crc32(f"{entity_type}:{entity}".encode(), seed & 0xFFFFFFFF)


def train_models(matrices: Mapping[tuple[str, str], np.ndarray],
                 spec: ModelSpec) -> dict[tuple[str, str], bytes]:
    """Train one :class:`Autoencoder` per entity with enough windows; its ``to_bytes``.

    Entities with fewer than ``spec.min_windows`` finite rows are skipped; only the newest
    ``spec.max_windows`` rows are used. Same input, same bytes (seeds are per entity).
    Top-level and picklable both ways, so it runs in a process pool as is.
    """
    out: dict[tuple[str, str], bytes] = {}
    for key in sorted(matrices):
        data = np.asarray(matrices[key], dtype=np.float64)
        if data.ndim != 2:
            raise ValueError(f"{key}: expected a 2-D matrix, got shape {data.shape}")
        data = data[np.isfinite(data).all(axis=1)][-spec.max_windows:]
        if len(data) < spec.min_windows:
            continue
        model = Autoencoder(hidden=spec.hidden, epochs=spec.epochs, batch_size=spec.batch_size,
                            min_std=tuple(MIN_STD[f] for f in vector_features(key[0])),
                            seed=entity_seed(spec.seed, *key))
        out[key] = model.fit(data).to_bytes()
    return out


def _benign(name: str, deviation: float, traffic_direction: str) -> bool:
    """Did a feature move the harmless way (faster, fewer errors, more or less traffic as set)?"""
    if name in LATENCY or name == ERRORS:
        return deviation < 0.0
    if name == RATE:
        return (deviation > 0.0 and traffic_direction == "down") or (
            deviation < 0.0 and traffic_direction == "up")
    return False  # a caller or callee appearing or vanishing is never harmless


def _natural(name: str, v: float) -> float:
    if name in (RATE, *LATENCY):
        return from_model(name, v)
    # The rebuild of a ratio or a count can stray below 0; that is no value to show.
    return max(0.0, min(1.0, v)) if name == ERRORS else max(0.0, v)


def score_vector(model: Autoencoder, x: np.ndarray, names: tuple[str, ...], info: float,
                 traffic_direction: str = "down", max_factors: int = 3) -> tuple[float, list[Evidence]]:
    """Score one window vector and name the features behind it.

    The autoencoder is not directional: when the features holding at least half of the
    squared error all moved the harmless way (see :func:`_benign`) the window scores 0 — an
    operator must not be paged because a service got faster. At ``score >= info`` the
    features with at least ``MIN_SHARE`` of the error (largest first, at most
    ``max_factors``) become Evidence in natural units, deviation in standardised units.
    """
    xv = np.asarray(x, dtype=np.float64)
    if xv.shape != (len(names),):
        raise ValueError(f"expected a vector of {len(names)} features {names}, got shape {xv.shape}")
    if not np.isfinite(xv).all():
        return 0.0, []
    score = model.score_one(xv)
    if score <= 0.0:
        return score, []
    feats = model.explain_features(xv)  # largest share first
    held = 0.0
    for f in feats:
        if not _benign(names[f.column], f.deviation, traffic_direction):
            break
        held += f.share
        if held >= 0.5:
            return 0.0, []
    if score < info:
        return score, []
    evidence = [Evidence(names[f.column], _natural(names[f.column], f.observed),
                         _natural(names[f.column], f.expected), f.deviation, DETECTOR, score)
                for f in feats[:max_factors] if f.share >= MIN_SHARE]
    return score, evidence
