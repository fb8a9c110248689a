"""SpanDecoder: proto and JSON decoding against hand-computed columns and a plain reference."""

from __future__ import annotations

import base64
import gc
import json
import random
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from processor.config import ServiceGraphConfig
from processor.errors import ConfigError, DecodeError
from processor.otlp.batch import (
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_PRODUCER,
    KIND_SERVER,
    STATUS_ERROR,
    STATUS_OK,
    SpanBatch,
    StringTable,
    u64_pair_to_hex,
)
from processor.otlp.compression import compress
from processor.otlp.decode import SpanDecoder
from processor.otlp.encode import encode_json
from processor.otlp.registry import encodings, get_decoder

T0 = 1_700_000_000_000_000_000
# db.namespace too (newer semantic conventions), as reference_rows reads it; dimensions
# (each read on the resource, then the span) as a few columns of their own.
DIMS = ("peer.service", "server.address", "db.system", "messaging.system", "deployment.environment")
SERVICEGRAPH = ServiceGraphConfig(database_name_attributes=("db.name", "db.namespace"),
                                  dimensions=DIMS)
STRING_COLUMNS = ["service", "db_name", "virtual_peer"]


# ---------------------------------------------------------------------------- builders


def kv(key: str, value: Any) -> common_pb2.KeyValue:
    out = common_pb2.KeyValue(key=key)
    if isinstance(value, bool):
        out.value.bool_value = value
    elif isinstance(value, int):
        out.value.int_value = value
    elif isinstance(value, float):
        out.value.double_value = value
    elif isinstance(value, bytes):
        out.value.bytes_value = value
    elif value is not None:
        out.value.string_value = value
    return out


def span(
    trace: int,
    span_id: int,
    parent: int = 0,
    kind: int = KIND_SERVER,
    attrs: dict[str, Any] | None = None,
    status: int = 0,
    links: Sequence[tuple[int, int]] = (),
    start: int = T0,
    end: int = T0 + 5_000_000,
) -> trace_pb2.Span:
    sp = trace_pb2.Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name="op",
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start,
        end_time_unix_nano=end,
    )
    sp.attributes.extend(kv(k, v) for k, v in (attrs or {}).items())
    if status:
        sp.status.code = status  # type: ignore[assignment]
    for lt, ls in links:
        sp.links.add(trace_id=lt.to_bytes(16, "big"), span_id=ls.to_bytes(8, "big"))
    return sp


def traces(*groups: tuple[str | None, list[trace_pb2.Span]]) -> trace_pb2.TracesData:
    """One ResourceSpans per (service name or None for no service.name, spans)."""
    msg = trace_pb2.TracesData()
    for service, spans in groups:
        rs = msg.resource_spans.add()
        if service is not None:
            rs.resource.attributes.append(kv("service.name", service))
        rs.resource.attributes.append(kv("host.name", "h1"))
        ss = rs.scope_spans.add()
        ss.scope.name = "test"
        ss.spans.extend(spans)
    return msg


def rows(batch: SpanBatch, strings: StringTable) -> list[dict[str, Any]]:
    """Batch rows with codes turned back into strings and ids into hex, for comparisons."""
    out = []
    for i in range(len(batch)):
        row: dict[str, Any] = {
            "trace": u64_pair_to_hex(batch.trace_hi[i], batch.trace_lo[i]),
            "span": f"{int(batch.span_id[i]):016x}",
            "parent": f"{int(batch.parent_span_id[i]):016x}",
            "kind": int(batch.kind[i]),
            "start": int(batch.start_ns[i]),
            "end": int(batch.end_ns[i]),
            "status": int(batch.status[i]),
            "link_trace": u64_pair_to_hex(batch.link_trace_hi[i], batch.link_trace_lo[i]),
            "link_span": f"{int(batch.link_span_id[i]):016x}",
            "offset": int(batch.offset[i]),
        }
        row.update({c: strings.lookup(int(getattr(batch, c)[i])) for c in STRING_COLUMNS})
        row.update({f"dim:{d}": strings.lookup(int(batch.dims[i, j])) for j, d in enumerate(DIMS)})
        out.append(row)
    return out


def check_dtypes(batch: SpanBatch) -> None:
    for name in SpanBatch.column_names():
        col = getattr(batch, name)
        assert col.dtype == np.dtype(SpanBatch.DTYPES[name]), name
        want = (len(batch), len(DIMS)) if name == "dims" and len(batch) else (len(batch),)
        assert col.shape[: len(want)] == want, name


# ---------------------------------------------------------------------------- reference


def _ref_str(value: common_pb2.AnyValue) -> str:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which == "int_value":
        return str(value.int_value)
    return ""


