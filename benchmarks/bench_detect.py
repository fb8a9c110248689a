"""Cost of per-window anomaly detection, next to stage 2's own finalisation cost, printed (never asserted).

  .venv/bin/python benchmarks/bench_detect.py [--services 60 --edges 140 --windows 600]
      [--repeats 3] [--store-windows 100] [--profile] [--dump verdicts.txt]

Synthetic traffic, no broker: ``--services`` + ``--edges`` entities (a few database edges with
no server side, some low-volume ones below the detectors' volume guards), a diurnal rate with
Poisson noise, log-normal latency bucketed into the pipeline's sketch, and a few labelled
incidents (latency x3, error bursts, traffic drops, entities vanishing for a few windows) so
the verdict path runs too. Each window's rows are two input partitions' partials, finalised
with ``Finalizer.final_health/final_edges`` as stage 2 does.

1. detection: ``WindowDetector.observe_window`` once per window, oldest first. The first
   ``--warmup`` windows are fed untimed (the detectors warm up); the rest are timed. The
   seasonal period is ``--period`` windows (a "day"), so the seasonal members score within
   the run as they do after a day in production. Median of ``--repeats`` fresh detectors.
2. stage 2: ``final_health`` + ``final_edges`` on every window's partials, and for the first
   ``--store-windows`` windows the chdb insert of the final rows (``insert_health_final`` /
   ``insert_edges_final``) and the ``window_final_rows`` read the anomaly stage does, against
   a real embedded ClickHouse (chdb) store in a temporary directory. Stage 2's reads of the
   partials (``read_health_partials`` / ``read_edge_partials``) are timed too and shown apart,
   with a second share that counts them.

Printed: µs per entity-window and windows/s of detection, stage 2's µs per entity-window, and
the detection share = detect / (detect + stage 2), all wall time of this one process.
``--profile`` adds a cProfile top 15 of one detection run; ``--dump`` writes every verdict
(scores as exact float reprs) so two builds can be diffed for identical results.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processor.aggregate.finalize import Finalizer  # noqa: E402
from processor.config.components import (  # noqa: E402
    AnomalyConfig,
    ClickHouseExporter,
    DetectorTuning,
    WindowsConfig,
)
from processor.config.duration import Duration  # noqa: E402
from processor.detect.window import Verdict, WindowDetector  # noqa: E402
from processor.storage.open import open_store  # noqa: E402
from processor.storage.store import Store  # noqa: E402
from processor.windows import sketch  # noqa: E402

MINUTE_MS = 60_000
PARTITIONS = 2  # input partitions whose partials meet in stage 2
MAX_SAMPLES = 200  # latency samples drawn per sketch; counts are scaled up to the request count


@dataclass
class Entity:
    kind: str  # "service" or "edge"
    name: tuple[str, ...]  # (service,) or (client, server, connection_type)
    rate: float  # mean requests per window
    error_p: float
    latency_ms: float  # median
    client_extra_ms: float  # edges: client latency = server + this (network)
    has_server: bool  # database edges have no server span


@dataclass
class Incident:
    entity: int
    start: int  # window index
    length: int
    kind: str  # latency, errors, drop, gone


@dataclass
class Window:
    start_ms: int
    health_partials: list[dict[str, Any]]
    edge_partials: list[dict[str, Any]]


def make_entities(rng: np.random.Generator, services: int, edges: int) -> list[Entity]:
    names = [f"svc-{i:03d}" for i in range(services)]
    out = []
    for name in names:
        out.append(Entity("service", (name,), float(np.exp(rng.normal(math.log(400), 1.3))) + 2.0,
                          float(rng.uniform(0.0005, 0.01)), float(np.exp(rng.normal(math.log(25), 0.8))),
                          0.0, True))
    seen: set[tuple[str, str]] = set()
    while len(seen) < edges:
        client = names[int(rng.integers(services))]
        if rng.random() < 0.15:  # database edge: client side only
            server, ctype, has_server = f"db-{int(rng.integers(max(1, services // 6))):02d}", "database", False
        else:
            server, ctype, has_server = names[int(rng.integers(services))], "", True
        if server == client or (client, server) in seen:
            continue
        seen.add((client, server))
        out.append(Entity("edge", (client, server, ctype), float(np.exp(rng.normal(math.log(200), 1.3))) + 2.0,
                          float(rng.uniform(0.0005, 0.01)), float(np.exp(rng.normal(math.log(15), 0.8))),
                          float(rng.uniform(0.2, 3.0)), has_server))
    return out


def make_incidents(rng: np.random.Generator, n_entities: int, windows: int, warmup: int) -> list[Incident]:
    """About one incident per entity every 300 windows, after the warm-up."""
    out = []
    for _ in range(max(1, n_entities * windows // 300)):
        start = int(rng.integers(min(warmup, windows - 1), windows))
        kind = ("latency", "errors", "drop", "gone")[int(rng.integers(4))]
        out.append(Incident(int(rng.integers(n_entities)), start, int(rng.integers(3, 9)), kind))
    return out


class _Sketches:
    """Latency sketches of one window, drawn together: one vectorised bucketing per window."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.sizes: list[int] = []  # requests per sketch
        self.medians: list[float] = []

    def add(self, n: int, median_ms: float) -> int:
        """Reserve a sketch of n requests around median_ms; returns its id."""
        self.sizes.append(n)
        self.medians.append(median_ms)
        return len(self.sizes) - 1

    def draw(self) -> list[tuple[list[int], list[int]]]:
        """(keys, counts) per reserved sketch; at most MAX_SAMPLES samples each, counts scaled to n."""
        if not self.sizes:
            return []
        n = np.asarray(self.sizes, dtype=np.int64)
        m = np.minimum(n, MAX_SAMPLES)
        group = np.repeat(np.arange(n.size), m)
        values = np.exp(self.rng.normal(0.0, 0.5, int(m.sum())) + np.log(np.repeat(self.medians, m)))
        gid, keys, counts = sketch.grouped(group, values)
        scale = (n / m)[gid]  # scale the sample up to n requests (rounding keeps buckets >= 1)
        counts = np.maximum(np.rint(counts * scale), 1).astype(np.int64)
        bounds = np.searchsorted(gid, np.arange(n.size + 1)).tolist()
        kl, cl = keys.tolist(), counts.tolist()
        return [(kl[a:b], cl[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def make_windows(seed: int, services: int, edges: int, windows: int, warmup: int,
                 period: int) -> tuple[list[Window], list[Entity], int]:
    """Every window's partials (two input partitions per entity), oldest first; also the incident count."""
    rng = np.random.default_rng(seed)
    ents = make_entities(rng, services, edges)
    incidents = make_incidents(rng, len(ents), windows, warmup)
    effect: dict[tuple[int, int], str] = {}
    for inc in incidents:
        for w in range(inc.start, min(inc.start + inc.length, windows)):
            effect[(inc.entity, w)] = inc.kind
    # Recent windows: the store's TTL drops parts older than the TTL at insert time.
    base_ms = (int(time.time() * 1000) // MINUTE_MS - windows - 5) * MINUTE_MS
    rates = np.array([e.rate for e in ents])
    error_ps = np.array([e.error_p for e in ents])
    out = []
    for w in range(windows):
        ws = base_ms + w * MINUTE_MS
        diurnal = 1.0 + 0.4 * math.sin(2.0 * math.pi * w / period)
        hp: list[dict[str, Any]] = []
        ep: list[dict[str, Any]] = []
        sk = _Sketches(rng)
        pending: list[tuple[dict[str, Any], str, int]] = []  # (row, column prefix, sketch id)
        kinds = [effect.get((i, w)) for i in range(len(ents))]
        lam = rates * diurnal * np.exp(rng.normal(0.0, 0.05, len(ents)))
        lam *= np.array([0.2 if k == "drop" else 0.0 if k == "gone" else 1.0 for k in kinds])
        p_err = np.where(np.array([k == "errors" for k in kinds]), 0.1, error_ps)
        # Requests per input partition, and their errors.
        split = rng.multinomial(rng.poisson(lam), [1.0 / PARTITIONS] * PARTITIONS)
        errs = rng.binomial(split, p_err[:, None])
        for e, kind, ns, ks in zip(ents, kinds, split.tolist(), errs.tolist(), strict=True):
            lat = e.latency_ms * (3.0 if kind == "latency" else 1.0)
            for part, (n, k) in enumerate(zip(ns, ks, strict=True)):
                if n == 0:
                    continue
                common = {"window_start": ws, "window_end": ws + MINUTE_MS, "input_topic": "otlp_spans",
                          "input_partition": part, "version": 1}
                if e.kind == "service":
                    row = {**common, "service": e.name[0], "calls": n, "errors": k}
                    pending.append((row, "latency", sk.add(n, lat)))
                    hp.append(row)
                else:
                    row = {**common, "client": e.name[0], "server": e.name[1], "connection_type": e.name[2],
                           "requests": n, "failed": k, "server_keys": [], "server_counts": []}
                    if e.has_server:
                        pending.append((row, "server", sk.add(n, lat)))
                    pending.append((row, "client", sk.add(n, lat + e.client_extra_ms)))
                    ep.append(row)
        drawn = sk.draw()
        for row, prefix, sid in pending:
            row[f"{prefix}_keys"], row[f"{prefix}_counts"] = drawn[sid]
        out.append(Window(ws, hp, ep))
    return out, ents, len(incidents)


def finalise(windows: list[Window]) -> tuple[list[tuple[int, list[dict[str, Any]], list[dict[str, Any]]]], float]:
    """Final rows per window, as stage 2 produces them (the detector's input), and the seconds it took."""
    fin = Finalizer(WindowsConfig(size=Duration(MINUTE_MS * 1_000_000)))
    out = []
    elapsed = 0.0
    for w in windows:
        t = time.perf_counter()
        health, edges = fin.final_health(w.health_partials), fin.final_edges(w.edge_partials)
        elapsed += time.perf_counter() - t
        out.append((w.start_ms, health, edges))
    return out, elapsed


def settings(period: int) -> AnomalyConfig:
    return AnomalyConfig(tuning=DetectorTuning(seasonal_period_windows=period))


def detect_once(final: list[tuple[int, list[dict[str, Any]], list[dict[str, Any]]]], warmup: int, period: int,
                profiler: cProfile.Profile | None = None) -> tuple[float, int, list[Verdict]]:
    """(seconds in the timed windows, entity-windows timed, verdicts of the timed windows)."""
    det = WindowDetector(settings(period), MINUTE_MS)
    for ws, h, e in final[:warmup]:
        det.observe_window(ws, h, e)
    verdicts: list[Verdict] = []
    n_rows, elapsed = 0, 0.0
    if profiler is not None:
        profiler.enable()
    for ws, h, e in final[warmup:]:
        t = time.perf_counter()
        found = det.observe_window(ws, h, e)
        elapsed += time.perf_counter() - t
        n_rows += len(h) + len(e)
        verdicts.extend(found)
    if profiler is not None:
        profiler.disable()
    return elapsed, n_rows, verdicts


@dataclass
class StoreCost:
    partial_read_s: float = 0.0
    insert_s: float = 0.0
    read_s: float = 0.0
    rows: int = 0


def store_once(store: Store, windows: list[Window],
               final: list[tuple[int, list[dict[str, Any]], list[dict[str, Any]]]]) -> StoreCost:
    """Per window: read its partials back (stage 2's input), insert its final rows, and read
    those back as the anomaly stage does; each step timed. Writing the partials is stage 1's
    work and not timed."""
    cost = StoreCost()
    for w, (ws, health, edges) in zip(windows, final, strict=True):
        store.insert_health_partials(w.health_partials)
        store.insert_edge_partials(w.edge_partials)
        h_keys = sorted({(r["service"], r["window_start"]) for r in w.health_partials})
        e_keys = sorted({(r["client"], r["server"], r["connection_type"], r["window_start"])
                         for r in w.edge_partials})
        t0 = time.perf_counter()
        hp = store.read_health_partials(h_keys)
        ep = store.read_edge_partials(e_keys)
        t1 = time.perf_counter()
        store.insert_health_final(health)
        store.insert_edges_final(edges)
        t2 = time.perf_counter()
        h_rows, e_rows = store.window_final_rows(ws)
        t3 = time.perf_counter()
        if (len(hp), len(ep)) != (len(w.health_partials), len(w.edge_partials)) or \
                (len(h_rows), len(e_rows)) != (len(health), len(edges)):
            raise RuntimeError(f"window {ws}: read back {len(hp)}/{len(ep)} partials and "
                               f"{len(h_rows)}/{len(e_rows)} final rows, wrote {len(w.health_partials)}/"
                               f"{len(w.edge_partials)} and {len(health)}/{len(edges)}")
        cost.partial_read_s += t1 - t0
        cost.insert_s += t2 - t1
        cost.read_s += t3 - t2
        cost.rows += len(health) + len(edges)
    return cost


def open_temp_store(path: str) -> Store:
    return open_store(ClickHouseExporter(endpoint=f"chdb://{path}", database="bench_detect"))


def dump_verdicts(path: str, verdicts: list[Verdict], first_ms: int) -> None:
    """One line per verdict with exact float reprs, for diffing two builds (windows numbered
    from the run's first, since the data's timestamps follow the clock)."""
    with open(path, "w") as f:
        for v in verdicts:
            w = (v.window_start_ms - first_ms) // MINUTE_MS
            f.write(f"{v.entity_type} {v.entity} w{w} {v.metric} {v.severity} {v.score!r} "
                    f"{v.observed!r} {v.expected!r} {v.deviation!r} {','.join(v.detectors)}\n")
            for fac in v.factors:
                f.write("  " + " ".join(f"{k}={val!r}" for k, val in fac.items()) + "\n")


def _profile_text(profiler: cProfile.Profile, top: int) -> Iterator[str]:
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).strip_dirs().sort_stats("cumulative").print_stats(top)
    yield from buf.getvalue().splitlines()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=60)
    ap.add_argument("--edges", type=int, default=140)
    ap.add_argument("--windows", type=int, default=600)
    ap.add_argument("--warmup", type=int, default=150, help="untimed windows before timing starts")
    ap.add_argument("--period", type=int, default=60, help="seasonal period in windows (the 'day')")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--store-windows", type=int, default=100, help="windows timed through chdb (0: skip)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="cProfile top 15 (cumulative) of one detection run")
    ap.add_argument("--dump", metavar="PATH", help="write the verdicts of the timed windows here")
    args = ap.parse_args(argv)
    if not 0 <= args.warmup < args.windows:
        ap.error("need 0 <= --warmup < --windows")
    console = Console()

    t = time.perf_counter()
    windows, ents, n_incidents = make_windows(args.seed, args.services, args.edges, args.windows,
                                              args.warmup, args.period)
    final, finalise_s = finalise(windows)
    n_rows = sum(len(h) + len(e) for _, h, e in final)
    console.print(f"data: {len(ents)} entities x {args.windows} windows = {n_rows:,} final rows "
                  f"(entity-windows), {n_incidents} incidents, generated in {time.perf_counter() - t:.1f} s")

    runs = []
    verdicts: list[Verdict] = []
    for _ in range(args.repeats):
        elapsed, timed_rows, verdicts = detect_once(final, args.warmup, args.period)
        runs.append(elapsed)
    detect_s = statistics.median(runs)
    detect_us = 1e6 * detect_s / timed_rows
    timed_windows = args.windows - args.warmup

    stored: StoreCost | None = None
    if args.store_windows > 0:
        # The engine may still be merging parts as it closes: leftovers are not an error.
        with tempfile.TemporaryDirectory(prefix="bench_detect_", ignore_cleanup_errors=True) as tmp:
            store = open_temp_store(tmp)
            try:
                store_once(store, windows[:1], final[:1])  # the first insert/read pays engine setup
                stored = store_once(store, windows[1:1 + args.store_windows], final[1:1 + args.store_windows])
            finally:
                store.backend.close()

    table = Table(title="Per-window anomaly detection vs stage-2 finalisation")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("detect: µs per entity-window (median of "
                  f"{args.repeats}: {', '.join(f'{1e6 * r / timed_rows:.1f}' for r in runs)})",
                  f"{detect_us:.1f} µs")
    table.add_row("detect: windows/s", f"{timed_windows / detect_s:,.0f}")
    table.add_row("detect: entity-windows/s", f"{timed_rows / detect_s:,.0f}")
    table.add_row("detect: verdicts in timed windows", f"{len(verdicts)}")
    table.add_section()
    finalise_us = 1e6 * finalise_s / n_rows
    table.add_row(f"stage 2: final_health + final_edges ({args.windows} windows)", f"{finalise_us:.1f} µs")
    if stored is not None and stored.rows:
        insert_us, read_us = 1e6 * stored.insert_s / stored.rows, 1e6 * stored.read_s / stored.rows
        table.add_row(f"stage 2: chdb insert of final rows ({args.store_windows} windows)", f"{insert_us:.1f} µs")
        table.add_row("stage 2: window_final_rows read", f"{read_us:.1f} µs")
        stage2_us = finalise_us + insert_us + read_us
        table.add_row("stage 2: total per entity-window", f"{stage2_us:.1f} µs")
        table.add_section()
        table.add_row("detection share = detect / (detect + stage 2)",
                      f"{100 * detect_us / (detect_us + stage2_us):.1f}%")
        partial_us = 1e6 * stored.partial_read_s / stored.rows
        table.add_section()
        table.add_row("stage 2 also: read_*_partials (its input)", f"{partial_us:.1f} µs")
        table.add_row("detection share, partial reads counted in stage 2",
                      f"{100 * detect_us / (detect_us + stage2_us + partial_us):.1f}%")
    console.print(table)

    if args.dump:
        dump_verdicts(args.dump, verdicts, final[0][0])
        console.print(f"verdicts written to {args.dump}")
    if args.profile:
        profiler = cProfile.Profile()
        detect_once(final, args.warmup, args.period, profiler)
        console.print("[bold]cProfile of one detection run (timed windows), top 15 by cumulative time[/bold]")
        for line in _profile_text(profiler, 15):
            console.print(line, markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
