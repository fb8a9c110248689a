"""Wire-compatible partial views of OTLP trace messages, so upb parses only what decoding reads.

upb builds a Python wrapper for every sub-message the code touches, and that (not the C parse)
dominates decode time. These views declare the same field numbers and wire types as
`opentelemetry.proto.trace.v1.TracesData` but only the fields the span batch needs, and declare
sub-messages that need no structure (resource, status, attributes) as raw `bytes`: the bytes of
a message field are exactly its serialized sub-message, so they can be looked up in a cache or
parsed with the real class only when needed. Repeated message fields declared singular merge
(protobuf concatenates their repeated fields), which turns rows into columns. Fields not
declared (names, events, scopes, trace state, ...) stay unknown fields, never seen by Python.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = "otel_insights.otlp_view"
_F = descriptor_pb2.FieldDescriptorProto

# (message name, [(field name, number, type, repeated, message type name or None)])
_SCHEMA: list[tuple[str, list[tuple[str, int, int, bool, str | None]]]] = [
    # --- View A: one wrapper per ResourceSpans, ScopeSpans and Span, for the span columns.
    (
        "SpanView",
        [
            ("trace_id", 1, _F.TYPE_BYTES, False, None),
            ("span_id", 2, _F.TYPE_BYTES, False, None),
            ("parent_span_id", 4, _F.TYPE_BYTES, False, None),
            # SpanKind is an open enum on the wire: a varint, same as int32.
            ("kind", 6, _F.TYPE_INT32, False, None),
            ("start_time_unix_nano", 7, _F.TYPE_FIXED64, False, None),
            ("end_time_unix_nano", 8, _F.TYPE_FIXED64, False, None),
            ("attributes", 9, _F.TYPE_BYTES, True, None),  # serialized KeyValue each
            # Singular although repeated on the wire, so no container per span: the last link
            # wins, which is the first when a span has one link (View M counts them all).
            ("links", 13, _F.TYPE_BYTES, False, None),
            ("status", 15, _F.TYPE_BYTES, False, None),  # serialized Status
        ],
    ),
    ("ScopeSpansView", [("spans", 2, _F.TYPE_MESSAGE, True, "SpanView")]),
    (
        "ResourceSpansView",
        [
            ("resource", 1, _F.TYPE_BYTES, False, None),  # serialized Resource
            ("scope_spans", 2, _F.TYPE_MESSAGE, True, "ScopeSpansView"),
        ],
    ),
    ("TracesDataView", [("resource_spans", 1, _F.TYPE_MESSAGE, True, "ResourceSpansView")]),
    # Top level only: checks a record is a complete message and counts its ResourceSpans.
    ("TracesDataTopView", [("resource_spans", 1, _F.TYPE_BYTES, True, None)]),
    # --- View M: every level singular, so the whole payload merges into one message and the
    # keys and values of all span attributes (and all links) arrive as flat lists in document
    # order with no per-span or per-attribute wrapper. Span boundaries come from View A.
    # Bulky fields nobody reads are declared as singular bytes: each occurrence overwrites
    # the last instead of piling up in the merged message's unknown fields.
    (
        "KeyValuesView",
        [
            ("key", 1, _F.TYPE_BYTES, True, None),
            ("value", 2, _F.TYPE_BYTES, True, None),  # serialized AnyValue
        ],
    ),
    (
        "SpanAttributesView",
        [
            ("name", 5, _F.TYPE_BYTES, False, None),
            ("attributes", 9, _F.TYPE_MESSAGE, False, "KeyValuesView"),
            ("events", 11, _F.TYPE_BYTES, False, None),
            ("links", 13, _F.TYPE_BYTES, True, None),  # serialized Span.Link each
        ],
    ),
    (
        "ScopeSpansAttributesView",
        [
            ("scope", 1, _F.TYPE_BYTES, False, None),
            ("spans", 2, _F.TYPE_MESSAGE, False, "SpanAttributesView"),
        ],
    ),
    (
        "ResourceSpansAttributesView",
        [
            ("resource", 1, _F.TYPE_BYTES, False, None),
            ("scope_spans", 2, _F.TYPE_MESSAGE, False, "ScopeSpansAttributesView"),
        ],
    ),
    (
        "TracesDataAttributesView",
        [
            ("resource_spans", 1, _F.TYPE_MESSAGE, False, "ResourceSpansAttributesView"),
        ],
    ),
]


def _build() -> dict[str, Any]:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="otel_insights/otlp_view.proto", package=_PACKAGE, syntax="proto3"
    )
    for name, fields in _SCHEMA:
        msg = fdp.message_type.add(name=name)
        for fname, number, ftype, repeated, type_name in fields:
            field = msg.field.add(
                name=fname,
                number=number,
                type=ftype,  # type: ignore[arg-type]
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
            )
            if type_name:
                field.type_name = f".{_PACKAGE}.{type_name}"
    # A private pool keeps these names out of the default pool other code uses.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name, _ in _SCHEMA
    }


_CLASSES = _build()
TracesDataView: Any = _CLASSES["TracesDataView"]
TracesDataAttributesView: Any = _CLASSES["TracesDataAttributesView"]
TracesDataTopView: Any = _CLASSES["TracesDataTopView"]