def reference_rows(
    msg: trace_pb2.TracesData,
    virtual: tuple[str, ...] = ("peer.service", "db.name", "db.system"),
    db_names: tuple[str, ...] = ("db.name", "db.namespace"),
) -> list[dict[str, Any]]:
    """The column semantics written out the slow, obvious way over the real protobuf classes."""
    out = []
    for rs in msg.resource_spans:
        service = next(
            (_ref_str(a.value) for a in rs.resource.attributes if a.key == "service.name"), ""
        )
        res: dict[str, str] = {}
        for a in rs.resource.attributes:
            res.setdefault(a.key, _ref_str(a.value))  # the first of a key, empty or not
        for ss in rs.scope_spans:
            for sp in ss.spans:
                attrs: dict[str, str] = {}
                for a in sp.attributes:
                    value = _ref_str(a.value)
                    if value and a.key not in attrs:
                        attrs[a.key] = value

                def first(*keys: str, attrs: dict[str, str] = attrs) -> str:
                    return next((attrs[k] for k in keys if k in attrs), "")

                def resource_first(*keys: str, attrs: dict[str, str] = attrs,
                                   res: dict[str, str] = res) -> str:
                    # Key by key: the resource's non-empty value, else the span's.
                    return next((res.get(k) or attrs[k] for k in keys
                                 if res.get(k) or k in attrs), "")

                link = sp.links[0] if sp.links else None
                out.append(
                    {
                        "trace": sp.trace_id.hex(),
                        "span": sp.span_id.hex(),
                        "parent": sp.parent_span_id.hex() or "0" * 16,
                        "kind": sp.kind if 0 <= sp.kind <= 5 else 0,
                        "start": sp.start_time_unix_nano,
                        "end": sp.end_time_unix_nano,
                        "status": sp.status.code if 0 <= sp.status.code <= 2 else 0,
                        "link_trace": link.trace_id.hex() if link else "0" * 32,
                        "link_span": link.span_id.hex() if link else "0" * 16,
                        "offset": -1,
                        "service": service,
                        "db_name": resource_first(*db_names),
                        "virtual_peer": first(*virtual),
                        **{f"dim:{d}": resource_first(d) for d in DIMS},
                    }
                )
    return out


_KEYS = [
    "peer.service",
    "server.address",
    "net.peer.name",
    "db.system",
    "db.system.name",
    "db.name",
    "db.namespace",
    "messaging.system",
    "deployment.environment",
    "http.route",
    "url.full",
    "thread.id",
    "db.query.text",
]


def random_traces(rng: random.Random) -> trace_pb2.TracesData:
    """Random structure and attributes, including duplicates, empty values and odd enums."""
    msg = trace_pb2.TracesData()
    for _ in range(rng.randint(1, 4)):
        rs = msg.resource_spans.add()
        if rng.random() < 0.8:
            rs.resource.attributes.append(kv("service.name", rng.choice(["a", "b", "c", ""])))
        rs.resource.attributes.append(kv("host.name", f"h{rng.randrange(3)}"))
        for _ in range(rng.choice([0, 0, 1, 2])):  # resource attributes that feed columns
            rs.resource.attributes.append(kv(rng.choice(_KEYS), rng.choice(["r", "", "prod", 7])))
        for _ in range(rng.randint(1, 3)):
            ss = rs.scope_spans.add()
            for _ in range(rng.randint(0, 6)):
                attrs = []
                for _ in range(rng.randint(0, 7)):
                    value = rng.choice(
                        ["x", "y", "", "pg", 5432, True, None, f"u{rng.randrange(10**6)}"]
                    )
                    attrs.append(kv(rng.choice(_KEYS), value))
                sp = ss.spans.add(
                    trace_id=rng.randbytes(16),
                    span_id=rng.randbytes(8),
                    parent_span_id=rng.choice([b"", rng.randbytes(8)]),
                    kind=rng.choice([0, 1, 2, 3, 4, 5, 9]),  # type: ignore[arg-type]
                    start_time_unix_nano=T0 + rng.randrange(10**12),
                    end_time_unix_nano=T0 + rng.randrange(10**12),
                    attributes=attrs,
                )
                if rng.random() < 0.3:
                    sp.status.code = rng.choice([0, 1, 2, 7])  # type: ignore[assignment]
                    if rng.random() < 0.5:
                        sp.status.message = f"failed {rng.randrange(5)}"
                for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):
                    sp.links.add(trace_id=rng.randbytes(16), span_id=rng.randbytes(8))
    return msg


# ---------------------------------------------------------------------------- behaviour


@pytest.fixture
def strings() -> StringTable:
    return StringTable()


@pytest.fixture
def decoder(strings: StringTable) -> SpanDecoder:
    return SpanDecoder(strings, SERVICEGRAPH)


