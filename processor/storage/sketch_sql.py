"""Latency-sketch quantiles in ClickHouse SQL, so stored sketches merge over any range.

The sketch is DDSketch-style with values in milliseconds: alpha = 0.005,
gamma = (1 + alpha) / (1 - alpha), key(v) = ceil(log(v) / log(gamma)) and the
representative value of key k is 2 * gamma**k / (gamma + 1). The quantile q of
buckets with total count n is the representative value of the first key (in
ascending key order) whose cumulative count exceeds rank = q * (n - 1): the
same definition as `processor.windows.sketch.quantiles`.
"""

from __future__ import annotations

from processor.windows.sketch import ALPHA, GAMMA, MIN_VALUE_MS

# One definition: the constants come from the Python sketch that fills the columns.
SKETCH_ALPHA = ALPHA
SKETCH_GAMMA = GAMMA
SKETCH_MIN_VALUE_MS = MIN_VALUE_MS

# repr() keeps every bit of the float, so SQL and Python use the same gamma.
_GAMMA = repr(SKETCH_GAMMA)


def quantile_sql(keys: str, counts: str, q: float) -> str:
    """SQL expression: quantile `q` of bucket arrays `keys`/`counts`; NULL when empty.

    `keys` and `counts` are SQL expressions (columns, `sumMap(...).1`, ...); they
    are repeated inside the expression, so pass cheap ones (aliases or columns).
    Keys need not be sorted or unique.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    total = f"arraySum({counts})"
    sorted_counts = f"arraySort((sq_c, sq_k) -> sq_k, {counts}, {keys})"
    index = (
        f"arrayFirstIndex(sq_cum -> sq_cum > {q!r} * (toFloat64({total}) - 1), "
        f"arrayCumSum({sorted_counts}))"
    )
    key = f"arrayElement(arraySort({keys}), {index})"
    return f"if({total} = 0, NULL, 2 * pow({_GAMMA}, {key}) / ({_GAMMA} + 1))"
