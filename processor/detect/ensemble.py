"""Ensemble: several detectors over one entity's window vector -> score, severity, factors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from processor.detect.autoencoder import Autoencoder, StreamingAutoencoder
from processor.detect.base import BaseDetector, Detector, VectorDetector
from processor.detect.ewma import EWMA
from processor.detect.robust import RobustBaseline

COMBINES = ("max", "noisy_or")
SEVERITIES = ("info", "warning", "critical")
MAX_VECTOR_FACTORS = 3  # features named per vector detector: the top error shares


@dataclass(frozen=True)
class Factor:
    """One reason a window is anomalous."""

    detector: str  # member name, e.g. "latency_robust"
    metric: str  # feature name, e.g. "p95_ms"
    observed: float
    expected: float
    deviation: float  # signed, in sigmas of that detector's scale
    score: float


@dataclass(frozen=True)
class Assessment:
    """The ensemble's verdict on one window."""

    score: float
    severity: str | None  # None below the info threshold
    factors: tuple[Factor, ...]  # members scoring >= info, strongest first


_QUIET = Assessment(0.0, None, ())


class Ensemble(VectorDetector):
    """Members over named features of one vector; one calibrated score in [0, 1].

    ``features`` names the vector's columns. ``members`` are ``(name, feature, detector)``:
    a scalar detector watches one feature, a vector detector (``feature=None``) the whole
    vector. With ``volume_feature`` set, that column is passed to every member as its
    ``volume`` (so the members' ``min_volume`` guards apply); an explicit ``volume`` argument
    wins. Members handle missing features themselves: a NaN feature is a NaN for the
    members that watch it and leaves the others alone.

    ``combine="max"`` (default) takes the strongest member score. Every member's score is
    calibrated the same way (a squashed sigma-equivalent deviation), and members look at
    strongly correlated views of the same window — a latency step moves p50, p95 and the
    autoencoder together — so noisy-OR (``1 - prod(1 - s_i)``, also offered) counts one cause
    several times and raises the false-alarm rate with every member added, while max keeps
    the ensemble's rate at most the sum of its members' and its score readable as "the
    strongest single piece of evidence".

    Severity: ``critical`` at ``score >= critical``, else ``warning`` at ``>= warning``, else
    ``info`` at ``>= info``, else None. Factors: every member scoring ``>= info``, with what
    it observed and expected; a vector member adds its top error-share features.

    >>> import numpy as np
    >>> ens = Ensemble(features=("p95_ms", "rate"), members=(
    ...     ("latency", "p95_ms", RobustBaseline(window=20, direction="up", grace_period=5)),
    ...     ("traffic", "rate", RobustBaseline(window=20, direction="down", grace_period=5))))
    >>> rng = np.random.default_rng(0)
    >>> _ = ens.process_many(np.c_[100 + rng.normal(0, 3, 30), 50 + rng.normal(0, 2, 30)])
    >>> a = ens.assess(np.array([160.0, 50.0]))
    >>> a.severity, [(f.detector, f.metric, f.observed) for f in a.factors]
    ('critical', [('latency', 'p95_ms', 160.0)])
    """

    def __init__(
        self,
        features: tuple[str, ...],
        members: tuple[tuple[str, str | None, BaseDetector[Any]], ...],
        combine: str = "max",
        info: float = 0.3,
        warning: float = 0.5,
        critical: float = 0.8,
        volume_feature: str | None = None,
    ) -> None:
        super().__init__()
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
        if not 0.0 <= info <= warning <= critical <= 1.0:
            raise ValueError(f"need 0 <= info <= warning <= critical <= 1, got {info}, {warning}, {critical}")
        self.features = tuple(features)
        self.members = tuple(members)
        self.combine = combine
        self.info = info
        self.warning = warning
        self.critical = critical
        self.volume_feature = volume_feature
        index = {f: i for i, f in enumerate(self.features)}
        names = [m[0] for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"member names must be unique, got {names}")
        self._columns: list[int | None] = []
        for name, feature, det in self.members:
            if det.is_vector != (feature is None):
                raise ValueError(f"member {name!r}: a vector detector takes feature=None, "
                                 f"a scalar one a feature name")
            if feature is not None and feature not in index:
                raise ValueError(f"member {name!r}: unknown feature {feature!r}, not in {self.features}")
            self._columns.append(None if feature is None else index[feature])
        if volume_feature is not None and volume_feature not in index:
            raise ValueError(f"volume_feature {volume_feature!r} not in {self.features}")
        self._volume_col = None if volume_feature is None else index[volume_feature]

    @property
    def clocked(self) -> bool:
        return any(det.clocked for _, _, det in self.members)

    def _finite(self, x: np.ndarray) -> bool:
        # Per-member: a NaN feature only silences the members that watch it.
        return x.shape == (len(self.features),)

    def _volume(self, x: np.ndarray, volume: float | None) -> float | None:
        if volume is not None or self._volume_col is None:
            return volume
        return float(x[self._volume_col])

    def _input(self, x: np.ndarray, col: int | None) -> Any:
        return x if col is None else x[col]

    def _checked(self, x: Any) -> np.ndarray:
        xv = self._coerce(x)
        if not self._finite(xv):
            raise ValueError(f"expected a vector of {len(self.features)} features, got shape {xv.shape}")
        return xv

    def score_one(self, x: Any, volume: float | None = None) -> float:
        xv = self._checked(x)
        return self._combine(self._member_scores(xv, self._volume(xv, volume)))

    def _member_scores(self, x: np.ndarray, volume: float | None) -> list[float]:
        return [det.score_one(self._input(x, col), volume)
                for (_, _, det), col in zip(self.members, self._columns, strict=True)]

    def _combine(self, scores: list[float]) -> float:
        if not scores:
            return 0.0
        if self.combine == "max":
            return max(scores)
        return 1.0 - math.prod(1.0 - s for s in scores)

    def learn_one(self, x: Any, volume: float | None = None) -> None:
        xv = self._checked(x)
        vol = self._volume(xv, volume)
        for (_, _, det), col in zip(self.members, self._columns, strict=True):
            det.learn_one(self._input(xv, col), vol)
        self.n_learned += 1

    def process_one(self, x: Any, volume: float | None = None) -> float:
        s = self.score_one(x, volume)
        self.learn_one(x, volume)
        return s

    def skip_one(self) -> None:
        for _, _, det in self.members:
            det.skip_one()

    def _score(self, x: np.ndarray) -> float:
        return self.score_one(x)

    def _learn(self, x: np.ndarray) -> None:
        self.learn_one(x)

    def severity(self, score: float) -> str | None:
        if score >= self.critical:
            return "critical"
        if score >= self.warning:
            return "warning"
        if score >= self.info:
            return "info"
        return None

    def assess(self, x: Any, volume: float | None = None) -> Assessment:
        """Score, severity and contributing factors of x against the current state (no learning)."""
        xv = self._checked(x)
        vol = self._volume(xv, volume)
        scores = self._member_scores(xv, vol)
        combined = self._combine(scores)
        if not scores or max(scores) < self.info:  # the usual window: no factor to explain
            if combined == 0.0:  # and usually every member at 0: one shared (frozen) answer
                return _QUIET
            return Assessment(combined, self.severity(combined), ())
        factors: list[Factor] = []
        for (name, feature, det), col, s in zip(self.members, self._columns, scores, strict=True):
            if s < self.info:
                continue
            if isinstance(det, Detector) and col is not None:
                exp = det.explain_one(float(xv[col]))
                factors.append(Factor(name, str(feature), float(xv[col]), exp.expected, exp.deviation, s))
            elif hasattr(det, "explain_features"):
                for fd in det.explain_features(xv)[:MAX_VECTOR_FACTORS]:
                    factors.append(Factor(name, self.features[fd.column], fd.observed, fd.expected,
                                          fd.deviation, s * fd.share))
            else:
                factors.append(Factor(name, "", math.nan, math.nan, math.nan, s))
        factors.sort(key=lambda f: -f.score)
        return Assessment(combined, self.severity(combined), tuple(factors))

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {
            "features": ("p95_ms", "errors", "rate", "requests"),
            "members": (
                ("p95", "p95_ms", RobustBaseline(window=20, direction="up", grace_period=5)),
                ("err", "errors", EWMA(alpha=0.2, direction="up", grace_period=5, min_volume=2.0)),
                ("ae", None, StreamingAutoencoder(Autoencoder(hidden=(3, 2), epochs=5, seed=1),
                                                  buffer_size=60, retrain_every=40, grace_period=30)),
            ),
            "volume_feature": "requests",
        }

