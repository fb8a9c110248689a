"""Mergeable log-bucket latency sketch (DDSketch-style, relative error <= alpha) over numpy.

Why our own: the `ddsketch` package adds values one at a time in Python; here a whole
span batch is bucketed with one vectorised log, and sketches are plain (keys, counts)
arrays that ClickHouse can merge with sumMap.
"""

from __future__ import annotations

import math

import numpy as np

ALPHA = 0.005
GAMMA = (1.0 + ALPHA) / (1.0 - ALPHA)
_LOG_GAMMA = math.log(GAMMA)
MIN_VALUE_MS = 1e-6
MIN_KEY = math.ceil(math.log(MIN_VALUE_MS) / _LOG_GAMMA)


def keys_for(values_ms: np.ndarray) -> np.ndarray:
    """Bucket key of each value (milliseconds); tiny or non-positive values clamp to MIN_KEY."""
    v = np.maximum(np.asarray(values_ms, dtype=np.float64), MIN_VALUE_MS)
    return np.ceil(np.log(v) / _LOG_GAMMA).astype(np.int32)


def value_of(keys: np.ndarray | int) -> np.ndarray:
    """Representative value of a bucket: within alpha of every value the bucket holds."""
    return 2.0 * np.power(GAMMA, np.asarray(keys, dtype=np.float64)) / (GAMMA + 1.0)


def merge(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum counts of equal keys; returns keys ascending."""
    if keys.size == 0:
        return np.empty(0, np.int32), np.empty(0, np.uint64)
    uniq, inv = np.unique(keys, return_inverse=True)
    summed = np.bincount(inv, weights=counts, minlength=uniq.size)
    return uniq.astype(np.int32), np.rint(summed).astype(np.uint64)


def quantiles(keys: np.ndarray, counts: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Quantiles from sorted (keys, counts): the bucket holding rank q*(n-1), as in the SQL.

    NaN when the sketch is empty, so an empty side never reads as a 0 ms latency.
    """
    total = int(counts.sum()) if counts.size else 0
    if total == 0:
        return [math.nan for _ in qs]
    cum = np.cumsum(counts.astype(np.float64))
    out = []
    for q in qs:
        rank = q * (total - 1)
        idx = int(np.searchsorted(cum, rank, side="right"))
        out.append(float(value_of(int(keys[min(idx, keys.size - 1)]))))
    return out


def grouped(group: np.ndarray, values_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sketch many groups at once: rows (group, key, count) for every non-empty bucket."""
    if group.size == 0:
        e = np.empty(0, np.int64)
        return e, np.empty(0, np.int32), np.empty(0, np.uint64)
    k = keys_for(values_ms).astype(np.int64)
    # Group ids may be packed edge ids (up to ~2**62): number them densely first so that
    # id * 65536 cannot overflow int64. Key range fits in 16 bits either side of zero.
    gids, dense = np.unique(group.astype(np.int64), return_inverse=True)
    combined = dense.astype(np.int64) * 65536 + (k + 32768)
    uniq, counts = np.unique(combined, return_counts=True)
    return gids[uniq // 65536], (uniq % 65536 - 32768).astype(np.int32), counts.astype(np.uint64)


def sketch_of(sk: tuple[np.ndarray, np.ndarray, np.ndarray] | None, group: int
              ) -> tuple[list[int], list[int]]:
    """One group's (keys, counts) out of `grouped` rows (sorted by group), as lists."""
    if sk is None:
        return [], []
    ids, keys, counts = sk
    lo, hi = np.searchsorted(ids, group, "left"), np.searchsorted(ids, group, "right")
    return keys[lo:hi].tolist(), counts[lo:hi].tolist()


def merged_quantiles(keys: list[list[int]], counts: list[list[int]]
                     ) -> tuple[list[int], list[int], list[float]]:
    """Merge several stored sketches and read p50/p95/p99 (ms)."""
    k = np.concatenate([np.asarray(x, np.int32) for x in keys]) if keys else np.empty(0, np.int32)
    c = np.concatenate([np.asarray(x, np.uint64) for x in counts]) if counts else np.empty(0, np.uint64)
    mk, mc = merge(k, c)
    return mk.tolist(), mc.tolist(), quantiles(mk, mc, (0.5, 0.95, 0.99))
