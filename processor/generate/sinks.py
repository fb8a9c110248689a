"""Where generated traffic goes: straight to a Kafka topic, or to an OTLP/HTTP endpoint."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.generate.output import to_records
from processor.generate.shop import GeneratedTrace


async def send_kafka(traces: Iterable[GeneratedTrace], brokers: list[str], topic: str,
                     encoding: str = "otlp_proto", chunk: int = 500,
                     security: Mapping[str, Any] | None = None) -> int:
    """Produce one record per trace keyed by hex trace id (acks=all); returns records sent.
    ``security``: aiokafka's tls/sasl options (KafkaReceiver.client_options)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=brokers, acks="all", linger_ms=5,
                                max_request_size=16 * 1024 * 1024, **(security or {}))
    await producer.start()
    sent = 0
    try:
        buf: list[GeneratedTrace] = []
        for tr in traces:
            buf.append(tr)
            if len(buf) >= chunk:
                sent += await produce_traces(producer, topic, buf, encoding)
                buf = []
        if buf:
            sent += await produce_traces(producer, topic, buf, encoding)
    finally:
        await producer.stop()
    return sent


async def produce_traces(producer: object, topic: str, traces: list[GeneratedTrace], encoding: str) -> int:
    """Send one record per trace keyed by hex trace id on a started producer; returns records sent."""
    futs = [await producer.send(topic, value=v, key=k)  # type: ignore[attr-defined]
            for k, v in to_records(traces, encoding)]
    await asyncio.gather(*futs)
    return len(futs)


async def send_kafka_unkeyed(traces: Iterable[GeneratedTrace], brokers: list[str], topic: str,
                             partitions: int, traces_per_record: int = 25) -> int:
    """Produce batches of traces with no key, round-robin over partitions, as a collector's
    kafka exporter does by default (spans of one trace land anywhere); returns records sent."""
    from aiokafka import AIOKafkaProducer
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    producer = AIOKafkaProducer(bootstrap_servers=brokers, acks="all", linger_ms=5,
                                max_request_size=16 * 1024 * 1024)
    await producer.start()
    futs, batch, sent = [], list(traces), 0
    try:
        for i in range(0, len(batch), traces_per_record):
            data = TracesData()
            for tr in batch[i:i + traces_per_record]:
                data.resource_spans.extend(tr.data.resource_spans)
            futs.append(await producer.send(topic, data.SerializeToString(), partition=sent % partitions))
            sent += 1
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return sent


def export_request(traces: list[GeneratedTrace]) -> bytes:
    req = ExportTraceServiceRequest()
    for tr in traces:
        req.resource_spans.extend(tr.data.resource_spans)
    return req.SerializeToString()


async def send_otlp_http(traces: list[GeneratedTrace], url: str, session: object) -> int:
    """POST one OTLP/HTTP protobuf request (gzip) for these traces; returns the HTTP status."""
    body = gzip.compress(export_request(traces), compresslevel=1)
    async with session.post(url, data=body, headers={  # type: ignore[attr-defined]
        "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}) as resp:
        await resp.read()
        return int(resp.status)
