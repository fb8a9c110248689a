"""Throughput and memory of the hot path, printed (never asserted).

  .venv/bin/python benchmarks/bench_pipeline.py [--spans 400000] [--e2e] [--dimensions A,B]

On the same generated shop traffic it measures, single-threaded:
  1. upb parse-only ceiling  (TracesData.FromString)
  2. decode to columnar batch (SpanDecoder.decode_proto)
  3. decode + pair + window   (PartitionAggregator, no Kafka)
  4. with --e2e: end to end through the local broker into chdb (the real `run` process)
and peak RSS of a process holding 100,000 spans waiting in the pairing store.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.proto.trace.v1.trace_pb2 import TracesData  # noqa: E402

from processor.aggregate.partition import PartitionAggregator  # noqa: E402
from processor.config import ServiceGraphConfig, StoreConfig, WindowsConfig  # noqa: E402
from processor.generate import ShopGenerator  # noqa: E402
from processor.otlp.batch import StringTable  # noqa: E402
from processor.otlp.decode import SpanDecoder  # noqa: E402


def make_records(n_spans: int, traces_per_record: int = 1) -> tuple[list[bytes], int]:
    gen = ShopGenerator(seed=1, rate=2000, start_ns=time.time_ns() - 3600 * 10**9)
    records, spans, buf = [], 0, TracesData()
    for i, tr in enumerate(gen.traces(3600)):
        buf.resource_spans.extend(tr.data.resource_spans)
        spans += tr.span_count
        if (i + 1) % traces_per_record == 0:
            records.append(buf.SerializeToString())
            buf = TracesData()
        if spans >= n_spans:
            break
    if buf.resource_spans:
        records.append(buf.SerializeToString())
    return records, spans


def rate(label: str, spans: int, seconds: float) -> None:
    print(f"  {label:<38} {spans / seconds:>12,.0f} spans/s   ({seconds:.2f} s)")


def bench_inprocess(n_spans: int, dimensions: tuple[str, ...] = ()) -> None:
    records, spans = make_records(n_spans)
    mb = sum(map(len, records)) / 1e6
    print(f"data: {spans:,} spans in {len(records):,} records (one trace per record, {mb:.1f} MB)")
    gc.collect()
    t = time.perf_counter()
    for r in records:
        TracesData.FromString(r)
    rate("upb parse-only ceiling", spans, time.perf_counter() - t)

    dec = SpanDecoder(StringTable())
    t = time.perf_counter()
    for r in records:
        dec.decode_proto(r)
    rate("decode one record at a time", spans, time.perf_counter() - t)

    dec = SpanDecoder(StringTable())
    t = time.perf_counter()
    for i in range(0, len(records), 200):
        dec.decode_records(records[i:i + 200], "otlp_proto")
    rate("decode_records, 200 per call", spans, time.perf_counter() - t)

    for dims in ((), dimensions) if dimensions else ((),):
        graph = ServiceGraphConfig(store=StoreConfig(ttl="2s", max_items=100_000), dimensions=dims)
        strings = StringTable()
        dec = SpanDecoder(strings, graph)
        agg = PartitionAggregator("bench", 0, strings, graph,
                                  WindowsConfig(size="60s", allowed_lateness="30s"))
        batch_records = 200  # what one take_events batch holds in `run`
        t = time.perf_counter()
        for i in range(0, len(records), batch_records):
            chunk = records[i:i + batch_records]
            batch = dec.decode_records(chunk, "otlp_proto", list(range(i, i + len(chunk)))).batch
            agg.add(batch, next_offset=i + len(chunk))
            agg.take_completed()  # what stage 1 hands to the traces_service_graph_* series
            agg.flush_closed()
        label = f", {len(dims)} dimensions" if dims else ""
        rate(f"decode + pair + window (1 core{label})", spans, time.perf_counter() - t)


def bench_store_memory(waiting: int) -> None:
    """RSS with `waiting` client spans parked in the pairing store (no servers arrive)."""
    code = f"""
import resource, numpy as np
from processor.otlp.batch import SpanBatch, StringTable
from processor.config import StoreConfig
from processor.graph import PairingStore
st = StringTable(); s = PairingStore(st, StoreConfig(ttl="1000000s", max_items=10**7))
n = {waiting}; rng = np.random.default_rng(0)
b = SpanBatch.from_columns(dict(trace_hi=rng.integers(1, 2**63, n, dtype=np.uint64),
    trace_lo=rng.integers(1, 2**63, n, dtype=np.uint64), span_id=rng.integers(1, 2**63, n, dtype=np.uint64),
    parent_span_id=rng.integers(1, 2**63, n, dtype=np.uint64), service=np.full(n, st.code('svc')),
    kind=np.full(n, 3), start_ns=np.arange(n), end_ns=np.arange(n) + 10, offset=np.arange(n)))
