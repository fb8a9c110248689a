"""Decode throughput: TracesData.FromString alone vs SpanDecoder proto / JSON, in spans/s.

Generates realistic traces (20 spans per trace over 5 services, HTTP/DB/messaging attributes,
SDK-like resources) and prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_decode.py [--spans 200000] [--traces-per-payload 50]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from processor.otlp.batch import StringTable
from processor.otlp.decode import SpanDecoder
from processor.otlp.encode import encode_json

SERVICES = ["frontend", "checkout", "cart", "payment", "inventory"]
SPANS_PER_TRACE = 20
SPANS_PER_SERVICE = SPANS_PER_TRACE // len(SERVICES)


def _kv(key: str, value: object) -> common_pb2.KeyValue:
    kv = common_pb2.KeyValue(key=key)
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.string_value = str(value)
    return kv


def _resource_attrs(service: str, rng: random.Random) -> list[common_pb2.KeyValue]:
    return [
        _kv("service.name", service),
        _kv("service.version", "1.4.2"),
        _kv("service.instance.id", f"{service}-{rng.randrange(3)}"),
        _kv("telemetry.sdk.language", "python"),
        _kv("telemetry.sdk.name", "opentelemetry"),
        _kv("telemetry.sdk.version", "1.27.0"),
        _kv("host.name", f"node-{rng.randrange(4)}"),
    ]


def _span_attrs(kind: int, i: int, rng: random.Random) -> list[common_pb2.KeyValue]:
    if kind == trace_pb2.Span.SPAN_KIND_SERVER:
        return [
            _kv("http.request.method", "GET"),
            _kv("http.route", "/api/items/{id}"),
            _kv("url.path", f"/api/items/{rng.randrange(10_000)}"),
            _kv("http.response.status_code", 200),
            _kv("server.address", "api.internal"),
        ]
    if kind == trace_pb2.Span.SPAN_KIND_CLIENT and i % 2:
        return [
            _kv("db.system", "postgresql"),
            _kv("db.namespace", "orders"),
            _kv("db.query.text", f"SELECT * FROM orders WHERE id = {rng.randrange(10_000)}"),
            _kv("server.address", "pg-primary"),
            _kv("server.port", 5432),
        ]
    if kind == trace_pb2.Span.SPAN_KIND_CLIENT:
        return [
            _kv("http.request.method", "POST"),
            _kv("url.full", f"http://cart:8080/api/cart/{rng.randrange(10_000)}"),
            _kv("peer.service", "cart"),
            _kv("server.address", "cart"),
            _kv("http.response.status_code", 200),
        ]
    if kind in (trace_pb2.Span.SPAN_KIND_PRODUCER, trace_pb2.Span.SPAN_KIND_CONSUMER):
        return [
            _kv("messaging.system", "kafka"),
            _kv("messaging.destination.name", "orders"),
            _kv("messaging.operation.type", "publish"),
        ]
    return [_kv("code.function.name", "render"), _kv("thread.id", rng.randrange(64))]


_KIND_CYCLE = [
    trace_pb2.Span.SPAN_KIND_SERVER,
    trace_pb2.Span.SPAN_KIND_CLIENT,
    trace_pb2.Span.SPAN_KIND_INTERNAL,
    trace_pb2.Span.SPAN_KIND_CLIENT,
]


def make_payload(
    traces: int, rng: random.Random, t0_ns: int = 1_700_000_000_000_000_000
) -> trace_pb2.TracesData:
    """`traces` traces of 20 spans, each trace as 5 ResourceSpans (one per service)."""
    msg = trace_pb2.TracesData()
    for _ in range(traces):
        trace_id = rng.randbytes(16)
        parent = b""
        for service in SERVICES:
            rs = msg.resource_spans.add()
            rs.resource.attributes.extend(_resource_attrs(service, rng))
            scope = rs.scope_spans.add()
            scope.scope.name = "opentelemetry.instrumentation.flask"
            scope.scope.version = "0.48b0"
            for i in range(SPANS_PER_SERVICE):
                kind = _KIND_CYCLE[i % len(_KIND_CYCLE)]
                if service == "inventory" and i == 3:
                    kind = trace_pb2.Span.SPAN_KIND_PRODUCER
                span = scope.spans.add(
                    trace_id=trace_id,
                    span_id=rng.randbytes(8),
                    parent_span_id=parent,
                    name=f"{service} op {i}",
                    kind=kind,  # type: ignore[arg-type]
                    start_time_unix_nano=t0_ns + i * 1_000_000,
                    end_time_unix_nano=t0_ns + i * 1_000_000 + rng.randrange(50_000_000),
                )
                span.attributes.extend(_span_attrs(kind, i, rng))
                if rng.random() < 0.05:
                    span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
                    span.status.message = "boom"
                if kind == trace_pb2.Span.SPAN_KIND_PRODUCER:
                    span.links.add(trace_id=rng.randbytes(16), span_id=rng.randbytes(8))
                parent = span.span_id
    return msg


def _rate(fn: Callable[[], object], spans: int, min_seconds: float = 1.0) -> float:
    fn()  # warm caches (string table, resource cache)
    reps, elapsed = 0, 0.0
    start = time.perf_counter()
    while elapsed < min_seconds:
        fn()
        reps += 1
        elapsed = time.perf_counter() - start
    return spans * reps / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--spans", type=int, default=200_000, help="spans per measured round")
    ap.add_argument("--traces-per-payload", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=1.0, help="minimum time per figure")
    args = ap.parse_args()
    rng = random.Random(7)
    payload_count = max(1, args.spans // (SPANS_PER_TRACE * args.traces_per_payload))
    messages = [make_payload(args.traces_per_payload, rng) for _ in range(payload_count)]
    protos = [m.SerializeToString() for m in messages]
    jsons = [encode_json(m) for m in messages]
    # Single-trace records, as the gateway and collectors write them to Kafka.
    per_trace = [
        make_payload(1, rng).SerializeToString() for _ in range(args.spans // SPANS_PER_TRACE)
    ]
    n = payload_count * args.traces_per_payload * SPANS_PER_TRACE
    n_small = len(per_trace) * SPANS_PER_TRACE
    decoder = SpanDecoder(StringTable())
    from_string = trace_pb2.TracesData.FromString

    print(
        f"protobuf runtime: {os.environ.get('PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION', 'default')}"
        f" / {_api_type()}"
    )
    print(
        f"{payload_count} payloads x {args.traces_per_payload} traces x {SPANS_PER_TRACE} spans"
        f" = {n} spans; proto {sum(map(len, protos)) / n:.0f} B/span,"
        f" json {sum(map(len, jsons)) / n:.0f} B/span"
    )
    figures = [
        ("(a) TracesData.FromString", n, lambda: [from_string(p) for p in protos]),
        ("(b) decode_proto", n, lambda: [decoder.decode_proto(p) for p in protos]),
        ("(c) decode_json", n, lambda: [decoder.decode_json(p) for p in jsons]),
        ("(a) FromString, 1-trace records", n_small, lambda: [from_string(p) for p in per_trace]),
        (
            "(b) decode_proto, 1-trace records",
            n_small,
            lambda: [decoder.decode_proto(p) for p in per_trace],
        ),
        (
            "(d) decode_records x500, 1-trace records",
            n_small,
            lambda: [
                decoder.decode_records(per_trace[i : i + 500], "otlp_proto")
                for i in range(0, len(per_trace), 500)
            ],
        ),
    ]
    for name, spans, fn in figures:
        print(f"{name:44s} {_rate(fn, spans, args.seconds):>12,.0f} spans/s")


def _api_type() -> str:
    from google.protobuf.internal import api_implementation

    return str(api_implementation.Type())


if __name__ == "__main__":
    main()