def test_every_column_from_proto_and_json(decoder: SpanDecoder, strings: StringTable) -> None:
    msg = traces(
        (
            "frontend",
            [
                span(
                    0xA1,
                    1,
                    kind=KIND_SERVER,
                    attrs={"server.address": "shop.example"},
                    status=STATUS_OK,
                    start=T0,
                    end=T0 + 7,
                ),
                span(
                    0xA1,
                    2,
                    parent=1,
                    kind=KIND_CLIENT,
                    attrs={"peer.service": "cart", "net.peer.name": "cart-host"},
                    status=STATUS_ERROR,
                ),
            ],
        ),
        (
            "cart",
            [
                span(
                    0xA1,
                    3,
                    parent=2,
                    kind=KIND_CLIENT,
                    attrs={
                        "db.system": "postgresql",
                        "db.namespace": "orders",
                        "server.address": "pg",
                    },
                ),
                span(
                    0xB2,
                    4,
                    kind=KIND_PRODUCER,
                    attrs={"messaging.system": "kafka"},
                    links=[(0xC3, 0x99), (0xD4, 0x98)],
                ),
            ],
        ),
        (None, [span(0xB2, 5, parent=4, kind=KIND_CONSUMER)]),
    )
    expected = [
        {
            "trace": f"{0xA1:032x}",
            "span": f"{1:016x}",
            "parent": "0" * 16,
            "kind": KIND_SERVER,
            "start": T0,
            "end": T0 + 7,
            "status": STATUS_OK,
            "link_trace": "0" * 32,
            "link_span": "0" * 16,
            "offset": -1,
            "service": "frontend",
            "db_name": "",
            "virtual_peer": "",
            "dim:peer.service": "",
            "dim:server.address": "shop.example",
            "dim:db.system": "",
            "dim:messaging.system": "",
            "dim:deployment.environment": "",
        },
        {
            "trace": f"{0xA1:032x}",
            "span": f"{2:016x}",
            "parent": f"{1:016x}",
            "kind": KIND_CLIENT,
            "start": T0,
            "end": T0 + 5_000_000,
            "status": STATUS_ERROR,
            "link_trace": "0" * 32,
            "link_span": "0" * 16,
            "offset": -1,
            "service": "frontend",
            "db_name": "",
            "virtual_peer": "cart",
            "dim:peer.service": "cart",
            "dim:server.address": "",  # net.peer.name is no alias: the connector reads keys as given
            "dim:db.system": "",
            "dim:messaging.system": "",
            "dim:deployment.environment": "",
        },
        {
            "trace": f"{0xA1:032x}",
            "span": f"{3:016x}",
            "parent": f"{2:016x}",
            "kind": KIND_CLIENT,
            "start": T0,
            "end": T0 + 5_000_000,
            "status": 0,
            "link_trace": "0" * 32,
            "link_span": "0" * 16,
            "offset": -1,
            "service": "cart",
            "db_name": "orders",
            "virtual_peer": "postgresql",
            "dim:peer.service": "",
            "dim:server.address": "pg",
            "dim:db.system": "postgresql",
            "dim:messaging.system": "",
            "dim:deployment.environment": "",
        },
        {
            "trace": f"{0xB2:032x}",
            "span": f"{4:016x}",
            "parent": "0" * 16,
            "kind": KIND_PRODUCER,
            "start": T0,
            "end": T0 + 5_000_000,
            "status": 0,
            "link_trace": f"{0xC3:032x}",
            "link_span": f"{0x99:016x}",
            "offset": -1,
            "service": "cart",
            "db_name": "",
            "virtual_peer": "",
            "dim:peer.service": "",
            "dim:server.address": "",
            "dim:db.system": "",
            "dim:messaging.system": "kafka",
            "dim:deployment.environment": "",
        },
        {
            "trace": f"{0xB2:032x}",
            "span": f"{5:016x}",
            "parent": f"{4:016x}",
            "kind": KIND_CONSUMER,
            "start": T0,
            "end": T0 + 5_000_000,
            "status": 0,
            "link_trace": "0" * 32,
            "link_span": "0" * 16,
            "offset": -1,
            "service": "",
            "db_name": "",
            "virtual_peer": "",
            "dim:peer.service": "",
            "dim:server.address": "",
            "dim:db.system": "",
            "dim:messaging.system": "",
            "dim:deployment.environment": "",
        },
    ]
    for batch in (
        decoder.decode_proto(msg.SerializeToString()),
        decoder.decode_json(encode_json(msg)),
    ):
        check_dtypes(batch)
        assert rows(batch, strings) == expected


@pytest.mark.parametrize(
    ("attrs", "column", "value"),
    [
        ({"server.address": "a", "net.peer.name": "b"}, "dim:server.address", "a"),
        ({"net.peer.name": "b"}, "dim:server.address", ""),  # no aliases: keys as configured
        ({"server.address": "", "peer.service": "p"}, "dim:server.address", ""),  # empty = absent
        ({"db.name": "n1", "db.namespace": "n2"}, "db_name", "n1"),
        ({"db.namespace": "n2", "db.name": "n1"}, "db_name", "n1"),  # priority, not order
        ({"db.namespace": "n2"}, "db_name", "n2"),
        ({"db.name": "", "db.namespace": "n2"}, "db_name", "n2"),  # empty = absent
        ({"db.system": "postgresql"}, "db_name", ""),  # db.system alone names no database
        ({"peer.service": "p"}, "dim:peer.service", "p"),
        ({"messaging.system": "rabbitmq"}, "dim:messaging.system", "rabbitmq"),
        ({"db.system": "redis", "db.name": "0"}, "virtual_peer", "0"),
        ({"db.system": "redis"}, "virtual_peer", "redis"),
        ({"server.port": 5432, "peer.service": 8080}, "dim:peer.service", "8080"),  # int string form
        ({"peer.service": True}, "dim:peer.service", "true"),
        ({"peer.service": 1.5}, "dim:peer.service", "1.5"),
        ({"peer.service": 3.0}, "dim:peer.service", "3"),
        ({"peer.service": b"\x01\x02"}, "dim:peer.service", base64.b64encode(b"\x01\x02").decode()),
        ({"peer.service": None, "db.name": "d"}, "virtual_peer", "d"),  # unset AnyValue = absent
    ],
)
def test_attribute_fallbacks(attrs: dict[str, Any], column: str, value: str) -> None:
    for encode in (lambda m: m.SerializeToString(), encode_json):
        strings = StringTable()
        batch = SpanDecoder(strings, SERVICEGRAPH).decode(
            encode(traces(("s", [span(1, 1, kind=KIND_CLIENT, attrs=attrs)]))),
            "otlp_proto" if encode is not encode_json else "otlp_json",
        )
        assert rows(batch, strings)[0][column] == value


