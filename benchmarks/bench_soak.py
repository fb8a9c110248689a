"""Soak: the worker for ~10 minutes at a fixed rate with production windows; printed and plotted.

  .venv/bin/python benchmarks/bench_soak.py [--seconds 600] [--rate 10000] [--out docs/bench-soak.png]

Live shop traffic (keyed, 3 partitions) is paced to the wall clock into the local broker; one
`otel-insights run` worker with 60 s windows and 30 s lateness (as production.yaml) writes to
chdb behind the HTTP shim in its own process, so the worker's RSS is the pipeline's own.
Every few seconds it samples the worker's RSS and CPU and its consumer lag (the
`otel_insights_consumer_lag_records` gauges); every 0.25 s it polls ClickHouse for newly final
windows, and a window's close latency is when its rows were first readable minus its close
(its end + allowed lateness; event time is wall time here). It prints the samples, a summary
(RSS after warm-up against its mean, its trend, lag and close-latency percentiles) and writes
a PNG of the three over time. Figures only, nothing asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processor.generate import ShopGenerator  # noqa: E402

WINDOW_S, LATENESS_S = 60, 30
MB = 1024 * 1024


@dataclass
class Soak:
    """What the run saw."""

    t0: float
    samples: list[tuple[float, float, float, float]] = field(default_factory=list)  # t, RSS MB, lag, CPU %
    first_seen: dict[int, float] = field(default_factory=dict)  # window end (ms) -> wall time first readable
    sent_spans: int = 0
    behind_s: float = 0.0  # how far the producer ever fell behind the wall clock

    def close_latencies(self, start_ms: int, end_ms: int) -> list[tuple[float, float]]:
        """(close time since start in s, latency s) of windows closed by the watermark while
        traffic flowed (later ones close on idleness)."""
        out = []
        for we, seen in sorted(self.first_seen.items()):
            close_s = (we + LATENESS_S * 1000) / 1000
            if we > start_ms and close_s * 1000 <= end_ms - 2000:
                out.append((close_s - self.t0, seen - close_s))
        return out


def _lag(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("otel_insights_consumer_lag_records{") and 'topic="soak"' in line)


def run(seconds: int, span_rate: float, sample_s: float) -> tuple[Soak, int, int]:
    from aiokafka import AIOKafkaProducer

    from processor.config import load_config
    from processor.generate.sinks import produce_traces
    from processor.localstack import LocalBroker
    from processor.storage.open import open_store
    from tests.chshim import start_shim
    from tests.integration.harness import make_pipeline

    probe = list(ShopGenerator(seed=7, rate=500, start_ns=0).traces(4))
    per_trace = sum(t.span_count for t in probe) / len(probe)
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        broker.create_topic("soak", 3)
        shim = start_shim(Path(tmp) / "clickhouse")
        p = make_pipeline(Path(tmp), broker.bootstrap, "soak", "soak", window=f"{WINDOW_S}s",
                          lateness=f"{LATENESS_S}s", batch=1000, clickhouse=shim.url).start()
        assert p.proc is not None
        worker = psutil.Process(p.proc.pid)
        worker.cpu_percent(None)
        cfg = load_config(p.config_path).clickhouse
        assert cfg is not None
        poller = open_store(cfg, migrate=False)
        sql = poller._sql("SELECT DISTINCT toUnixTimestamp64Milli(window_end) AS we FROM {db}.service_health")
        start_ns = (time.time_ns() // 10**9 + 2) * 10**9
        soak = Soak(t0=start_ns / 1e9)
        gen = ShopGenerator(seed=7, rate=span_rate / per_trace, start_ns=start_ns)

        async def poll() -> None:
            rows = await asyncio.to_thread(poller.backend.query, sql)
            now = time.time()
            for r in rows:
                soak.first_seen.setdefault(int(r["we"]), now)

        async def sample() -> None:
            lag = await asyncio.to_thread(_lag, p.port)
            rss = worker.memory_info().rss / MB
            cpu = worker.cpu_percent(None)
            t = time.time() - soak.t0
            soak.samples.append((t, rss, lag, cpu))
            closed = soak.close_latencies(start_ns // 10**6, int(time.time() * 1000))
            last = f"{closed[-1][1]:5.2f} s" if closed else "    -"
            print(f"  {t:6.0f} s  RSS {rss:6.1f} MB  lag {lag:7.0f}  cpu {cpu:5.1f}%  "
                  f"windows closed {len(closed):2d}  last close->queryable {last}", flush=True)

        async def traffic() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=[broker.bootstrap], acks="all", linger_ms=5)
            await producer.start()
            try:
                slice_ns, buf = 250_000_000, list[Any]()
                edge = start_ns + slice_ns
                next_poll = next_sample = time.time()
                for tr in gen.traces(seconds):
                    if tr.start_ns >= edge:  # send a slice once its traces have ended
                        due = (edge + 50_000_000) / 1e9
                        soak.behind_s = max(soak.behind_s, time.time() - due)
                        await asyncio.sleep(max(0.0, due - time.time()))
                        await produce_traces(producer, "soak", buf, "otlp_proto")
                        soak.sent_spans += sum(t.span_count for t in buf)
                        buf, edge = [], edge + slice_ns
                        if time.time() >= next_poll:
                            await poll()
                            next_poll = time.time() + 0.25
                        if time.time() >= next_sample:
                            await sample()
                            next_sample = time.time() + sample_s
                    buf.append(tr)
            finally:
                await producer.stop()

        asyncio.run(traffic())
        end_ms = start_ns // 10**6 + seconds * 1000
        p.stop()
        poller.close()
        shim.stop()
    return soak, start_ns // 10**6, end_ms


def summarize(soak: Soak, seconds: int, start_ms: int, end_ms: int, warmup_s: float) -> dict[str, Any]:
    t, rss, lag, _ = (np.array(col) for col in zip(*soak.samples, strict=True))
    after = t >= warmup_s
    mean = float(rss[after].mean())
    slope = float(np.polyfit(t[after] / 60, rss[after], 1)[0]) if after.sum() > 2 else float("nan")
    closes = soak.close_latencies(start_ms, end_ms)
    lat = np.array([c[1] for c in closes])
    out = {
        "rate": soak.sent_spans / seconds, "rss_mean": mean,
        "rss_min": float(rss[after].min()), "rss_max": float(rss[after].max()),
        "rss_dev_pct": 100 * float(np.abs(rss[after] - mean).max()) / mean, "rss_slope": slope,
        "lag_p50": float(np.percentile(lag, 50)), "lag_p99": float(np.percentile(lag, 99)),
        "lag_max": float(lag.max()), "windows": len(closes),
    }
    if len(lat):
        out |= {"close_p50": float(np.percentile(lat, 50)), "close_p99": float(np.percentile(lat, 99)),
                "close_max": float(lat.max())}
    print(f"\n  {out['rate']:,.0f} spans/s for {seconds} s (producer at most {soak.behind_s:.2f} s behind), "
          f"keyed, 3 partitions, {WINDOW_S} s windows, {LATENESS_S} s lateness")
    print(f"  worker RSS after {warmup_s:.0f} s warm-up: mean {mean:.1f} MB, min {out['rss_min']:.1f}, "
          f"max {out['rss_max']:.1f} (within ±{out['rss_dev_pct']:.1f}% of the mean), trend {slope:+.2f} MB/min")
    print(f"  consumer lag (records): p50 {out['lag_p50']:.0f}, p99 {out['lag_p99']:.0f}, max {out['lag_max']:.0f}")
    if len(lat):
        print(f"  window close -> final rows queryable, {len(lat)} windows: p50 {out['close_p50']:.2f} s, "
              f"p99 {out['close_p99']:.2f} s, max {out['close_max']:.2f} s")
    return out


def plot(soak: Soak, start_ms: int, end_ms: int, warmup_s: float, summary: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, rss, lag, _ = (np.array(col) for col in zip(*soak.samples, strict=True))
    closes = soak.close_latencies(start_ms, end_ms)
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    ax = axes[0]
    ax.plot(t / 60, rss, color="tab:blue")
    mean = summary["rss_mean"]
    ax.axhspan(0.9 * mean, 1.1 * mean, color="tab:blue", alpha=0.1, label="±10% of the mean after warm-up")
    ax.axvline(warmup_s / 60, color="grey", linestyle=":", label="end of warm-up")
    ax.set_ylabel("worker RSS (MB)")
    ax.set_ylim(0, max(rss.max(), 1.1 * mean) * 1.15)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"otel-insights worker, {summary['rate']:,.0f} spans/s, {WINDOW_S} s windows, "
                 f"{LATENESS_S} s lateness")
    axes[1].plot(t / 60, lag, color="tab:orange")
    axes[1].set_ylabel("consumer lag (records)")
    axes[1].set_ylim(bottom=0)
    if closes:
        axes[2].plot([c[0] / 60 for c in closes], [c[1] for c in closes], "o-", color="tab:green")
    axes[2].set_ylabel("window close ->\nqueryable (s)")
    axes[2].set_ylim(bottom=0)
    axes[2].set_xlabel("minutes since the traffic started")
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"  plot: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=600, help="traffic duration")
    ap.add_argument("--rate", type=float, default=10_000.0, help="spans per second")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS/lag samples")
    ap.add_argument("--warmup", type=float, default=180.0,
                    help="seconds before RSS counts (the first windows close at 90 s)")
    ap.add_argument("--out", type=Path, default=Path("docs/bench-soak.png"))
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, cpus {os.cpu_count()}")
    soak, start_ms, end_ms = run(args.seconds, args.rate, args.sample)
    summary = summarize(soak, args.seconds, start_ms, end_ms, args.warmup)
    plot(soak, start_ms, end_ms, args.warmup, summary, args.out)


if __name__ == "__main__":
    main()
