"""End to end on the real local broker and chdb: exact totals, DLQ, kill -9 and restart."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from processor import failpoints
from processor.generate import GroundTruth, ShopGenerator
from processor.generate.sinks import send_kafka, send_kafka_unkeyed
from tests.integration.harness import Pipeline, make_pipeline, wait_until
from tests.truth_compare import assert_exact, counts_match, iso_to_ns

pytestmark = pytest.mark.integration
WINDOW_NS = 2_000_000_000


def _traffic(seed: int, seconds: float, rate: float = 150.0):
    start = (time.time_ns() // WINDOW_NS - 60) * WINDOW_NS  # a minute ago, window aligned
    traces = list(ShopGenerator(seed=seed, rate=rate, start_ns=start).traces(seconds))
    truth = GroundTruth(WINDOW_NS)
    truth.add_all(traces)
    return traces, truth


def _wait_exact(p, truth, timeout_s: float = 90) -> None:
    try:
        wait_until(lambda: counts_match(truth, p.query("health"), p.query("edges")),
                   timeout_s, "final rows equal to ground truth", p)
    finally:
        # On timeout this names the first differing key instead of only "timed out".
        assert_exact(truth, p.query("health"), p.query("edges"))


def _restart_and_expect(p: Pipeline, truth, tmp_path) -> Pipeline:
    """A worker with the killed one's config (group, chdb directory, port) ends exact,
    having dropped nothing as too late; returns it, stopped."""
    p2 = Pipeline(p.config_path, p.port, tmp_path / "restart.log")
    try:
        p2.start()
        _wait_exact(p2, truth, timeout_s=120)
        assert p2.metric("otel_insights_late_spans_total", action="dropped") == 0
    finally:
        p2.stop()
    return p2


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_generated_traffic_matches_ground_truth(broker, new_topic, unique_name, tmp_path, encoding) -> None:
    topic = new_topic("spans")
    traces, truth = _traffic(seed=11, seconds=12)
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("g"), encoding=encoding).start()
    try:
        asyncio.run(send_kafka(traces, [broker.bootstrap], topic, encoding))
        _wait_exact(p, truth)
        assert p.metric("otel_insights_spans_total") == sum(t.span_count for t in traces)
        assert p.metric("traces_service_graph_request_total") >= sum(
            v["requests"] for v in truth.edge_windows().values())
        assert p.metric("otel_insights_late_spans_total") == 0
    finally:
        p.stop()


def test_undecodable_records_go_to_dlq_and_processing_continues(broker, new_topic, unique_name, tmp_path) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = new_topic("spans")
    traces, truth = _traffic(seed=5, seconds=6)
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("d")).start()
    bad = [b"\xff\x00not a protobuf", b'{"resourceSpans": "nope"}']

    async def produce_and_read_dlq() -> list:
        prod = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await prod.start()
        for i, b in enumerate(bad):
            await prod.send_and_wait(topic, b, key=f"{i:032x}".encode())
        await prod.stop()
        await send_kafka(traces, [broker.bootstrap], topic)
        c = AIOKafkaConsumer(f"{topic}-dlq", bootstrap_servers=broker.bootstrap,
                             auto_offset_reset="earliest")
        await c.start()
        got: list = []
        try:
            deadline = time.monotonic() + 60
            while len(got) < len(bad) and time.monotonic() < deadline:
                for msgs in (await c.getmany(timeout_ms=1000)).values():
                    got += msgs
        finally:
            await c.stop()
        return got

    try:
        dlq = asyncio.run(produce_and_read_dlq())
        assert sorted(m.value for m in dlq) == sorted(bad)
        for m in dlq:
            headers = dict(m.headers)
            assert headers["otel-insights-error"]
            assert headers["otel-insights-topic"] == topic.encode()
        _wait_exact(p, truth)
        assert p.metric("otel_insights_dlq_records_total") == len(bad)
    finally:
        p.stop()


def test_kill_and_restart_ends_with_exact_totals(broker, new_topic, unique_name, tmp_path) -> None:
    topic = new_topic("spans")
    traces, truth = _traffic(seed=23, seconds=20, rate=200)
    group = unique_name("k")
    p = make_pipeline(tmp_path, broker.bootstrap, topic, group).start()
    half = len(traces) // 2
    asyncio.run(send_kafka(traces[:half], [broker.bootstrap], topic))
    # Kill once some windows are final, so the restart must not double count them.
    wait_until(lambda: len(p.query("health")) > 0, 60, "first final windows", p)
    p.stop(signal.SIGKILL)
    asyncio.run(send_kafka(traces[half:], [broker.bootstrap], topic))
    # Same config (group, chdb directory, port) as the killed worker.
    p2 = Pipeline(p.config_path, p.port, tmp_path / "restart.log")
    try:
        p2.start()
        _wait_exact(p2, truth, timeout_s=120)
    finally:
        p2.stop()


def test_late_traces_correct_final_windows_and_survive_a_kill(broker, new_topic, unique_name, tmp_path) -> None:
    """Traces a retried export delivers long after their windows were final (many times the
    2 s lateness) correct those windows; the worker is killed as soon as it has applied
    some, and the restart neither loses nor doubles a correction."""
    topic = new_topic("spans")
    traces, truth = _traffic(seed=29, seconds=20, rate=200)
    late = traces[:len(traces) // 2][3::7]
    held = {id(tr) for tr in late}
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("l")).start()
    asyncio.run(send_kafka([tr for tr in traces if id(tr) not in held], [broker.bootstrap], topic))
    first_late = min(tr.end_ns for tr in late) // WINDOW_NS * WINDOW_NS
    wait_until(lambda: any(iso_to_ns(r["window_start"]) == first_late for r in p.query("health")),
               60, "the late traces' first window final", p)
    asyncio.run(send_kafka(late, [broker.bootstrap], topic))
    wait_until(lambda: p.metric("otel_insights_late_spans_total", action="corrected") > 0, 60,
               "late spans applied as corrections", p)
    p.stop(signal.SIGKILL)
    _restart_and_expect(p, truth, tmp_path)


def test_records_not_keyed_by_trace_id_are_rekeyed(broker, new_topic, unique_name, tmp_path) -> None:
    """A collector batching many traces per unkeyed record still gives exact edges, with the
    default 2 s lateness: the re-key partitions' event time is capped at their slowest
    origin, so consuming the input partitions one after another makes nothing late."""
    topic = new_topic("spans")
    traces, truth = _traffic(seed=31, seconds=8)
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("r")).start()
    try:
        asyncio.run(send_kafka_unkeyed(traces, [broker.bootstrap], topic, 3))
        _wait_exact(p, truth)
        assert p.metric("otel_insights_rekeyed_records_total") == (len(traces) + 24) // 25
        assert p.metric("otel_insights_late_spans_total") == 0
    finally:
        p.stop()


@pytest.mark.parametrize(("point", "hit", "keyed"), [
    ("stage1.partials_written", 3, True),
    ("stage1.keys_announced", 3, True),
    ("stage1.watermark_saved", 3, True),
    ("stage1.rekeyed", 1, False),
    ("stage2.final_written", 1, True),
])
def test_sigkill_at_each_step_of_the_hand_over_ends_exact(broker, new_topic, unique_name, tmp_path,
                                                          point: str, hit: int, keyed: bool) -> None:
    """The worker SIGKILLs itself at a named step (processor.failpoints) in the middle of a
    backlog; a restart without the failpoint must end with exactly the ground truth.

    Keyed input comes on one partition: with several, another partition usually announces
    the same entity's window and hides a key the killed one never announced."""
    topic = new_topic("spans", partitions=1 if keyed else 3)
    traces, truth = _traffic(seed=37, seconds=12, rate=150)
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("f"))
    p.env = {failpoints.ENV: f"{point}={hit}"}
    p.start()
    try:
        if keyed:
            asyncio.run(send_kafka(traces, [broker.bootstrap], topic))
        else:
            asyncio.run(send_kafka_unkeyed(traces, [broker.bootstrap], topic, 3))
        assert p.proc is not None
        assert p.proc.wait(timeout=90) == -signal.SIGKILL, p.log()
    finally:
        p.stop()
    assert f"failpoint {point} reached" in p.log()
    _restart_and_expect(p, truth, tmp_path)


