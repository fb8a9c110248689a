"""OTLP encoding (proto / JSON with hex ids) and splitting a message into one per trace."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from processor.errors import ConfigError
from processor.otlp.batch import StringTable
from processor.otlp.decode import SpanDecoder
from processor.otlp.encode import encode_json, encode_proto, split_by_trace
from processor.otlp.registry import encode

T0 = 1_700_000_000_000_000_000


def _span(trace: int, span_id: int, **kw: object) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=span_id.to_bytes(8, "big"),
        name=f"s{span_id}",
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 1,
        **kw,  # type: ignore[arg-type]
    )


def _resource_spans(
    service: str, scopes: list[tuple[str, list[trace_pb2.Span]]]
) -> trace_pb2.ResourceSpans:
    rs = trace_pb2.ResourceSpans(schema_url="https://opentelemetry.io/schemas/1.26.0")
    rs.resource.attributes.add(key="service.name").value.string_value = service
    rs.resource.attributes.add(key="deployment.environment").value.string_value = "prod"
    for scope_name, spans in scopes:
        ss = rs.scope_spans.add(schema_url="scope-schema")
        ss.scope.name = scope_name
        ss.scope.version = "1.0"
        ss.spans.extend(spans)
    return rs


def test_encode_json_follows_otlp_json() -> None:
    sp = _span(
        0x0102,
        0x0A0B,
        parent_span_id=(0x0C).to_bytes(8, "big"),
        kind=trace_pb2.Span.SPAN_KIND_CLIENT,
    )
    sp.status.code = trace_pb2.Status.STATUS_CODE_ERROR
    sp.links.add(trace_id=(0x77).to_bytes(16, "big"), span_id=(0x78).to_bytes(8, "big"))
    sp.attributes.add(key="blob").value.bytes_value = b"\x00\xff"
    sp.attributes.add(key="n").value.int_value = 5
    msg = trace_pb2.TracesData(resource_spans=[_resource_spans("api", [("lib", [sp])])])
    doc = json.loads(encode_json(msg))
    out = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert out["traceId"] == f"{0x0102:032x}"
    assert out["spanId"] == f"{0x0A0B:016x}"
    assert out["parentSpanId"] == f"{0x0C:016x}"
    assert out["links"][0] == {"traceId": f"{0x77:032x}", "spanId": f"{0x78:016x}"}
    assert out["kind"] == 3 and out["status"] == {"code": 2}  # enums as integers
    assert out["startTimeUnixNano"] == str(T0)  # int64 as decimal strings
    assert out["attributes"][0]["value"] == {"bytesValue": "AP8="}  # other bytes stay base64
    assert out["attributes"][1]["value"] == {"intValue": "5"}
    assert doc["resourceSpans"][0]["schemaUrl"] == "https://opentelemetry.io/schemas/1.26.0"


def test_json_and_proto_decode_to_the_same_batch() -> None:
    sp = _span(9, 1, kind=trace_pb2.Span.SPAN_KIND_CLIENT)
    sp.attributes.add(key="peer.service").value.string_value = "db"
    msg = trace_pb2.TracesData(
        resource_spans=[_resource_spans("api", [("lib", [sp, _span(9, 2)])])]
    )
    strings = StringTable()
    decoder = SpanDecoder(strings)
    a = decoder.decode(encode(msg, "otlp_proto"), "otlp_proto")
    b = decoder.decode(encode(msg, "otlp_json"), "otlp_json")
    for name in a.column_names():
        assert getattr(a, name).tolist() == getattr(b, name).tolist(), name
    assert strings.lookup(int(a.virtual_peer[0])) == "db"  # peer.service names a virtual node


def test_encode_proto_round_trips() -> None:
    msg = trace_pb2.TracesData(resource_spans=[_resource_spans("api", [("lib", [_span(1, 1)])])])
    assert trace_pb2.TracesData.FromString(encode_proto(msg)) == msg


def test_unknown_encoding_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="otlp_json"):
        encode(trace_pb2.TracesData(), "otlp_xml")


def test_split_by_trace_groups_spans_and_keeps_resource_and_scope() -> None:
    msg = trace_pb2.TracesData(
        resource_spans=[
            _resource_spans(
                "api", [("http", [_span(1, 1), _span(2, 2), _span(1, 3)]), ("db", [_span(2, 4)])]
            ),
            _resource_spans("worker", [("jobs", [_span(2, 5)])]),
        ]
    )
    parts = split_by_trace(msg)
    assert sorted(parts) == [(1).to_bytes(16, "big"), (2).to_bytes(16, "big")]

    def layout(part: trace_pb2.TracesData) -> list[tuple[str, list[tuple[str, list[int]]]]]:
        return [
            (
                rs.resource.attributes[0].value.string_value,
                [
                    (ss.scope.name, [int.from_bytes(s.span_id, "big") for s in ss.spans])
                    for ss in rs.scope_spans
                ],
            )
            for rs in part.resource_spans
        ]

    assert layout(parts[(1).to_bytes(16, "big")]) == [("api", [("http", [1, 3])])]
    assert layout(parts[(2).to_bytes(16, "big")]) == [
        ("api", [("http", [2]), ("db", [4])]),
        ("worker", [("jobs", [5])]),
    ]
    two = parts[(2).to_bytes(16, "big")]
    assert two.resource_spans[0].resource == msg.resource_spans[0].resource
    assert two.resource_spans[0].schema_url == msg.resource_spans[0].schema_url
    assert two.resource_spans[0].scope_spans[1].scope == msg.resource_spans[0].scope_spans[1].scope
    assert two.resource_spans[0].scope_spans[1].schema_url == "scope-schema"
    # Spans are copied whole, and the source message is untouched.
    assert (
        two.resource_spans[1].scope_spans[0].spans[0]
        == msg.resource_spans[1].scope_spans[0].spans[0]
    )
    assert sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans) == 5


def test_split_by_trace_single_trace_and_empty() -> None:
    msg = trace_pb2.TracesData(
        resource_spans=[_resource_spans("api", [("lib", [_span(3, 1), _span(3, 2)])])]
    )
    assert split_by_trace(msg) == {(3).to_bytes(16, "big"): msg}
    assert split_by_trace(trace_pb2.TracesData()) == {}


def test_split_parts_are_keyed_for_kafka_and_decode_back() -> None:
    msg = trace_pb2.TracesData(
        resource_spans=[
            _resource_spans(
                "api",
                [("lib", [_span(trace, trace * 10 + i) for trace in (1, 2, 3) for i in range(2)])],
            ),
        ]
    )
    strings = StringTable()
    decoder = SpanDecoder(strings)
    seen = []
    for trace_id, part in split_by_trace(msg).items():
        key = trace_id.hex()
        assert len(key) == 32
        batch = decoder.decode_json(encode_json(part))
        assert {
            f"{int(h):016x}{int(lo):016x}"
            for h, lo in zip(batch.trace_hi, batch.trace_lo, strict=True)
        } == {key}
        assert strings.lookup(int(batch.service[0])) == "api"
        seen += batch.span_id.tolist()
    assert sorted(seen) == [10, 11, 20, 21, 30, 31]


def test_encode_json_matches_protobuf_mapping_apart_from_ids() -> None:
    sp = _span(5, 6)
    sp.attributes.append(common_pb2.KeyValue(key="k", value=common_pb2.AnyValue(double_value=1.5)))
    msg = trace_pb2.TracesData(resource_spans=[_resource_spans("api", [("lib", [sp])])])
    ours = json.loads(encode_json(msg))
    theirs = json_format.MessageToDict(msg, use_integers_for_enums=True)
    theirs_span = theirs["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    ours_span = ours["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert {k: v for k, v in ours_span.items() if k not in ("traceId", "spanId")} == {
        k: v for k, v in theirs_span.items() if k not in ("traceId", "spanId")
    }
