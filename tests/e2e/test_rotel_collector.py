"""OTel SDK -> rotel collector (Kafka exporter, zstd) -> Kafka -> pipeline -> ClickHouse rows."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SpanExporter

from tests.e2e.procs import RotelAgent, rotel_agent
from tests.e2e.sdk_traffic import assert_final_rows, send_requests
from tests.integration.harness import make_pipeline

pytestmark = pytest.mark.e2e

N = 30
ERRORS = {0, 7, 29}
DB_ERRORS = {4}


def _runnable_agent() -> tuple[Path | None, str]:
    agent = rotel_agent()
    if agent is None:
        return None, "the rotel wheel (rotel-agent binary) is not installed"
    try:
        done = subprocess.run([str(agent), "--version"], capture_output=True, timeout=20)
    except OSError as exc:  # wrong architecture, missing loader, ...
        return None, f"rotel-agent cannot run on this machine: {exc}"
    if done.returncode != 0:
        return None, f"rotel-agent cannot run on this machine: {done.stderr.decode(errors='replace')}"
    return agent, ""


AGENT, WHY_NOT = _runnable_agent()


def grpc_exporter(port: int) -> Callable[[], SpanExporter]:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return lambda: OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10)


@pytest.mark.skipif(AGENT is None, reason=WHY_NOT)
@pytest.mark.parametrize(("fmt", "encoding"), [("protobuf", "otlp_proto"), ("json", "otlp_json")])
def test_rotel_kafka_exporter_gives_exact_edges_and_health(broker, new_topic, unique_name, tmp_path,
                                                           fmt, encoding) -> None:
    assert AGENT is not None
    topic = new_topic("e2e-rotel")
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("rotel"), encoding=encoding,
                      window="2s", rekey="auto").start()
    try:
        with RotelAgent(AGENT, broker.bootstrap, topic, fmt, tmp_path) as agent:
            want = send_requests(grpc_exporter(agent.grpc_port), N, ERRORS, DB_ERRORS)
            assert_final_rows(p, want)
            agent.check_alive()
        assert p.metric("otel_insights_spans_total") == want.spans
        # rotel does not key records by trace id: every record went through the re-key topic.
        assert p.metric("otel_insights_rekeyed_records_total") > 0
        assert p.metric("otel_insights_dlq_records_total") == 0
        assert p.metric("otel_insights_late_spans_total") == 0
    finally:
        p.stop()


def _post_all(traces: list, url: str, per_request: int = 40, pause_s: float = 0.0) -> None:
    """POST the traces to rotel; ``pause_s`` between requests lets its 100 ms batch timeout
    flush small records (one 30k-span batch would exceed Kafka's 1 MB message limit)."""
    import asyncio

    import aiohttp

    from processor.generate.sinks import send_otlp_http

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            for i in range(0, len(traces), per_request):
                assert await send_otlp_http(traces[i:i + per_request], url, session) == 200
                await asyncio.sleep(pause_s)
    asyncio.run(run())


def _shop(start_ns: int, seconds: float) -> tuple[list, object]:
    from processor.generate import GroundTruth, ShopGenerator

    traces = [t for t in ShopGenerator(seed=48, rate=60, start_ns=start_ns).traces(seconds)
              if t.end_ns < start_ns + int(seconds * 1e9)]
    traces.sort(key=lambda t: t.end_ns)
    truth = GroundTruth(2_000_000_000)
    truth.add_all(traces)
    return traces, truth


@pytest.mark.skipif(AGENT is None, reason=WHY_NOT)
def test_rotel_unkeyed_traffic_becomes_final_while_flowing_and_a_backlog_is_exact(
        broker, new_topic, unique_name, tmp_path) -> None:
    """rotel's records have no key and land on random partitions of a 4-partition topic.
    Live: windows are final within window + lateness + a few seconds, while traffic still
    flows. Backlog: the same kind of traffic already in Kafka when the pipeline starts."""
    import time

    from tests.integration.harness import wait_until
    from tests.truth_compare import assert_exact, counts_match

    assert AGENT is not None
    topic = new_topic("e2e-rotel-live", partitions=4)
    w_ns = 2_000_000_000
    with RotelAgent(AGENT, broker.bootstrap, topic, "protobuf", tmp_path) as agent:
        url = f"http://127.0.0.1:{agent.http_port}/v1/traces"
        # Backlog first: 40 s of traffic from two minutes ago, all in Kafka before the start.
        back_start = (time.time_ns() // w_ns - 60) * w_ns
        backlog, back_truth = _shop(back_start, 40)
        _post_all(backlog, url, pause_s=0.15)
        time.sleep(1.0)  # rotel's batch timeout and linger
        p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("rl"), window="2s").start()
        try:
            wait_until(lambda: counts_match(back_truth, p.query("health"), p.query("edges")), 120,
                       "the backlog's final rows equal to ground truth", p)
            assert_exact(back_truth, p.query("health"), p.query("edges"))
            assert p.metric("otel_insights_late_spans_total") == 0
            assert not any("unknown" in (e["client"], e["server"]) for e in p.query("edges"))
            # Live: traffic from now on, each trace exported once it has ended.
            live_start = (time.time_ns() // w_ns + 1) * w_ns
            live, _ = _shop(live_start, 24)
            truth = back_truth
            truth.add_all(live)  # the backlog's windows all precede the live ones
            i, checked = 0, False
            while i < len(live):
                j = i
                while j < len(live) and live[j].end_ns <= time.time_ns():
                    j += 1
                if j > i:
                    _post_all(live[i:j], url)
                    i = j
                elapsed_s = (time.time_ns() - live_start) / 1e9
                if not checked and elapsed_s >= 16:
                    # 2 s windows, 2 s lateness, 1 s pairing TTL, rotel's 100 ms batches:
                    # windows ending 6 s ago must be final now, with traffic still flowing.
                    cut = (time.time_ns() - 6 * 10**9) // w_ns * w_ns
                    assert cut > live_start + 6 * 10**9
                    wait_until(lambda c=cut: counts_match(truth, p.query("health"), p.query("edges"),
                                                          before_ns=c), 4, "live windows final", p)
                    assert_exact(truth, p.query("health"), p.query("edges"), before_ns=cut)
                    assert i < len(live), "traffic ended before the check"
                    checked = True
                time.sleep(0.1)
            assert checked
        finally:
            p.stop()
