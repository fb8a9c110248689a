"""Encoding TracesData as OTLP protobuf or OTLP/JSON, and splitting it into one per trace.

Encoders by encoding name are in :mod:`processor.otlp.registry`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from google.protobuf import json_format
from opentelemetry.proto.trace.v1 import trace_pb2

from processor.otlp.batch import saturate_int64

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex(b64: str) -> str:
    return base64.b64decode(b64).hex()


def encode_json(msg: trace_pb2.TracesData) -> bytes:
    """OTLP/JSON: lowerCamelCase keys, enums as integers, int64 as strings, ids as hex.

    protobuf's JSON mapping writes bytes as base64; the OTLP spec makes trace and span ids
    (only those) hex, so they are rewritten after MessageToDict.
    """
    doc = json_format.MessageToDict(msg, use_integers_for_enums=True)
    for rs in doc.get("resourceSpans", ()):
        for ss in rs.get("scopeSpans", ()):
            for span in ss.get("spans", ()):
                _hex_ids(span)
                for link in span.get("links", ()):
                    _hex_ids(link)
    return json.dumps(doc, separators=(",", ":")).encode()


def _hex_ids(obj: dict[str, Any]) -> None:
    for key in _ID_KEYS:
        if key in obj:
            obj[key] = _hex(obj[key])


def encode_proto(msg: trace_pb2.TracesData) -> bytes:
    return msg.SerializeToString()


def span_ends(msg: trace_pb2.TracesData) -> np.ndarray:
    """Every span's end time (int64 ns; a uint64 past int64 saturates instead of wrapping)."""
    ends = np.fromiter((span.end_time_unix_nano for rs in msg.resource_spans
                        for ss in rs.scope_spans for span in ss.spans), dtype=np.uint64)
    return saturate_int64(ends)


def split_by_trace(msg: trace_pb2.TracesData) -> dict[bytes, trace_pb2.TracesData]:
    """One TracesData per trace id, keeping each span under a copy of its resource and scope.

    Used to write one Kafka record per trace (keyed by the hex trace id) so every span of a
    trace lands on one partition. Spans keep their order; a message holding a single trace is
    returned as is (not copied). An invalid (e.g. empty) trace id is a key like any other.
    """
    trace_ids = {
        span.trace_id for rs in msg.resource_spans for ss in rs.scope_spans for span in ss.spans
    }
    if len(trace_ids) <= 1:
        return {tid: msg for tid in trace_ids}
    out: dict[bytes, trace_pb2.TracesData] = {}
    for rs in msg.resource_spans:
        rs_copies: dict[bytes, trace_pb2.ResourceSpans] = {}
        for ss in rs.scope_spans:
            ss_copies: dict[bytes, trace_pb2.ScopeSpans] = {}
            for span in ss.spans:
                tid = span.trace_id
                ss_copy = ss_copies.get(tid)
                if ss_copy is None:
                    rs_copy = rs_copies.get(tid)
                    if rs_copy is None:
                        target = out.get(tid)
                        if target is None:
                            target = out[tid] = trace_pb2.TracesData()
                        rs_copy = rs_copies[tid] = target.resource_spans.add(
                            schema_url=rs.schema_url
                        )
                        if rs.HasField("resource"):
                            rs_copy.resource.CopyFrom(rs.resource)
                    ss_copy = ss_copies[tid] = rs_copy.scope_spans.add(schema_url=ss.schema_url)
                    if ss.HasField("scope"):
                        ss_copy.scope.CopyFrom(ss.scope)
                ss_copy.spans.append(span)
    return out
