"""Reference Seasonal: a value against the same phase one period (day) and seven periods (week) earlier.

The per-value implementation, written for clarity and speed per call, that the bank
(processor.detect.banks) must match bit for bit; see tests/unit/test_detect_banks.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from processor.detect import stats
from processor.detect.base import NO_EXPLANATION, Detector, Explanation
from processor.evaluate.ring import Ring


class Seasonal(Detector):
    """The semantics of :class:`processor.detect.seasonal.Seasonal`, one value at a time."""

    def __init__(
        self,
        period: int,
        lags: tuple[int, ...] = (1, 7),
        half_width: int = 1,
        direction: str = "both",
        grace_period: int = 0,
        min_volume: float = 0.0,
        z0: float = stats.Z0,
        tau: float = stats.TAU,
        alpha: float = 0.05,
        resid_cap: float = 4.0,
        min_scale: float = 0.0,
        min_relative_scale: float = 0.01,
    ) -> None:
        super().__init__()
        stats.check_direction(direction)
        if period < 1 or not lags or min(lags) < 1:
            raise ValueError(f"period and lags must be >= 1, got period={period}, lags={lags}")
        if not 0 <= half_width < period:
            raise ValueError(f"half_width must be in [0, period), got {half_width}")
        self.period = period
        self.lags = tuple(lags)
        self.half_width = half_width
        self.direction = direction
        self.grace_period = grace_period
        self.min_volume = min_volume
        self.z0 = z0
        self.tau = tau
        self.alpha = alpha
        self.resid_cap = resid_cap
        self.min_scale = min_scale
        self.min_relative_scale = min_relative_scale
        # How many slots ago each reference sits, relative to the slot about to be filled.
        self._agos_list = sorted(
            {lag * period - j for lag in self.lags for j in range(-half_width, half_width + 1)}
        )
        self._ring = Ring(self._agos_list[-1], dtype=np.float32)
        # Indexing a memoryview of the ring gives Python floats at half the cost of
        # ndarray.item(); derived, so not pickled (the view cannot be) and rebuilt on load.
        self._view = self._ring.buf.data
        self._slots = 0  # slots seen (values and gaps): the clock
        self._resid = float("nan")  # EW mean of |x - expected|
        self._n_resid = 0
        self._cache_slot = -1  # the slot _cache and _refs belong to
        self._cache: tuple[float, float | None] = (float("nan"), float("nan"))  # (expected, spread or None)
        self._refs: list[float] = []  # references of that slot, ascending

    @property
    def clocked(self) -> bool:
        return True

    _contract_skips = {
        "nan_leaves_state": "a NaN is a missing window: it takes its slot so later values keep "
        "their day/week phase",
    }

    def seed_history(self, values: Iterable[float]) -> None:
        """Feed past values, oldest first (NaN = missing window), as if each was learned."""
        for v in values:
            self.learn_one(v)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_view"]
        state["_refs"] = []  # the per-slot cache is rebuilt on demand
        state["_cache_slot"] = -1
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._refs = []
        self._cache_slot = -1
        self._view = self._ring.buf.data

    def _expected(self) -> float:
        """Median of the references for the slot about to be filled; NaN when there are none.

        Cached per slot with the sorted references: the spread (their MAD) is only worked out
        when a value comes close enough to the floors to need it (:meth:`_references`).
        """
        if self._cache_slot == self._slots:
            return self._cache[0]
        ring, view = self._ring, self._view
        pos, cap, size = ring.pos, ring.capacity, ring.size
        # A handful of references: plain Python beats numpy's per-call overhead here.
        refs: list[float] = []
        for ago in self._agos_list:
            if ago > size:
                break
            v = view[(pos - ago) % cap]
            if v == v:
                refs.append(v)
        refs.sort()
        n = len(refs)
        expected = (refs[(n - 1) // 2] + refs[n // 2]) * 0.5 if n else float("nan")
        self._cache_slot, self._cache, self._refs = self._slots, (expected, None), refs
        return expected

    def _references(self) -> tuple[float, float]:
        """(expected, spread) for the slot about to be filled; NaN expected when no references.

        The median and robust scale of the references, worked out in two steps.
        """
        expected = self._expected()
        spread = self._cache[1]
        if spread is None:
            spread = stats.mad_scale_small(self._refs, expected) if self._refs else float("nan")
            self._cache = (expected, spread)
        return expected, spread

    def _floor(self, expected: float) -> float:
        """What the scale is never below, whatever the spread: all of :meth:`_scale` but it."""
        resid = stats.MEAN_AD_TO_SIGMA * self._resid if self._n_resid else 0.0
        return max(resid, self.min_scale, self.min_relative_scale * abs(expected), stats.TINY_SCALE)

    def _scale(self, expected: float, spread: float) -> float:
        resid = stats.MEAN_AD_TO_SIGMA * self._resid if self._n_resid else 0.0
        # stats.floor_scale(max(spread, resid), ...) flattened: one call fewer per score and learn.
        return max(spread, resid, self.min_scale, self.min_relative_scale * abs(expected), stats.TINY_SCALE)

    def _score(self, x: float) -> float:
        expected = self._expected()
        if expected != expected:  # NaN: nothing to compare with yet
            return 0.0
        d = x - expected
        # Within z0 floors of the expected value the score is 0 whatever the spread (the scale
        # is at least the floor, and division rounds monotonically): skip working it out.
        if self.z0 >= 0.0 and stats.directed(d / self._floor(expected), self.direction) <= self.z0:
            return 0.0
        z = d / self._scale(expected, self._references()[1])
        return stats.squash(stats.directed(z, self.direction), self.z0, self.tau)

    def explain_one(self, x: float) -> Explanation:
        expected, spread = self._references()
        if expected != expected:
            return NO_EXPLANATION
        return Explanation(expected, (float(x) - expected) / self._scale(expected, spread))

    def _learn(self, x: float) -> None:
        expected = self._expected()
        if expected == expected:
            r = abs(x - expected)
            # The cap only bites when r exceeds resid_cap scales; below resid_cap floors it cannot.
            if self._n_resid and not (self.resid_cap >= 0.0 and r <= self.resid_cap * self._floor(expected)):
                r = min(r, self.resid_cap * self._scale(*self._references()))
            self._n_resid += 1
            # Plain mean for the first 1/alpha residuals, then exponential forgetting.
            w = max(self.alpha, 1.0 / self._n_resid)
            self._resid = r if self._n_resid == 1 else self._resid + w * (r - self._resid)
        self._push(x)

    def _gap(self) -> None:
        self._push(float("nan"))

    def _push(self, x: float) -> None:
        self._ring.push(x)
        self._slots += 1

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"period": 12, "lags": (1, 2), "half_width": 1}