@pytest.mark.parametrize(
    ("resource", "attrs", "column", "value"),
    [
        # As the connector: dimensions and database names are read on the resource first.
        ({"deployment.environment": "prod"}, {}, "dim:deployment.environment", "prod"),
        ({"deployment.environment": "prod"}, {"deployment.environment": "dev"},
         "dim:deployment.environment", "prod"),
        ({"deployment.environment": ""}, {"deployment.environment": "dev"},
         "dim:deployment.environment", "dev"),  # empty = absent
        ({"db.name": "res-db"}, {"db.name": "span-db"}, "db_name", "res-db"),
        # ... key by key: the span's first key beats the resource's second one.
        ({"db.namespace": "res-ns"}, {"db.name": "span-db"}, "db_name", "span-db"),
        ({"peer.service": "res-peer"}, {}, "virtual_peer", ""),  # peers: span attributes only
    ],
)
def test_resource_attributes_feed_dimensions_and_database_names(
    resource: dict[str, Any], attrs: dict[str, Any], column: str, value: str
) -> None:
    msg = traces(("s", [span(1, 1, kind=KIND_CLIENT, attrs=attrs)]))
    msg.resource_spans[0].resource.attributes.extend(kv(k, v) for k, v in resource.items())
    for payload, encoding in ((msg.SerializeToString(), "otlp_proto"), (encode_json(msg), "otlp_json")):
        strings = StringTable()
        decoder = SpanDecoder(strings, SERVICEGRAPH)
        assert rows(decoder.decode(payload, encoding), strings)[0][column] == value
        # The same through decode_records, which parses records together.
        two = decoder.decode_records([payload, payload], encoding)
        assert [r[column] for r in rows(two.batch, strings)] == [value, value]


def test_configured_attribute_lists_decide_priority() -> None:
    strings = StringTable()
    decoder = SpanDecoder(strings, ServiceGraphConfig(
        virtual_node_peer_attributes=("server.address", "peer.service"),
        database_name_attributes=("db.namespace", "db.name"),
    ))
    attrs = {"peer.service": "p", "server.address": "s", "db.name": "n1", "db.namespace": "n2"}
    batch = decoder.decode_proto(traces(("x", [span(1, 1, attrs=attrs)])).SerializeToString())
    assert strings.lookup(int(batch.virtual_peer[0])) == "s"
    assert strings.lookup(int(batch.db_name[0])) == "n2"
    assert decoder.servicegraph.virtual_node_peer_attributes == ("server.address", "peer.service")


def test_duplicate_attribute_key_keeps_first_non_empty(
    decoder: SpanDecoder, strings: StringTable
) -> None:
    sp = span(1, 1, attrs={})
    sp.attributes.extend(
        [kv("peer.service", ""), kv("peer.service", "first"), kv("peer.service", "second")]
    )
    batch = decoder.decode_proto(traces(("x", [sp])).SerializeToString())
    assert rows(batch, strings)[0]["dim:peer.service"] == "first"


def test_matches_reference_on_random_payloads(decoder: SpanDecoder, strings: StringTable) -> None:
    rng = random.Random(20240601)
    for _ in range(60):
        msg = random_traces(rng)
        want = reference_rows(msg)
        assert rows(decoder.decode_proto(msg.SerializeToString()), strings) == want
        assert rows(decoder.decode_json(encode_json(msg)), strings) == want


def test_export_request_decodes_like_traces_data(
    decoder: SpanDecoder, strings: StringTable
) -> None:
    msg = random_traces(random.Random(3))
    request = trace_service_pb2.ExportTraceServiceRequest(resource_spans=msg.resource_spans)
    a = rows(decoder.decode_proto(request.SerializeToString()), strings)
    assert a == rows(decoder.decode_proto(msg.SerializeToString()), strings)
    assert a == reference_rows(msg)


def test_string_codes_are_shared_across_batches(decoder: SpanDecoder) -> None:
    one = decoder.decode_proto(traces(("svc", [span(1, 1)])).SerializeToString())
    two = decoder.decode_json(encode_json(traces(("svc", [span(2, 2)]))))
    assert one.service[0] == two.service[0] != 0