def test_rekey_partitions_resume_with_what_they_applied_after_a_kill(
        broker, new_topic, unique_name, tmp_path) -> None:
    """Unkeyed traffic in two halves: the worker commits its re-key partitions after the
    first (storing what they applied), then SIGKILLs itself while storing it again. The
    restart resumes them from the stored rows, not from nothing, and ends exact."""
    topic = new_topic("spans", partitions=3)
    traces, truth = _traffic(seed=38, seconds=12, rate=150)
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("o"))
    p.env = {failpoints.ENV: "stage1.origins_stored=2"}
    p.start()
    try:
        half = len(traces) // 2
        asyncio.run(send_kafka_unkeyed(traces[:half], [broker.bootstrap], topic, 3))
        wait_until(lambda: len(p.query("edges")) > 0, 60, "first final rows", p)
        asyncio.run(send_kafka_unkeyed(traces[half:], [broker.bootstrap], topic, 3))
        assert p.proc is not None
        assert p.proc.wait(timeout=90) == -signal.SIGKILL, p.log()
    finally:
        p.stop()
    assert "failpoint stage1.origins_stored reached (hit 2)" in p.log()
    restarted = _restart_and_expect(p, truth, tmp_path).log()
    assert "knowing what it applied" in restarted, restarted
    assert "with nothing stored for it" not in restarted