for i in range(0, n, 1000):
    s.add(b.take(np.arange(i, min(n, i + 1000))))
print(len(s), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""
    outp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    held, rss = outp.stdout.split()
    print(f"  peak RSS with {int(held):,} spans waiting in the pairing store: {rss} MB")


def bench_e2e(n_spans: int, batch: int, workers: int = 1, keyed: bool = True) -> None:
    """The `run` process on a backlog: start-up (process start to first span) apart from the
    steady-state rate (first span to last)."""
    from processor.generate.sinks import send_kafka, send_kafka_unkeyed
    from processor.localstack import LocalBroker
    from tests.integration.harness import Pipeline, make_pipeline

    gen = ShopGenerator(seed=2, rate=2000, start_ns=time.time_ns() - 600 * 10**9)
    traces, spans = [], 0
    for tr in gen.traces(600):
        traces.append(tr)
        spans += tr.span_count
        if spans >= n_spans:
            break
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        broker.create_topic("bench", 3)
        if keyed:
            asyncio.run(send_kafka(traces, [broker.bootstrap], "bench"))
        else:
            asyncio.run(send_kafka_unkeyed(traces, [broker.bootstrap], "bench", 3))
        shared = None
        if workers > 1:
            from tests.chshim import start_shim
            shared = start_shim(Path(tmp) / "clickhouse")
        from processor.localstack import free_port

        first = make_pipeline(Path(tmp), broker.bootstrap, "bench", "bench", window="10s", batch=batch,
                              clickhouse=shared.url if shared else None)
        ps: list[Pipeline] = [first]
        for i in range(1, workers):  # same group, own metrics port
            port = free_port()
            cfg = first.config_path.with_name(f"bench{i}.yaml")
            cfg.write_text(first.config_path.read_text().replace(f":{first.port}", f":{port}"))
            ps.append(Pipeline(cfg, port, Path(tmp) / f"bench{i}.log"))
        t0 = time.perf_counter()
        for p in ps:
            p.start()

        def consumed() -> float:
            return sum(p.metric("otel_insights_spans_total") for p in ps)

        deadline = time.monotonic() + 600
        while consumed() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        t_first = time.perf_counter()
        while consumed() < spans and time.monotonic() < deadline:
            time.sleep(0.2)
        t_done = time.perf_counter()
        rss_kb = max(_rss_kb(p.proc.pid) for p in ps if p.proc)
        for p in ps:
            p.stop()
        if shared:
            shared.stop()
    print(f"  end to end via broker into chdb, {workers} worker(s), {'keyed' if keyed else 'unkeyed (re-keyed)'}: "
          f"{spans / (t_done - t_first):>10,.0f} spans/s steady "
          f"({spans:,} spans in {t_done - t_first:.1f} s after {t_first - t0:.1f} s of start-up; "
          f"max_batch_records {batch}; worker peak RSS {rss_kb // 1024} MB)")


def bench_detect_share(seconds: int, rate: float) -> None:
    """Stage-2 and detection wall time inside a real worker (its busy-time counters)."""
    from processor.generate.sinks import send_kafka
    from processor.localstack import LocalBroker
    from tests.integration.harness import make_pipeline

    window_s = 2
    start = (time.time_ns() // 10**9 - seconds - 30) // window_s * window_s * 10**9
    gen = ShopGenerator(seed=3, rate=rate, start_ns=start)
    traces = [t for t in gen.traces(seconds) if t.end_ns < start + seconds * 10**9]
    last_window_s = max(t.end_ns for t in traces) // 10**9 // window_s * window_s
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        broker.create_topic("bench", 3)
        asyncio.run(send_kafka(traces, [broker.bootstrap], "bench"))
        p = make_pipeline(Path(tmp), broker.bootstrap, "bench", "bench", window=f"{window_s}s", anomaly=True)
        p.start()
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if p.metric("otel_insights_anomaly_judged_window_seconds") >= last_window_s - window_s:
                break
            time.sleep(1.0)
        busy = {step: p.metric("otel_insights_stage_busy_seconds_total", step=step)
                for step in ("stage1", "stage2", "detection", "detection_io")}
        rows = p.metric("otel_insights_windows_finalized_total")
        published = p.metric("otel_insights_anomalies_total")
        p.stop()
    share = busy["detection"] / (busy["stage2"] + busy["detection"])
    io_share = (busy["detection"] + busy["detection_io"]) / (busy["stage2"] + busy["detection"] + busy["detection_io"])
    print(f"  detection in a worker: {seconds} s of traffic at {rate:.0f} traces/s, {window_s} s windows, "
          f"{rows:,.0f} final rows")
    print(f"    busy seconds: stage1 {busy['stage1']:.2f}, stage2 {busy['stage2']:.2f}, "
          f"detection {busy['detection']:.2f} (judging) + {busy['detection_io']:.2f} (its ClickHouse calls: reads, "
          f"{published:,.0f} anomalies published, progress)")
    print(f"    judging is {100 * share:.1f}% of stage 2 + judging ({1e6 * busy['detection'] / max(rows, 1):.0f} us "
          f"per final row); with its ClickHouse calls {100 * io_share:.1f}%")


def bench_insights(seconds: int, rate: float) -> None:
    """Stage 2's busy time with stage 3 off and on, on the same backlog with faults in it."""
    from processor.generate import FaultSpec
    from processor.generate.sinks import send_kafka
    from processor.localstack import LocalBroker
    from tests.integration.harness import make_pipeline

    window_s = 2
    start = (time.time_ns() // 10**9 - seconds - 30) // window_s * window_s * 10**9
    faults = [FaultSpec(kind, target, start + int(at * 10**9), start + int((at + 12) * 10**9), mag)
              for at, kind, target, mag in ((0.4 * seconds, "latency_shift", "product-catalog", 5.0),
                                            (0.7 * seconds, "error_burst", "cart", 0.3))]
    gen = ShopGenerator(seed=3, rate=rate, start_ns=start, faults=faults)
    traces = [t for t in gen.traces(seconds) if t.end_ns < start + seconds * 10**9]
    last_window_s = max(t.end_ns for t in traces) // 10**9 // window_s * window_s
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        for narrator in (False, True):
            topic = f"bench-{int(narrator)}"
            broker.create_topic(topic, 3)
            asyncio.run(send_kafka(traces, [broker.bootstrap], topic))
            p = make_pipeline(Path(tmp), broker.bootstrap, topic, topic, window=f"{window_s}s", anomaly=True,
                              narrator=narrator, cooldown="5s")
            t0 = time.monotonic()
            p.start()
            while time.monotonic() - t0 < 900:
                if p.metric("otel_insights_anomaly_judged_window_seconds") >= last_window_s - window_s:
                    break
                time.sleep(0.5)
            wall = time.monotonic() - t0
            busy = {step: p.metric("otel_insights_stage_busy_seconds_total", step=step)
                    for step in ("stage1", "stage2", "detection", "insights")}
            rows = p.metric("otel_insights_windows_finalized_total")
            published = p.metric("otel_insights_insights_total")
            p.stop()
            print(f"  stage 3 {'on ' if narrator else 'off'}: {seconds} s backlog at {rate:.0f} traces/s, "
                  f"{rows:,.0f} final rows in {wall:.1f} s (start to last window judged); busy s: stage1 "
                  f"{busy['stage1']:.2f}, stage2 {busy['stage2']:.2f} ({1e6 * busy['stage2'] / max(rows, 1):.0f} us "
                  f"per final row), detection {busy['detection']:.2f}, insights {busy['insights']:.2f} "
                  f"({published:.0f} versions published)")


def bench_live(seconds: int, span_rate: float) -> None:
    """Production-shaped live traffic (60 s windows, 30 s lateness): worker peak RSS, and how
    long after a window closes (its end + allowed lateness, event time being wall time here)
    its final rows are queryable, polled from the ClickHouse the worker writes to."""
    from aiokafka import AIOKafkaProducer

    from processor.config import load_config
    from processor.generate.sinks import produce_traces
    from processor.localstack import LocalBroker
    from processor.storage.open import open_store
    from tests.chshim import start_shim
    from tests.integration.harness import make_pipeline

    lateness_ms = 30_000
    probe = list(ShopGenerator(seed=5, rate=500, start_ns=0).traces(4))
    per_trace = sum(t.span_count for t in probe) / len(probe)
    first_seen: dict[int, float] = {}  # window end (ms) -> wall time its final rows were first read
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        broker.create_topic("live", 3)
        shim = start_shim(Path(tmp) / "clickhouse")
        p = make_pipeline(Path(tmp), broker.bootstrap, "live", "live", window="60s", lateness="30s",
                          batch=2000, clickhouse=shim.url).start()
        cfg = load_config(p.config_path).clickhouse
        assert cfg is not None
        poller = open_store(cfg)
        sql = poller._sql("SELECT DISTINCT toUnixTimestamp64Milli(window_end) AS we FROM {db}.service_health")
        start_ns = (time.time_ns() // 10**9 + 2) * 10**9
        gen = ShopGenerator(seed=5, rate=span_rate / per_trace, start_ns=start_ns)
        sent = 0

        async def poll() -> None:
            rows = await asyncio.to_thread(poller.backend.query, sql)
            now = time.time()
            for r in rows:
                first_seen.setdefault(int(r["we"]), now)

        async def traffic() -> None:
            nonlocal sent
            producer = AIOKafkaProducer(bootstrap_servers=[broker.bootstrap], acks="all", linger_ms=5)
            await producer.start()
            try:
                slice_ns, buf = 250_000_000, list[Any]()
                edge = start_ns + slice_ns
                next_poll = time.time()
                for tr in gen.traces(seconds):
                    if tr.start_ns >= edge:  # send a slice once its traces have ended
                        await asyncio.sleep(max(0.0, (edge + 50_000_000) / 1e9 - time.time()))
                        await produce_traces(producer, "live", buf, "otlp_proto")
                        sent += sum(t.span_count for t in buf)
                        buf, edge = [], edge + slice_ns
                        if time.time() >= next_poll:
                            await poll()
                            next_poll = time.time() + 0.25
                    buf.append(tr)
            finally:
                await producer.stop()

        asyncio.run(traffic())
        traffic_end_ms = start_ns // 10**6 + seconds * 1000
        rss_kb = _rss_kb(p.proc.pid) if p.proc else 0
        p.stop()
        poller.close()
        shim.stop()
    # Windows closed by the watermark while traffic still flowed (later ones close on idleness).
    lags = sorted(first_seen[we] - (we + lateness_ms) / 1000 for we in first_seen
                  if we + lateness_ms <= traffic_end_ms - 2000 and we > start_ns // 10**6)
    print(f"  live: {sent / seconds:,.0f} spans/s for {seconds} s, keyed, 3 partitions, 60 s windows, "
          f"30 s lateness, chdb behind the HTTP shim: worker peak RSS {rss_kb // 1024} MB")
    if lags:
        print(f"    window close -> final rows queryable (polled every 0.25 s), {len(lags)} windows: "
              f"p50 {np.percentile(lags, 50):.2f} s, p99 {np.percentile(lags, 99):.2f} s, max {lags[-1]:.2f} s")
    else:
        print("    no window closed while traffic flowed: run longer (--live >= 150)")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=400_000)
    ap.add_argument("--dimensions", default="", metavar="A,B",
                    help="also time decode + pair + window with these servicegraph dimensions")
    ap.add_argument("--e2e", action="store_true", help="also run through the local broker into chdb")
    ap.add_argument("--batch", type=int, default=2000, help="receivers.kafka.max_batch_records for --e2e")
    ap.add_argument("--e2e-cases", default="keyed,unkeyed,two-workers",
                    help="which --e2e runs, comma-separated: keyed, unkeyed, two-workers")
    ap.add_argument("--detect", type=int, default=0, metavar="SECONDS",
                    help="also measure detection's share of stage 2 in a worker on this much traffic")
    ap.add_argument("--rate", type=float, default=200.0, help="traces/s for --detect")
    ap.add_argument("--live", type=int, default=0, metavar="SECONDS",
                    help="also run paced live traffic at --live-rate spans/s (RSS, close-to-queryable)")
    ap.add_argument("--live-rate", type=float, default=20_000.0, help="spans/s for --live")
    ap.add_argument("--insights", type=int, default=0, metavar="SECONDS",
                    help="also compare stage 2 with stage 3 off and on, on a backlog with faults")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, cpus {os.cpu_count()}")
    bench_inprocess(args.spans, tuple(d for d in args.dimensions.split(",") if d))
    bench_store_memory(100_000)
    cases = set(args.e2e_cases.split(","))
    if args.e2e and "keyed" in cases:
        bench_e2e(args.spans, args.batch)
    if args.e2e and "unkeyed" in cases:
        bench_e2e(args.spans, args.batch, keyed=False)
    if args.e2e and "two-workers" in cases:
        bench_e2e(args.spans, args.batch, workers=2)
    if args.detect:
        bench_detect_share(args.detect, args.rate)
    if args.live:
        bench_live(args.live, args.live_rate)
    if args.insights:
        bench_insights(args.insights, args.rate)
    print(f"  bench process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")


if __name__ == "__main__":
    main()
