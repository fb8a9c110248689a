"""The `otlp_proto` decoder: serialized TracesData / ExportTraceServiceRequest -> SpanBatch.

Speed comes from doing per-span work in C: the payload is parsed into the partial views of
`wire_view`, and every column is pulled out with `map(attrgetter(...))` over the span list, so
the Python interpreter runs per payload, not per span. Attributes are matched on their raw
serialized bytes (vectorised with numpy) and only the few that feed a column are parsed.
"""

from __future__ import annotations

from itertools import chain, compress, repeat
from operator import attrgetter

import numpy as np
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.trace.v1 import trace_pb2

from processor.errors import DecodeError
from processor.otlp.attributes import DecodeContext
from processor.otlp.batch import KIND_CONSUMER, STATUS_ERROR, SpanBatch
from processor.otlp.wire_view import TracesDataView

_resource = attrgetter("resource")
_scope_spans = attrgetter("scope_spans")
_spans = attrgetter("spans")
_trace_id = attrgetter("trace_id")
_span_id = attrgetter("span_id")
_parent_span_id = attrgetter("parent_span_id")
_kind = attrgetter("kind")
_start = attrgetter("start_time_unix_nano")
_end = attrgetter("end_time_unix_nano")
_status = attrgetter("status")
_links = attrgetter("links")
_attributes = attrgetter("attributes")
_ALL = slice(None)

_ZERO_ID = bytes(8)
_EMPTY_TO_ZERO = {b"": _ZERO_ID}  # used as .get(raw, raw): an absent parent id becomes 0
# Serialized Status messages as every SDK writes them (code only); anything else is parsed.
_STATUS_FAST = {b"": 0, b"\x18\x00": 0, b"\x18\x01": 1, b"\x18\x02": 2}


def parse(payload: bytes) -> list[object]:
    """The ResourceSpans views of a payload; DecodeError if it is not OTLP protobuf."""
    try:
        rss: list[object] = TracesDataView.FromString(payload).resource_spans[:]
    except ProtobufDecodeError as exc:
        raise DecodeError(f"not a valid OTLP protobuf TracesData: {exc}") from None
    if not rss and payload:
        # Only unknown fields: most likely another encoding (JSON) or a compressed payload.
        raise DecodeError(
            f"not an OTLP protobuf TracesData: {len(payload)} bytes without resource_spans"
        )
    return rss


def decode_proto(payload: bytes, ctx: DecodeContext) -> SpanBatch:
    batch, _, _ = decode_resource_spans(parse(payload), ctx)
    return batch


