"""Hostile input for tests: a flood of made-up service names, compression bombs."""

from __future__ import annotations

import os

import cramjam
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import (
    ResourceSpans,
    ScopeSpans,
    Span,
    Status,
    TracesData,
)


def distinct_services(n: int, end_ns: int, spread_ns: int, errors_every: int = 7,
                      prefix: str = "svc") -> list[tuple[bytes, bytes]]:
    """``n`` traces, each one root SERVER span of its own service ``<prefix>-<i>`` (a call of
    that service and a `user -> service` edge), ending in [end_ns, end_ns + spread_ns), every
    ``errors_every``-th failed; as (key, value) records keyed by trace id."""
    out = []
    for i in range(n):
        trace_id = os.urandom(16)
        end = end_ns + (i * spread_ns) // max(n, 1)
        span = Span(trace_id=trace_id, span_id=os.urandom(8), name="GET /", kind=Span.SPAN_KIND_SERVER,
                    start_time_unix_nano=end - 5_000_000, end_time_unix_nano=end,
                    status=Status(code=Status.STATUS_CODE_ERROR if i % errors_every == 0 else 0))
        resource = Resource(attributes=[KeyValue(key="service.name",
                                                 value=AnyValue(string_value=f"{prefix}-{i:06d}"))])
        data = TracesData(resource_spans=[ResourceSpans(resource=resource,
                                                        scope_spans=[ScopeSpans(spans=[span])])])
        out.append((trace_id.hex().encode(), data.SerializeToString()))
    return out


def compression_bomb(inflated_bytes: int, codec: str = "zstd") -> bytes:
    """A ``codec`` payload (starting with its magic, as a producer-compressed record does)
    that inflates to ``inflated_bytes`` of zeros, built without holding them in memory."""
    comp = getattr(cramjam, codec).Compressor()
    chunk = b"\0" * (16 * 1024 * 1024)
    left = inflated_bytes
    while left > 0:
        comp.compress(chunk[:min(left, len(chunk))])
        left -= len(chunk)
    return bytes(comp.finish())
