"""Reference RobustBaseline: rolling median and MAD over the last windows, direction aware, volume guarded.

The per-value implementation, written for clarity and speed per call, that the bank
(processor.detect.banks) must match bit for bit; see tests/unit/test_detect_banks.py.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from processor.detect import stats
from processor.detect.base import NO_EXPLANATION, Detector, Explanation, volumes_array
from processor.evaluate.ring import Ring


class RobustBaseline(Detector):
    """The semantics of :class:`processor.detect.robust.RobustBaseline`, one value at a time."""

    def __init__(
        self,
        window: int = 60,
        direction: str = "both",
        grace_period: int = 10,
        min_volume: float = 0.0,
        z0: float = stats.Z0,
        tau: float = stats.TAU,
        min_scale: float = 0.0,
        min_relative_scale: float = 0.01,
    ) -> None:
        super().__init__()
        stats.check_direction(direction)
        if window < 3:
            raise ValueError(f"window must be >= 3, got {window}")
        self.window = window
        self.direction = direction
        self.grace_period = grace_period
        self.min_volume = min_volume
        self.z0 = z0
        self.tau = tau
        self.min_scale = min_scale
        self.min_relative_scale = min_relative_scale
        self._ring = Ring(window)
        # The ring's values kept sorted as well (bisect in, bisect out): the median is an
        # index and the MAD a binary search (median_mad_sorted_list), not a fresh sort.
        # Derived state: not pickled, rebuilt from the ring (__setstate__).
        self._sorted: list[float] = []
        # Median/scale are recomputed lazily: the first score after a learn refreshes them.
        self._stale = True
        self._med = float("nan")
        self._scale = float("nan")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_sorted"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._sorted = sorted(self._ring.filled().tolist())

    def _stats(self) -> tuple[float, float]:
        if self._stale:
            med, scale = median_mad_sorted_list(self._sorted)
            self._med = med
            self._scale = stats.floor_scale(scale, med, self.min_scale, self.min_relative_scale)
            self._stale = False
        return self._med, self._scale

    def _learn(self, x: float) -> None:
        ring, srt = self._ring, self._sorted
        if ring.size == ring.capacity:  # the oldest value leaves the window
            del srt[bisect_left(srt, ring.buf.item(ring.pos))]
        insort(srt, float(x))
        ring.push(x)
        self._stale = True

    def _score(self, x: float) -> float:
        size = self._ring.size
        if size == 0:
            return 0.0
        if self._stale and self.z0 >= 0.0:
            # Most values sit well inside the baseline: the median is two list reads, and the
            # scale is never below its floors, so a value within z0 floors of the median scores
            # 0 whatever the MAD is (|x - med| / scale <= |x - med| / floor, rounding included);
            # the MAD waits until a value comes close enough to need it.
            srt = self._sorted
            med = (srt[(size - 1) // 2] + srt[size // 2]) * 0.5
            floor = max(self.min_scale, self.min_relative_scale * abs(med), stats.TINY_SCALE)
            if stats.directed((x - med) / floor, self.direction) <= self.z0:
                return 0.0
        med, scale = self._stats()
        return stats.squash_t((x - med) / scale, self._ring.size - 1, self.direction, self.z0, self.tau)

    def explain_one(self, x: float) -> Explanation:
        if self._ring.size == 0:
            return NO_EXPLANATION
        med, scale = self._stats()
        return Explanation(med, (float(x) - med) / scale)

    def score_many(self, xs: Any, volumes: Any = None) -> np.ndarray:
        arr = self._coerce_many(xs)
        usable = self._usable_mask(arr, volumes_array(volumes, len(arr)))
        if self._ring.size == 0 or self.n_learned < self.grace_period:
            return np.zeros(len(arr))
        med, scale = self._stats()
        t = (np.where(usable, arr, med) - med) / scale
        z = stats.directed_many(stats.t_to_z_many(t, self._ring.size - 1), self.direction)
        return np.where(usable, stats.squash_many(z, self.z0, self.tau), 0.0)

    def process_many(self, xs: Any, volumes: Any = None) -> np.ndarray:
        """Vectorised once the window is full: every value's window is a row of a sliding view.

        Until the ring is full the scalar loop runs (windows of varying length); after that
        every usable value enters and the oldest leaves, so the window before the k-th usable
        value is a fixed-length slice of (ring contents ++ usable values).
        """
        arr = self._coerce_many(xs)
        n = len(arr)
        vols = volumes_array(volumes, n)
        usable = self._usable_mask(arr, vols)
        out = np.zeros(n)
        i = 0
        while i < n and (not self._ring.full or self.n_learned < self.grace_period):
            out[i] = self.process_one(arr[i], None if vols is None else vols[i])
            i += 1
        if i == n:
            return out
        rest = arr[i:]
        rest_usable = usable[i:]
        learned = rest[rest_usable]
        if learned.size == 0:
            return out
        scores = np.empty(learned.size)
        # Chunks bound the temporary (chunk x window) arrays to ~8 MB whatever the input length.
        chunk = max(1, (1 << 20) // self.window)
        for start in range(0, learned.size, chunk):
            part = learned[start:start + chunk]
            seq = np.concatenate((self._ring.values(), part))
            # Row j of the view is the window before the j-th value of the part.
            rows = sliding_window_view(seq, self.window)[: part.size]
            med, scale = stats.median_mad_rows(rows)
            floor = np.maximum(np.maximum(self.min_scale, self.min_relative_scale * np.abs(med)),
                               stats.TINY_SCALE)
            t = (part - med) / np.maximum(scale, floor)
            z = stats.directed_many(stats.t_to_z_many(t, self.window - 1), self.direction)
            scores[start:start + part.size] = stats.squash_many(z, self.z0, self.tau)
            self._ring.extend(part)
        out[i:][rest_usable] = scores
        self.n_learned += int(learned.size)
        self._sorted = sorted(self._ring.filled().tolist())
        self._stale = True
        return out

    def _usable_mask(self, arr: np.ndarray, vols: np.ndarray | None) -> np.ndarray:
        mask = np.isfinite(arr)
        if vols is not None and self.min_volume > 0.0:
            # NaN volume fails the guard, as in usable(); a missing volume (None) does not.
            mask &= vols >= self.min_volume
        return mask

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"window": 20, "grace_period": 5, "direction": "both"}


def median_mad_sorted_list(s: list[float]) -> tuple[float, float]:
    """:func:`processor.detect.stats.median_mad_sorted` of an ascending Python list, bit for bit, without numpy.

    The absolute deviations are two ascending runs (``med - s[i]`` below the median, read
    downwards, and ``s[j] - med`` from it upwards; ``a - b == -(b - a)`` exactly in IEEE
    arithmetic, so these are the same floats as ``abs(s - med)``), and the MAD is their middle
    element(s): a binary search over how many come from each run, O(log n) instead of an
    O(n log n) sort of a fresh array. The rare MAD-0 fallback (a mean) goes through numpy so
    its summation order is :func:`processor.detect.stats.median_mad_sorted`'s.

    >>> median_mad_sorted_list([1.0, 2.0, 4.0, 7.0, 50.0]) == stats.median_mad_sorted(np.array([1.0, 2.0, 4.0, 7.0, 50.0]))
    True
    """
    n = len(s)
    med = (s[(n - 1) // 2] + s[n // 2]) * 0.5
    p = bisect_left(s, med)  # s[:p] < med <= s[p:]
    la, lb = p, n - p
    k = (n - 1) // 2  # 0-based rank of the lower middle deviation
    # i deviations from below and j = k + 1 - i from above are the k + 1 smallest: find the
    # smallest i with (the (i+1)-th from below) >= (the j-th from above).
    lo, hi = max(0, k + 1 - lb), min(k + 1, la)
    while lo < hi:
        i = (lo + hi) // 2
        if med - s[p - 1 - i] < s[p + k - i] - med:
            lo = i + 1
        else:
            hi = i
    i, j = lo, k + 1 - lo
    if i == 0:
        d1 = s[p + j - 1] - med
    elif j == 0:
        d1 = med - s[p - i]
    else:
        d1 = max(med - s[p - i], s[p + j - 1] - med)
    if n % 2:
        d2 = d1
    elif i == la:
        d2 = s[p + j] - med
    elif j == lb:
        d2 = med - s[p - 1 - i]
    else:
        d2 = min(med - s[p - 1 - i], s[p + j] - med)
    mad = (d1 + d2) * 0.5
    if mad > 0.0:
        return med, stats.MAD_TO_SIGMA * mad
    dev = np.sort(np.abs(np.asarray(s, dtype=np.float64) - med))
    return med, stats.MEAN_AD_TO_SIGMA * float(np.mean(dev))