def test_unusual_but_valid_protobuf_encodings(decoder: SpanDecoder, strings: StringTable) -> None:
    # KeyValue with its value field before its key, and one without a value field: legal
    # protobuf that no SDK writes, which must still decode exactly.
    value = common_pb2.AnyValue(string_value="cart").SerializeToString()
    value_first = b"\x12" + bytes([len(value)]) + value + b"\x0a\x0cpeer.service"
    no_value = b"\x0a\x0eserver.address"
    sp = span(1, 1, kind=KIND_CLIENT, attrs={"db.system": "pg"})
    raw_span = bytearray(sp.SerializeToString())
    for kv_raw in (value_first, no_value):
        raw_span += b"\x4a" + bytes([len(kv_raw)]) + kv_raw
    ss = b"\x12" + bytes([len(raw_span)]) + bytes(raw_span)
    rs = b"\x12" + bytes([len(ss)]) + ss
    payload = b"\x0a" + bytes([len(rs)]) + rs
    parsed = trace_pb2.TracesData.FromString(payload)  # sanity: the real class agrees
    assert [a.key for a in parsed.resource_spans[0].scope_spans[0].spans[0].attributes] == [
        "db.system",
        "peer.service",
        "server.address",
    ]
    [row] = rows(decoder.decode_proto(payload), strings)
    assert (row["dim:peer.service"], row["dim:db.system"], row["dim:server.address"]) == ("cart", "pg", "")


def test_first_of_several_links(decoder: SpanDecoder) -> None:
    msg = traces(
        ("x", [span(1, 1, links=[(7, 8)]), span(1, 2, links=[(5, 6), (3, 4)]), span(1, 3)])
    )
    batch = decoder.decode_proto(msg.SerializeToString())
    assert batch.link_trace_lo.tolist() == [7, 5, 0]
    assert batch.link_span_id.tolist() == [8, 6, 0]
    assert batch.link_trace_hi.tolist() == [0, 0, 0]


def test_unknown_enum_values_read_as_unspecified(decoder: SpanDecoder) -> None:
    sp = span(1, 1, kind=KIND_SERVER)
    sp.kind = 42  # type: ignore[assignment]
    sp.status.code = 5  # type: ignore[assignment]
    for batch in (
        decoder.decode_proto(traces(("x", [sp])).SerializeToString()),
        decoder.decode_json(encode_json(traces(("x", [sp])))),
    ):
        assert (batch.kind[0], batch.status[0]) == (0, 0)


def test_empty_inputs_give_empty_batches(decoder: SpanDecoder) -> None:
    no_spans = traces(("svc", []))
    for payload, encoding in [
        (b"", "otlp_proto"),
        (trace_pb2.TracesData().SerializeToString(), "otlp_proto"),
        (no_spans.SerializeToString(), "otlp_proto"),
        (b"", "otlp_json"),
        (b"  \n", "otlp_json"),
        (b"{}", "otlp_json"),
        (b'{"resourceSpans": []}', "otlp_json"),
        (encode_json(no_spans), "otlp_json"),
    ]:
        batch = decoder.decode(payload, encoding)
        assert len(batch) == 0
        check_dtypes(batch)


# ---------------------------------------------------------------------------- JSON specifics

SDK_JSON = b"""{"resourceSpans":[{"resource":{"attributes":[
 {"key":"service.name","value":{"stringValue":"checkout"}},
 {"key":"telemetry.sdk.language","value":{"stringValue":"nodejs"}},
 {"key":"process.pid","value":{"intValue":"4242"}}],"droppedAttributesCount":0},
 "scopeSpans":[{"scope":{"name":"@opentelemetry/instrumentation-http","version":"0.52.1"},
 "spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
 "parentSpanId":"eee19b7ec3c1b173","name":"GET","kind":3,
 "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
 "attributes":[{"key":"http.request.method","value":{"stringValue":"GET"}},
 {"key":"server.port","value":{"intValue":"8080"}},
 {"key":"peer.service","value":{"stringValue":"cart"}}],
 "droppedAttributesCount":0,"events":[{"timeUnixNano":"1544712660500000000","name":"ev",
 "attributes":[{"key":"peer.service","value":{"stringValue":"not-a-span-attribute"}}]}],
 "droppedEventsCount":0,"status":{"code":2,"message":"boom"},
 "links":[{"traceId":"5b8efff798038103d269b633813fc60d","spanId":"eee19b7ec3c1b175",
 "attributes":[]}]}]}]}]}"""


def test_sdk_style_json(decoder: SpanDecoder, strings: StringTable) -> None:
    [row] = rows(decoder.decode_json(SDK_JSON), strings)
    assert row["trace"] == "5b8efff798038103d269b633813fc60c"
    assert (row["span"], row["parent"]) == ("eee19b7ec3c1b174", "eee19b7ec3c1b173")
    assert (row["kind"], row["status"], row["service"]) == (KIND_CLIENT, STATUS_ERROR, "checkout")
    assert (row["start"], row["end"]) == (1544712660000000000, 1544712661000000000)
    assert (row["dim:peer.service"], row["virtual_peer"]) == ("cart", "cart")
    assert (row["link_trace"], row["link_span"]) == (
        "5b8efff798038103d269b633813fc60d",
        "eee19b7ec3c1b175",
    )


