"""Detector contract: learn_one / score_one over a stream of one metric's values.

The contract, fixed for every detector (tests/unit/test_detect_contract.py checks it):

- ``score_one(x)`` returns a score in [0, 1], higher = more anomalous, and never learns.
- ``learn_one(x)`` updates the state and returns nothing.
- ``process_one(x)`` is ``s = score_one(x); learn_one(x); return s`` — the streaming order
  (score a value against the past, then add it to the past). ``process_many(xs)`` is that
  loop over ``xs`` (detectors may vectorise it; the result must equal the loop).
  ``score_many(xs)`` scores every value against the *current* state and learns nothing.
- Unusable input — a NaN/inf value, or a ``volume`` below the detector's ``min_volume`` —
  scores 0 and is not learned. Detectors
  whose state is a clock of slots (``clocked``: the seasonal one) record it as a gap so
  later values keep their phase.
- The first ``grace_period`` learned values score 0 (warm-up).
- Constructor arguments are stored verbatim under their own names; ``clone()`` rebuilds an
  unfitted detector from them and ``repr`` prints them. Randomness only from ``seed``.
- State is bounded (ring buffers, fixed-size summaries) and picklable.

Scores are calibrated the same way across detectors (see :mod:`processor.detect.stats`), so a
threshold of 0.5 means "as rare as a 4.4-sigma Gaussian deviation" for any of them.
"""

from __future__ import annotations

import abc
import inspect
import math
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

import numpy as np

X = TypeVar("X")
P = TypeVar("P", bound="Parametrised")


class Explanation(NamedTuple):
    """What a detector expected for a value and how far the value is from it."""

    expected: float
    deviation: float  # signed, in standard-deviation-like units of the detector's scale


NO_EXPLANATION = Explanation(math.nan, math.nan)


class Parametrised:
    """Constructor arguments stored verbatim under their own names: clone, repr, config round-trips."""

    def _get_params(self) -> dict[str, Any]:
        """Constructor arguments, read back from the attributes of the same names."""
        return {name: getattr(self, name) for name in _init_params(type(self))}

    def clone(self: P, **overrides: Any) -> P:
        """A fresh, unfitted copy with the same parameters (nested detectors/models cloned too)."""
        params = {k: _fresh(v) for k, v in self._get_params().items()}
        params.update(overrides)
        return type(self)(**params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._get_params().items())
        return f"{type(self).__name__}({args})"


class BaseDetector(Parametrised, abc.ABC, Generic[X]):
    """The contract's machinery over values of type X; subclass :class:`Detector`."""

    grace_period: int = 0
    min_volume: float = 0.0
    # Checks of tests/unit/test_detect_contract.py a class opts out of: name -> reason.
    _contract_skips: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self.n_learned = 0

    # -- hooks for subclasses -------------------------------------------------------------
    @abc.abstractmethod
    def _score(self, x: X) -> float:
        """Score of a usable x after warm-up."""

    @abc.abstractmethod
    def _learn(self, x: X) -> None:
        """Absorb a usable x."""

    def _gap(self) -> None:
        """A slot passed with nothing usable; only clocked detectors record it."""

    @abc.abstractmethod
    def _coerce(self, x: Any) -> X:
        """Input as the detector's value type (never a copy that the caller could see mutate)."""

    @abc.abstractmethod
    def _coerce_many(self, xs: Any) -> np.ndarray:
        """Many inputs as one array (rows are inputs)."""

    @abc.abstractmethod
    def _finite(self, x: X) -> bool:
        """Whether x carries a usable value."""

    # -- properties -----------------------------------------------------------------------
    @property
    def clocked(self) -> bool:
        """Every slot, usable or not, advances the state (phase-aligned detectors)."""
        return False

    # -- the contract ---------------------------------------------------------------------
    def usable(self, x: X, volume: float | None = None) -> bool:
        """False for non-finite input or a volume below ``min_volume`` (no alarms on 3 requests)."""
        if self.min_volume > 0.0 and volume is not None and not volume >= self.min_volume:
            return False
        return self._finite(x)

    def score_one(self, x: X, volume: float | None = None) -> float:
        """Anomaly score of x in [0, 1] against the current state; learns nothing."""
        x = self._coerce(x)
        if self.n_learned < self.grace_period or not self.usable(x, volume):
            return 0.0
        return self._score(x)

    def learn_one(self, x: X, volume: float | None = None) -> None:
        """Absorb x (unusable input is not learned; clocked detectors record a gap)."""
        x = self._coerce(x)
        if self.usable(x, volume):
            self._learn(x)
            self.n_learned += 1
        else:
            self._gap()

    def skip_one(self) -> None:
        """A slot passes without a value to learn (e.g. a refused anomaly)."""
        self._gap()

    def process_one(self, x: X, volume: float | None = None) -> float:
        """``score_one`` then ``learn_one``: the streaming step; returns the score."""
        x = self._coerce(x)
        if not self.usable(x, volume):
            self._gap()
            return 0.0
        s = 0.0 if self.n_learned < self.grace_period else self._score(x)
        self._learn(x)
        self.n_learned += 1
        return s

    def process_many(self, xs: Any, volumes: Any = None) -> np.ndarray:
        """``process_one`` over xs in order; returns the scores."""
        arr = self._coerce_many(xs)
        vols = volumes_array(volumes, len(arr))
        out = np.zeros(len(arr))
        for i in range(len(arr)):
            out[i] = self.process_one(arr[i], None if vols is None else vols[i])
        return out

    def score_many(self, xs: Any, volumes: Any = None) -> np.ndarray:
        """``score_one`` of every x against the current state; learns nothing."""
        arr = self._coerce_many(xs)
        vols = volumes_array(volumes, len(arr))
        return np.array(
            [self.score_one(arr[i], None if vols is None else vols[i]) for i in range(len(arr))],
            dtype=np.float64,
        )

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        """Small, fast parameters the contract suite builds this detector with."""
        return {}


class Detector(BaseDetector[float]):
    """A detector over one metric's stream of floats."""

    def _coerce(self, x: Any) -> float:
        return float(x)

    def _coerce_many(self, xs: Any) -> np.ndarray:
        arr = np.asarray(xs, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"{type(self).__name__} takes a 1-D array of values, got shape {arr.shape}")
        return arr

    def _finite(self, x: float) -> bool:
        return math.isfinite(x)

    def explain_one(self, x: float) -> Explanation:
        """Expected value and signed deviation of x (NaN when the detector has no baseline yet)."""
        return NO_EXPLANATION


def volumes_array(volumes: Any, n: int) -> np.ndarray | None:
    """Per-value volumes as an array of shape (n,), or None when not given."""
    if volumes is None:
        return None
    vols = np.asarray(volumes, dtype=np.float64)
    if vols.shape != (n,):
        raise ValueError(f"volumes must have shape ({n},), got {vols.shape}")
    return vols


_PARAM_CACHE: dict[type, tuple[str, ...]] = {}


def _init_params(cls: type) -> tuple[str, ...]:
    names = _PARAM_CACHE.get(cls)
    if names is None:
        sig = inspect.signature(cls.__init__)  # type: ignore[misc]
        names = tuple(
            p.name for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )
        _PARAM_CACHE[cls] = names
    return names


def _fresh(value: Any) -> Any:
    """An unfitted copy of a parameter value: detectors and models via clone(), containers deep."""
    if hasattr(value, "clone") and callable(value.clone):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(_fresh(v) for v in value)
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    return value
