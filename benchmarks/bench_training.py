"""Entity models: training seconds per entity, score_vector cost, TrainingSet memory.

Synthetic service windows (load drives traffic and latency together, as in the unit tests);
prints a table and asserts nothing.

    .venv/bin/python benchmarks/bench_training.py [--sizes 1440 2880] [--entities 300] [--windows 2880]
"""

from __future__ import annotations

import argparse
import math
import time
import tracemalloc
from dataclasses import replace
from typing import Any

import numpy as np

from processor.detect.autoencoder import Autoencoder
from processor.detect.entity_models import (
    SERVICE_FEATURES,
    ModelSpec,
    TrainingSet,
    score_vector,
    train_models,
    window_vector,
)
from processor.detect.entity_vector import SERVICE

MIN_REQUESTS = 20
# The model the tests build: the default network, history bounds for short series.
SPEC = ModelSpec(hidden=(8, 3), epochs=60, min_windows=240, max_windows=2880)


def fill_row(row: dict[str, Any], load: float, rng: np.random.Generator) -> dict[str, Any]:
    calls = int(rng.poisson(1000.0 * load))
    p50 = (20.0 + 10.0 * load) * math.exp(rng.normal(0, 0.02))
    row.update(calls=calls, errors=int(rng.binomial(calls, 0.01)), p50_ms=p50,
               p95_ms=2.5 * p50 * math.exp(rng.normal(0, 0.02)),
               p99_ms=4.0 * p50 * math.exp(rng.normal(0, 0.03)))
    return row


def service_matrix(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = [window_vector(SERVICE, fill_row({}, rng.uniform(0.2, 1.0), rng), (3, 2), MIN_REQUESTS)
            for _ in range(n)]
    return np.array(rows)


def bench_training(sizes: list[int], repeats: int) -> list[tuple[str, str]]:
    spec = replace(SPEC, max_windows=max(max(sizes), SPEC.max_windows))
    out = []
    for n in sizes:
        m = {(SERVICE, "svc"): service_matrix(n, seed=n)}
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            train_models(m, spec)
            best = min(best, time.perf_counter() - t0)
        out.append((f"train one entity, {n} windows (default network)", f"{best:.3f} s"))
    return out


def bench_score(calls: int) -> list[tuple[str, str]]:
    model = Autoencoder.from_bytes(train_models({(SERVICE, "svc"): service_matrix(1440, 1)},
                                                SPEC)[(SERVICE, "svc")])
    normal = service_matrix(200, seed=2)
    slow = normal.copy()
    slow[:, 1:4] += math.log(2.0)  # every window twice as slow: the explain path runs
    out = []
    for label, X in (("normal window (score 0)", normal), ("anomalous window (with evidence)", slow)):
        t0 = time.perf_counter()
        for i in range(calls):
            score_vector(model, X[i % len(X)], SERVICE_FEATURES, 0.3)
        out.append((f"score_vector, {label}", f"{(time.perf_counter() - t0) / calls * 1e6:.1f} µs"))
    return out


def fill_training_set(entities: int, windows: int) -> tuple[TrainingSet, float]:
    """The filled set and the seconds spent in add_window (row generation excluded)."""
    rng = np.random.default_rng(0)
    ts = TrainingSet(MIN_REQUESTS, windows)
    rows = [{"service": f"svc-{i}"} for i in range(entities)]
    seconds = 0.0
    for _ in range(windows):
        for row in rows:  # the rows are rebuilt each window; TrainingSet keeps none of them
            fill_row(row, rng.uniform(0.2, 1.0), rng)
        t0 = time.perf_counter()
        ts.add_window(rows, [])
        seconds += time.perf_counter() - t0
    return ts, seconds


def bench_memory(entities: int, windows: int) -> list[tuple[str, str]]:
    _, seconds = fill_training_set(entities, windows)
    tracemalloc.start()
    ts, _ = fill_training_set(entities, windows)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    matrices = ts.matrices()
    _, peak_matrices = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    floor = entities * windows * len(SERVICE_FEATURES) * 8
    assert all(m.shape == (windows, len(SERVICE_FEATURES)) for m in matrices.values())
    mb = 1e6
    return [
        (f"TrainingSet.add_window total, {entities} services x {windows} windows", f"{seconds:.1f} s"),
        ("TrainingSet held / tracemalloc peak", f"{held / mb:.1f} / {peak / mb:.1f} MB"),
        ("  the vectors themselves (float64)", f"{floor / mb:.1f} MB"),
        ("  peak with matrices() copies", f"{peak_matrices / mb:.1f} MB"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1440, 2880], help="training windows")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many trainings")
    ap.add_argument("--score-calls", type=int, default=20_000)
    ap.add_argument("--entities", type=int, default=300)
    ap.add_argument("--windows", type=int, default=2880)
    args = ap.parse_args()
    rows = bench_training(args.sizes, args.repeats)
    rows += bench_score(args.score_calls)
    rows += bench_memory(args.entities, args.windows)
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value:>14}")


if __name__ == "__main__":
    main()
