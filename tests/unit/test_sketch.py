"""Sketch accuracy against numpy.percentile on skewed data, and mergeability."""

import numpy as np
import pytest

from processor.windows import sketch


def _sketch(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return sketch.merge(sketch.keys_for(values), np.ones(values.size, np.uint64))


@pytest.mark.parametrize("dist", ["lognormal", "pareto", "bimodal"])
def test_quantiles_within_one_percent_of_numpy(dist: str) -> None:
    rng = np.random.default_rng(7)
    if dist == "lognormal":
        v = rng.lognormal(mean=1.0, sigma=1.5, size=50_000)
    elif dist == "pareto":
        v = (rng.pareto(1.2, size=50_000) + 1) * 3.0
    else:
        v = np.concatenate([rng.normal(2, 0.1, 45_000), rng.normal(900, 50, 5_000)])
    keys, counts = _sketch(v)
    got = sketch.quantiles(keys, counts, (0.5, 0.95, 0.99))
    for q, g in zip((50, 95, 99), got, strict=True):
        # method="lower" picks an observed value at the same rank the sketch uses.
        exact = float(np.percentile(v, q, method="lower"))
        assert abs(g - exact) / exact <= 0.01, (q, g, exact)


def test_merge_of_parts_equals_sketch_of_whole() -> None:
    rng = np.random.default_rng(3)
    v = rng.lognormal(0, 2, 10_000)
    k1, c1 = _sketch(v[:3000])
    k2, c2 = _sketch(v[3000:])
    mk, mc = sketch.merge(np.concatenate([k1, k2]), np.concatenate([c1, c2]))
    wk, wc = _sketch(v)
    assert np.array_equal(mk, wk) and np.array_equal(mc, wc)


def test_grouped_matches_per_group_sketches() -> None:
    rng = np.random.default_rng(5)
    g = rng.integers(0, 4, 2000)
    v = rng.lognormal(0, 1, 2000)
    grp, keys, counts = sketch.grouped(g, v)
    for i in range(4):
        ek, ec = _sketch(v[g == i])
        assert np.array_equal(keys[grp == i], ek)
        assert np.array_equal(counts[grp == i], ec)


def test_empty_sketch_has_nan_quantiles_and_tiny_values_clamp() -> None:
    assert all(np.isnan(sketch.quantiles(np.empty(0, np.int32), np.empty(0, np.uint64), (0.5,))))
    k = sketch.keys_for(np.array([0.0, -1.0, 1e-9]))
    assert (k == sketch.MIN_KEY).all()
