"""receivers.kafka's keys as today's kafkareceiver spells them, on the real broker and worker:
several traces.topics, and initial_offset for the input topics only."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from processor.aggregate import rekey_codec
from processor.aggregate.rekey import Origin, origin_headers
from processor.generate import GroundTruth, ShopGenerator
from processor.generate.output import to_records
from processor.generate.sinks import send_kafka_unkeyed
from processor.localstack import free_port
from processor.otlp.batch import StringTable
from processor.otlp.decode import SpanDecoder
from tests.integration.harness import Pipeline, wait_until
from tests.truth_compare import assert_exact, counts_match

pytestmark = pytest.mark.integration
WINDOW_NS = 2_000_000_000

CONFIG = """
receivers:
  kafka:
    brokers: ["{bootstrap}"]
    group_id: {group}
    {initial_offset}
    traces: {{topics: {topics}, encoding: otlp_proto}}
    partitions: 2
    max_batch_wait: 100ms
    rekey_topic: {prefix}-rekeyed
    partials_topic: {prefix}-partials
processors:
  servicegraph: {{store: {{ttl: 1s}}}}
  windows: {{size: 2s, allowed_lateness: 30s, idle_timeout: 2s}}
exporters:
  clickhouse: {{endpoint: "chdb://{chdb}", ttl: 0s}}
  prometheus: {{endpoint: "127.0.0.1:{port}"}}
  kafka/dlq: {{topic: {prefix}-dlq}}
service:
  pipelines:
    traces: {{receivers: [kafka], processors: [servicegraph, windows], exporters: [clickhouse, prometheus]}}
"""


def _pipeline(tmp: Path, bootstrap: str, group: str, topics: list[str], prefix: str,
              initial_offset: str = "") -> Pipeline:
    port = free_port()
    cfg = tmp / f"{group}.yaml"
    cfg.write_text(CONFIG.format(bootstrap=bootstrap, group=group, topics=topics, prefix=prefix,
                                 initial_offset=initial_offset, chdb=tmp / f"{group}-chdb", port=port))
    return Pipeline(cfg, port, tmp / f"{group}.log")


def _traffic(seed: int, seconds: float) -> tuple[list[Any], GroundTruth]:
    start = (time.time_ns() // WINDOW_NS - 60) * WINDOW_NS
    traces = list(ShopGenerator(seed=seed, rate=100, start_ns=start).traces(seconds))
    truth = GroundTruth(WINDOW_NS)
    truth.add_all(traces)
    return traces, truth


def _rekey_records(traces: list[Any]) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    """The traces as an earlier worker re-keyed them onto one re-key partition: compact span
    records (processor.aggregate.rekey_codec), input partition 0 their origin, trace i its
    record i there."""
    strings = StringTable()
    payloads = [value for _, value in to_records(traces, "otlp_proto")]
    spans = SpanDecoder(strings).decode_records(payloads, "otlp_proto", list(range(len(payloads)))).batch
    return [(rekey_codec.encode(piece, strings),
             [*origin_headers(Origin(0, int(piece.offset[-1]), 0)), (rekey_codec.FORMAT_HEADER, rekey_codec.FORMAT)])
            for piece in rekey_codec.chunks(spans, 100)]


def test_several_topics_feed_one_pipeline_and_their_partitions_are_rekey_origins(
        broker: Any, new_topic: Any, unique_name: Any, tmp_path: Path) -> None:
    """Unkeyed records on two input topics go through the re-key topic: each input partition
    of each topic is an origin the re-key partitions wait for, so the totals are exact."""
    a, b = new_topic("in-a", partitions=2), new_topic("in-b", partitions=2)
    prefix = unique_name("multi")
    for t in (f"{prefix}-rekeyed", f"{prefix}-partials", f"{prefix}-dlq"):
        broker.create_topic(t, 2)
    traces, truth = _traffic(seed=51, seconds=8)
    p = _pipeline(tmp_path, broker.bootstrap, unique_name("g"), [a, b], prefix,
                  "initial_offset: earliest").start()
    try:
        half = len(traces) // 2
        asyncio.run(send_kafka_unkeyed(traces[:half], [broker.bootstrap], a, 2))
        asyncio.run(send_kafka_unkeyed(traces[half:], [broker.bootstrap], b, 2))
        wait_until(lambda: counts_match(truth, p.query("health"), p.query("edges")), 90,
                   "exact rows from both topics", p)
        assert_exact(truth, p.query("health"), p.query("edges"))
        assert p.metric("otel_insights_records_total", topic=a) > 0
        assert p.metric("otel_insights_records_total", topic=b) > 0
        assert p.metric("otel_insights_late_spans_total") == 0
    finally:
        p.stop()


def test_initial_offset_latest_skips_old_input_but_never_internal_records(
        broker: Any, new_topic: Any, unique_name: Any, tmp_path: Path) -> None:
    """A new group with the receiver's default `latest` starts the input topic at its end, as
    the collector does; a trace already waiting on the re-key topic (written by an earlier
    worker of the group that died before its first commit there) is still counted."""
    from aiokafka import AIOKafkaProducer

    topic = new_topic("in", partitions=1)
    prefix = unique_name("latest")
    broker.create_topic(f"{prefix}-rekeyed", 1)
    broker.create_topic(f"{prefix}-partials", 1)
    old, old_truth = _traffic(seed=61, seconds=2)
    rekeyed, truth = _traffic(seed=62, seconds=2)

    async def before_start() -> None:
        prod = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await prod.start()
        try:
            for key, value in to_records(old, "otlp_proto"):
                await prod.send_and_wait(topic, value, key=key)
            for value, headers in _rekey_records(rekeyed):
                await prod.send_and_wait(f"{prefix}-rekeyed", value, partition=0, headers=headers)
        finally:
            await prod.stop()

    asyncio.run(before_start())
    p = _pipeline(tmp_path, broker.bootstrap, unique_name("g"), [topic], prefix).start()
    try:
        wait_until(lambda: counts_match(truth, p.query("health"), p.query("edges")), 90,
                   "the re-keyed traces' rows (and none of the old input's)", p)
        assert_exact(truth, p.query("health"), p.query("edges"))
        assert old_truth.traces and p.metric("otel_insights_records_total", topic=topic) == 0
    finally:
        p.stop()