def test_json_snake_case_enum_names_and_numeric_int64(
    decoder: SpanDecoder, strings: StringTable
) -> None:
    doc = {
        "resource_spans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"string_value": "api"}}]
                },
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": "0102030405060708090a0b0c0d0e0f10",
                                "span_id": "1112131415161718",
                                "kind": "SPAN_KIND_SERVER",
                                "start_time_unix_nano": 1700000000000000001,
                                "end_time_unix_nano": "1700000000000000002",
                                "status": {"code": "STATUS_CODE_OK"},
                                "attributes": [{"key": "db.system", "value": {"int_value": 7}}],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    [row] = rows(decoder.decode_json(json.dumps(doc).encode()), strings)
    assert row["trace"] == "0102030405060708090a0b0c0d0e0f10"
    assert (row["kind"], row["status"], row["service"]) == (KIND_SERVER, STATUS_OK, "api")
    assert (row["start"], row["end"]) == (1700000000000000001, 1700000000000000002)
    assert row["dim:db.system"] == "7"


def _snake_case(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {re.sub(r"([A-Z])", r"_\1", k).lower(): _snake_case(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_snake_case(v) for v in obj]
    return obj


def test_json_snake_case_documents_match_reference(
    decoder: SpanDecoder, strings: StringTable
) -> None:
    rng = random.Random(99)
    for _ in range(20):
        msg = random_traces(rng)
        doc = _snake_case(json.loads(encode_json(msg)))
        assert "resource_spans" in doc
        assert rows(decoder.decode_json(json.dumps(doc).encode()), strings) == reference_rows(msg)


def test_json_uppercase_hex_ids(decoder: SpanDecoder, strings: StringTable) -> None:
    payload = SDK_JSON.replace(
        b"5b8efff798038103d269b633813fc60c", b"5B8EFFF798038103D269B633813FC60C"
    )
    assert (
        rows(decoder.decode_json(payload), strings)[0]["trace"]
        == "5b8efff798038103d269b633813fc60c"
    )


# ---------------------------------------------------------------------------- malformed


def _proto_with_span(**fields: Any) -> bytes:
    sp = trace_pb2.Span(trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)), name="x")
    for k, v in fields.items():
        setattr(sp, k, v)
    return traces(("s", [sp])).SerializeToString()


def _json_with_span(**fields: Any) -> bytes:
    sp = {
        "traceId": "0102030405060708090a0b0c0d0e0f10",
        "spanId": "0102030405060708",
        "name": "x",
        "startTimeUnixNano": "1",
        "endTimeUnixNano": "2",
    }
    sp.update(fields)
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [sp]}]}]}).encode()


VALID = traces(("s", [span(1, 1)])).SerializeToString()
BAD_PROTO = {
    "garbage bytes": b"\xff\xff\xff\xff\xff",
    "truncated": VALID[:-3],
    "json to proto": SDK_JSON,
    "gzip not undone": compress(VALID, "gzip"),
    "only unknown fields": b"\x10\x01",
    "trace id 15 bytes": _proto_with_span(trace_id=bytes(15)),
    "trace id absent": _proto_with_span(trace_id=b""),
    "span id 7 bytes": _proto_with_span(span_id=bytes(7)),
    "parent id 4 bytes": _proto_with_span(parent_span_id=bytes(4)),
    "link trace id 8 bytes": traces(("s", [span(1, 1, links=[(1, 1)])]))
    .SerializeToString()
    .replace(
        b"\x0a\x10" + (1).to_bytes(16, "big") + b"\x12\x08",
        b"\x0a\x08" + (1).to_bytes(8, "big") + b"\x12\x08",
    ),
}
BAD_JSON = {
    "not json": b"\x00\x01garbage",
    "truncated json": SDK_JSON[:-10],
    "array": b"[1, 2]",
    "string": b'"resourceSpans"',
    "resourceSpans not a list": b'{"resourceSpans": {}}',
    "span not an object": b'{"resourceSpans": [{"scopeSpans": [{"spans": [42]}]}]}',
    "base64 trace id": _json_with_span(traceId=base64.b64encode(bytes(range(16))).decode()),
    "base64 trace id of hex length": _json_with_span(
        traceId=base64.b64encode(bytes(range(24))).decode()
    ),
    "non-hex trace id": _json_with_span(traceId="zz02030405060708090a0b0c0d0e0f10"),
    "spaces in trace id": _json_with_span(traceId="01 02030405060708090a0b0c0d0e0f1"),
    "trace id too short": _json_with_span(traceId="0102"),
    "trace id absent": _json_with_span(traceId=""),
    "trace id number": _json_with_span(traceId=12),
    "span id 16 hex chars too long": _json_with_span(spanId="0102030405060708aa"),
    "parent id wrong length": _json_with_span(parentSpanId="0102"),
    "link span id bad": _json_with_span(links=[{"traceId": "01" * 16, "spanId": "xyz"}]),
    "unknown kind name": _json_with_span(kind="SPAN_KIND_SIDEWAYS"),
    "bad int64 string": _json_with_span(startTimeUnixNano="12abc"),
    "fractional int64": _json_with_span(startTimeUnixNano=1.5),
    "bool int64": _json_with_span(endTimeUnixNano=True),
    "attribute value not an object": _json_with_span(
        attributes=[{"key": "peer.service", "value": "x"}]
    ),
    "intValue not an integer": _json_with_span(
        attributes=[{"key": "peer.service", "value": {"intValue": "x"}}]
    ),
    "attributes not a list": _json_with_span(attributes=5),
    "invalid utf-8": b'{"resourceSpans": [\xff]}',
}