def _join_ids(ids: list[bytes], width: int, what: str, optional: bool = False) -> np.ndarray:
    """Fixed-width ids -> (n, width // 8) big-endian uint64 array; absent ids 0 if optional."""
    lengths = set(map(len, ids))
    if lengths != {width}:
        allowed = {width, 0} if optional else {width}
        bad = lengths - allowed
        if bad:
            row = next(i for i, raw in enumerate(ids) if len(raw) in bad)
            raise DecodeError(f"span {row}: {what} is {len(ids[row])} bytes, expected {width}")
        if ids:
            ids = list(map(_EMPTY_TO_ZERO.get, ids, ids))  # type: ignore[arg-type]
    words = np.frombuffer(b"".join(ids), dtype=">u8").reshape(len(ids), width // 8)
    return words.astype(np.uint64)


def decode_resource_spans(
    rss: list[object], ctx: DecodeContext
) -> tuple[SpanBatch, np.ndarray, np.ndarray]:
    """Batch of every span in the ResourceSpans views, plus per ResourceSpans its span count
    and service code (resources cached by their serialized bytes)."""
    resources = list(map(_resource, rss))
    cache_get = ctx.resource_service.get
    services = list(map(cache_get, resources))
    if None in services:
        services = [ctx.service_code(r) if s is None else s for r, s in zip(resources, services)]
    scope_lists = list(map(_scope_spans, rss))
    scopes = list(chain.from_iterable(scope_lists))
    # Slicing a repeated field builds the wrapper list in one C call, faster than iterating.
    span_lists = list(map(getattr_slice, map(_spans, scopes)))
    spans = list(chain.from_iterable(span_lists))
    n = len(spans)

    spans_per_scope = np.fromiter(map(len, span_lists), dtype=np.int64, count=len(scopes))
    scopes_per_rs = np.fromiter(map(len, scope_lists), dtype=np.int64, count=len(rss))
    rs_of_scope = np.repeat(np.arange(len(rss)), scopes_per_rs)
    spans_per_rs = np.bincount(rs_of_scope, weights=spans_per_scope, minlength=len(rss))
    service_rs = np.array(services, dtype=np.int32)
    if n == 0:
        return SpanBatch.empty(), spans_per_rs.astype(np.int64), service_rs

    trace = _join_ids(list(map(_trace_id, spans)), 16, "trace_id")
    span_id = _join_ids(list(map(_span_id, spans)), 8, "span_id")
    parent = _join_ids(list(map(_parent_span_id, spans)), 8, "parent_span_id", optional=True)

    kind = np.fromiter(map(_kind, spans), dtype=np.int32, count=n)
    kind[(kind < 0) | (kind > KIND_CONSUMER)] = 0  # unknown enum values read as UNSPECIFIED

    raw_status = list(map(_status, spans))
    status_codes = list(map(_STATUS_FAST.get, raw_status))
    if None in status_codes:
        status_codes = [_status_code(raw) if c is None else c for raw, c in zip(raw_status, status_codes)]
    status = np.array(status_codes, dtype=np.int32)
    status[(status < 0) | (status > STATUS_ERROR)] = 0

    cols: dict[str, object] = {
        "trace_hi": trace[:, 0],
        "trace_lo": trace[:, 1],
        "span_id": span_id[:, 0],
        "parent_span_id": parent[:, 0],
        "service": np.repeat(service_rs, spans_per_rs.astype(np.int64)),
        "kind": kind,
        "start_ns": np.fromiter(map(_start, spans), dtype=np.uint64, count=n).view(np.int64),
        "end_ns": np.fromiter(map(_end, spans), dtype=np.uint64, count=n).view(np.int64),
        "status": status,
    }
    cols.update(_first_links(spans, n))
    cols.update(_attribute_columns(spans, n, ctx))
    return SpanBatch.from_columns(cols), spans_per_rs.astype(np.int64), service_rs


def getattr_slice(container: object) -> list[object]:
    return container[_ALL]  # type: ignore[index,no-any-return]


def _status_code(raw: bytes) -> int:
    try:
        return int(trace_pb2.Status.FromString(raw).code)
    except ProtobufDecodeError as exc:
        raise DecodeError(f"invalid span status: {exc}") from None


def _first_links(spans: list[object], n: int) -> dict[str, np.ndarray]:
    link_lists = list(map(_links, spans))
    rows = np.flatnonzero(np.fromiter(map(len, link_lists), dtype=np.int64, count=n))
    hi = np.zeros(n, dtype=np.uint64)
    lo = np.zeros(n, dtype=np.uint64)
    sid = np.zeros(n, dtype=np.uint64)
    for row in rows.tolist():  # links are rare (messaging, batch jobs): per-link Python is fine
        try:
            link = trace_pb2.Span.Link.FromString(link_lists[row][0])
        except ProtobufDecodeError as exc:
            raise DecodeError(f"span {row}: invalid link: {exc}") from None
        if len(link.trace_id) != 16 or len(link.span_id) != 8:
            raise DecodeError(
                f"span {row}: link ids are {len(link.trace_id)}/{len(link.span_id)} bytes,"
                " expected 16/8"
            )
        hi[row] = int.from_bytes(link.trace_id[:8], "big")
        lo[row] = int.from_bytes(link.trace_id[8:], "big")
        sid[row] = int.from_bytes(link.span_id, "big")
    return {"link_trace_hi": hi, "link_trace_lo": lo, "link_span_id": sid}


def _attribute_columns(spans: list[object], n: int, ctx: DecodeContext) -> dict[str, np.ndarray]:
    plan = ctx.plan
    attr_lists = list(map(_attributes, spans))
    counts = np.fromiter(map(len, attr_lists), dtype=np.int64, count=n)
    raws: list[bytes] = list(chain.from_iterable(attr_lists))
    if not raws:
        return plan.resolve(n, *(np.zeros(0, dtype=np.int64),) * 3)
    lengths = np.fromiter(map(len, raws), dtype=np.int64, count=len(raws))
    starts = np.cumsum(lengths) - lengths
    blob = np.frombuffer(b"".join(raws) + b"\0\0", dtype=np.uint8)
    first, second = blob[starts], blob[starts + 1]
    present = lengths > 0
    canonical = present & (first == 0x0A)
    # Cheap vectorised filter on the key-length byte; startswith then checks the exact key.
    cand = np.flatnonzero(canonical & plan.prefix_second_byte[second]).tolist()
    cand_raws = [raws[i] for i in cand]
    is_hit = list(map(bytes.startswith, cand_raws, repeat(plan.prefixes)))
    hit_idx = list(compress(cand, is_hit))
    hit_raws = list(compress(cand_raws, is_hit))
    hits = list(map(ctx.attribute_hits.get, hit_raws))
    if None in hits:
        hits = [ctx.attribute_hit(r) if h is None else h for r, h in zip(hit_raws, hits)]
    # KeyValues not starting with their key field are legal protobuf, just unusual: parse them.
    odd = np.flatnonzero(present & ~canonical).tolist()
    if odd or None in hits:
        pairs = [(i, h) for i, h in zip(hit_idx, hits) if h is not None]
        pairs += [(i, h) for i, h in ((i, ctx.attribute_hit(raws[i])) for i in odd) if h is not None]
        pairs.sort()  # attribute order within a span decides between duplicate keys
        hit_idx = [i for i, _ in pairs]
        hits = [h for _, h in pairs]
    owner = np.repeat(np.arange(n), counts)
    idx = np.array(hit_idx, dtype=np.int64)
    key_code = np.array(hits, dtype=np.int64).reshape(-1, 2)
    return plan.resolve(n, owner[idx], key_code[:, 0], key_code[:, 1].astype(np.int32))