@pytest.mark.parametrize("name", sorted(BAD_PROTO))
def test_malformed_proto_raises_decode_error(decoder: SpanDecoder, name: str) -> None:
    with pytest.raises(DecodeError) as info:
        decoder.decode_proto(BAD_PROTO[name])
    assert str(info.value)


@pytest.mark.parametrize("name", sorted(BAD_JSON))
def test_malformed_json_raises_decode_error(decoder: SpanDecoder, name: str) -> None:
    with pytest.raises(DecodeError) as info:
        decoder.decode_json(BAD_JSON[name])
    assert str(info.value)


def test_error_messages_say_what_was_wrong(decoder: SpanDecoder) -> None:
    with pytest.raises(DecodeError, match="trace_id is 15 bytes, expected 16"):
        decoder.decode_proto(BAD_PROTO["trace id 15 bytes"])
    with pytest.raises(DecodeError, match="traceId .* 32 hex characters"):
        decoder.decode_json(BAD_JSON["base64 trace id"])
    with pytest.raises(DecodeError, match="not a hex id"):
        decoder.decode_json(BAD_JSON["non-hex trace id"])
    with pytest.raises(DecodeError, match="must be a JSON object"):
        decoder.decode_json(b'"a string"')


def test_json_fractional_but_integral_number_is_accepted(decoder: SpanDecoder) -> None:
    assert decoder.decode_json(_json_with_span(startTimeUnixNano=1e18)).start_ns.tolist() == [
        10**18
    ]


# ---------------------------------------------------------------------------- registry / records


def test_registry_dispatch_and_unknown_encoding(decoder: SpanDecoder) -> None:
    assert encodings() == ["otlp_proto", "otlp_json"]
    assert len(decoder.decode(VALID, "otlp_proto")) == 1
    with pytest.raises(ConfigError, match="otlp_proto"):
        get_decoder("zipkin_json")
    with pytest.raises(ConfigError):
        decoder.decode(VALID, "jaeger")


def test_the_config_accepts_exactly_the_registered_encodings() -> None:
    from typing import get_args

    from processor.config.components import Encoding

    assert list(get_args(Encoding)) == encodings()


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_decode_records_equals_one_by_one_and_sets_offsets(encoding: str) -> None:
    rng = random.Random(11)
    msgs = [random_traces(rng) for _ in range(12)] + [trace_pb2.TracesData()]
    encode = (lambda m: m.SerializeToString()) if encoding == "otlp_proto" else encode_json
    payloads = [encode(m) for m in msgs]
    offsets = list(range(100, 100 + len(payloads)))
    strings = StringTable()
    decoder = SpanDecoder(strings, SERVICEGRAPH)
    batch, errors = decoder.decode_records(payloads, encoding, offsets)
    assert errors == []
    want = []
    for msg, off in zip(msgs, offsets, strict=True):
        want += [dict(r, offset=off) for r in reference_rows(msg)]
    assert rows(batch, strings) == want
    check_dtypes(batch)


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_decode_records_isolates_bad_records(encoding: str) -> None:
    good = traces(("s", [span(1, 1), span(1, 2, parent=1)]))
    if encoding == "otlp_proto":
        ok = good.SerializeToString()
        # A record cut short would swallow the next record's bytes if parsed together.
        bad = [ok[:-4], b"\x10\x01", _proto_with_span(trace_id=bytes(3))]
    else:
        ok = encode_json(good)
        bad = [ok[:-4], b"[1, 2]", _json_with_span(traceId="00")]
    payloads = [ok, bad[0], ok, bad[1], ok, bad[2], ok]
    strings = StringTable()
    batch, errors = SpanDecoder(strings, SERVICEGRAPH).decode_records(payloads, encoding, list(range(7)))
    assert [i for i, _ in errors] == [1, 3, 5]
    assert all(isinstance(e, DecodeError) for _, e in errors)
    assert batch.offset.tolist() == [0, 0, 2, 2, 4, 4, 6, 6]
    assert batch.span_id.tolist() == [1, 2] * 4


def test_decode_records_without_offsets() -> None:
    batch, errors = SpanDecoder(StringTable(), SERVICEGRAPH).decode_records([VALID, VALID], "otlp_proto")
    assert errors == [] and batch.offset.tolist() == [-1, -1]
    assert len(SpanDecoder(StringTable(), SERVICEGRAPH).decode_records([], "otlp_proto").batch) == 0


def test_bare_resource_spans_array_as_rotel_writes_it_decodes(
    decoder: SpanDecoder, strings: StringTable
) -> None:
    body = (
        b'[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},'
        b'"scopeSpans":[{"spans":[{"traceId":"7b10e86e59d53bf4e937bcf797c6e540",'
        b'"spanId":"92b14d7f0ff7e53b","parentSpanId":"66608e03bee372aa","kind":2,'
        b'"startTimeUnixNano":"1795838058052312334","endTimeUnixNano":"1795838058052323814",'
        b'"status":{"code":0}}]}]}]'
    )
    [row] = rows(decoder.decode_json(body), strings)
    assert (row["service"], row["span"], row["kind"]) == ("api", "92b14d7f0ff7e53b", KIND_SERVER)
    assert row["parent"] == "66608e03bee372aa"


def test_decode_records_in_small_chunks_isolates_a_bad_record() -> None:
    rng = random.Random(5)
    msgs = [random_traces(rng) for _ in range(9)]
    payloads = [m.SerializeToString() for m in msgs]
    payloads[4] = payloads[4][:-2]  # cut short: would swallow record 5 if parsed with it
    want = []
    for i, msg in enumerate(msgs):
        if i != 4:
            want += [dict(r, offset=i) for r in reference_rows(msg)]
    # Payloads are 1-5 kB: 5000-byte chunks put the bad record with a good one; the default
    # puts all nine in one chunk.
    for chunk_bytes in (5000, 1 << 20):
        strings = StringTable()
        batch, errors = SpanDecoder(strings, SERVICEGRAPH).decode_records(
            payloads, "otlp_proto", offsets=list(range(9)), chunk_bytes=chunk_bytes
        )
        assert [i for i, _ in errors] == [4]
        assert rows(batch, strings) == want


def test_decoding_leaves_the_garbage_collector_as_it_was(decoder: SpanDecoder) -> None:
    assert gc.isenabled()
    decoder.decode_proto(VALID)
    decoder.decode_records([VALID, VALID], "otlp_proto")
    with pytest.raises(DecodeError):
        decoder.decode_json(b"[1]")
    assert gc.isenabled()
    gc.disable()
    try:
        decoder.decode_json(SDK_JSON)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_uint64_timestamps_past_int64_saturate_instead_of_wrapping_negative(decoder: SpanDecoder) -> None:
    sp = span(1, 1)
    sp.start_time_unix_nano = 2**63 + 5
    sp.end_time_unix_nano = 2**64 - 1
    for batch in (decoder.decode_proto(traces(("x", [sp])).SerializeToString()),
                  decoder.decode_json(encode_json(traces(("x", [sp]))))):
        assert batch.start_ns.tolist() == [2**63 - 1]
        assert batch.end_ns.tolist() == [2**63 - 1]  # far future: rejected later, never 1969


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_extracted_headers_are_resource_attributes_of_their_record(encoding: str) -> None:
    """header_extraction: a record's header `tenant` is kafka.header.tenant on every resource
    of that record (overriding a resource attribute of that name), for columns that read it."""
    sg = ServiceGraphConfig(dimensions=("kafka.header.tenant", "kafka.header.zone"))
    msg = traces(("a", [span(1, 1), span(1, 2)]), ("b", [span(1, 3)]))
    msg.resource_spans[1].resource.attributes.append(kv("kafka.header.tenant", "from-resource"))
    payload = msg.SerializeToString() if encoding == "otlp_proto" else encode_json(msg)
    headers = [[("tenant", b"acme"), ("tenant", b"second")], [], [("other", b"x")]]
    for chunk_bytes in (1, 1 << 20):  # one record at a time, and parsed together
        strings = StringTable()
        decoder = SpanDecoder(strings, sg, extract_headers=("tenant", "zone"))
        got = decoder.decode_records([payload] * 3, encoding, [5, 6, 7], chunk_bytes=chunk_bytes,
                                     headers=headers)
        tenants = [strings.lookup(int(c)) for c in got.batch.dims[:, 0]]
        assert tenants == ["acme"] * 3 + ["", "", "from-resource"] * 2
        assert got.batch.dims[:, 1].tolist() == [0] * 9  # zone: extracted, never sent
        assert got.batch.offset.tolist() == [5, 5, 5, 6, 6, 6, 7, 7, 7]


def test_headers_are_ignored_unless_extracted_and_read() -> None:
    strings = StringTable()
    sg = ServiceGraphConfig(dimensions=("kafka.header.tenant",))
    payload = traces(("a", [span(1, 1)])).SerializeToString()
    for decoder in (SpanDecoder(strings, sg), SpanDecoder(strings, ServiceGraphConfig(),
                                                          extract_headers=("tenant",))):
        got = decoder.decode_records([payload], "otlp_proto", headers=[[("tenant", b"acme")]])
        assert not got.batch.dims.any()
    assert "acme" not in strings.strings  # never even read
