"""The `otlp_proto` decoder: serialized TracesData / ExportTraceServiceRequest -> SpanBatch.

Speed comes from doing per-span work in C: the payload is parsed into the partial views of
`wire_view`, and every column is pulled out with `map(attrgetter(...))` over the span list, so
the interpreter loops per payload, not per span. Attributes and links come from a second,
merged parse (View M) as flat lists; only the few attributes that feed a column are looked at,
through caches keyed by their serialized bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, compress, repeat
from operator import attrgetter, getitem
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.trace.v1 import trace_pb2

from processor.errors import DecodeError
from processor.otlp.attributes import DecodeContext, merge_hits, resource_span_hits
from processor.otlp.batch import KIND_CONSUMER, STATUS_ERROR, SpanBatch, saturate_int64
from processor.otlp.wire_view import TracesDataAttributesView, TracesDataView

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
_last_link = attrgetter("links")
_attributes = attrgetter("attributes")
_ALL = slice(None)  # container[:] builds the wrapper list in one C call, faster than iterating

_EMPTY_TO_ZERO = {b"": bytes(8)}  # used as .get(raw, raw): an absent parent id becomes 0


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
    rss = parse(payload)
    batch, _, _ = decode_resource_spans(payload, rss, ctx, [ctx.record_hits] * len(rss))
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
    payload: bytes, rss: list[Any], ctx: DecodeContext,
    extra: Sequence[tuple[tuple[int, int], ...]] | None = None,
) -> tuple[SpanBatch, np.ndarray, np.ndarray]:
    """Batch of every span in `rss` (the ResourceSpans views of `payload` that hold spans), plus
    per ResourceSpans its span count and service code (resources cached by their bytes).
    ``extra``: per ResourceSpans, resource attribute hits its record adds (headers)."""
    resources = list(map(_resource, rss))
    infos = list(map(ctx.resource_info.get, resources))
    if None in infos:
        infos = [ctx.resource(r) if i is None else i for r, i in zip(resources, infos, strict=True)]
    services = [i[0] for i in infos]  # type: ignore[index]
    rs_hits = [i[1] for i in infos]  # type: ignore[index]
    if extra is not None and any(extra):
        rs_hits = [merge_hits(h, e) for h, e in zip(rs_hits, extra, strict=True)]
    scope_lists = list(map(_scope_spans, rss))
    span_lists = list(map(getitem, map(_spans, chain.from_iterable(scope_lists)), repeat(_ALL)))
    spans: list[Any] = list(chain.from_iterable(span_lists))
    n = len(spans)

    spans_per_scope = np.fromiter(map(len, span_lists), dtype=np.int64, count=len(span_lists))
    scopes_per_rs = np.fromiter(map(len, scope_lists), dtype=np.int64, count=len(rss))
    rs_of_scope = np.repeat(np.arange(len(rss)), scopes_per_rs)
    spans_per_rs = np.bincount(rs_of_scope, weights=spans_per_scope, minlength=len(rss))
    spans_per_rs = spans_per_rs.astype(np.int64)
    service_rs = np.array(services, dtype=np.int32)
    if n == 0:
        return SpanBatch.empty(), spans_per_rs, service_rs

    trace = _join_ids(list(map(_trace_id, spans)), 16, "trace_id")
    span_id = _join_ids(list(map(_span_id, spans)), 8, "span_id")
    parent = _join_ids(list(map(_parent_span_id, spans)), 8, "parent_span_id", optional=True)

    kind = np.fromiter(map(_kind, spans), dtype=np.int32, count=n)
    kind[(kind < 0) | (kind > KIND_CONSUMER)] = 0  # unknown enum values read as UNSPECIFIED

    raw_status = list(map(_status, spans))
    codes = list(map(ctx.status_codes.get, raw_status))
    if None in codes:
        codes = [
            ctx.status_code(raw) if c is None else c
            for raw, c in zip(raw_status, codes, strict=True)
        ]
    status = np.array(codes, dtype=np.int32)
    status[(status < 0) | (status > STATUS_ERROR)] = 0

    cols: dict[str, object] = {
        "trace_hi": trace[:, 0],
        "trace_lo": trace[:, 1],
        "span_id": span_id[:, 0],
        "parent_span_id": parent[:, 0],
        "service": np.repeat(service_rs, spans_per_rs),
        "kind": kind,
        "start_ns": saturate_int64(np.fromiter(map(_start, spans), dtype=np.uint64, count=n)),
        "end_ns": saturate_int64(np.fromiter(map(_end, spans), dtype=np.uint64, count=n)),
        "status": status,
    }
    merged = _Merged(payload)
    cols.update(_first_links(spans, n, merged, payload))
    res_hits = resource_span_hits(rs_hits, spans_per_rs) if any(rs_hits) else None
    cols.update(_attribute_columns(spans, n, merged, ctx, res_hits))
    return SpanBatch.from_columns(cols), spans_per_rs, service_rs


class _Merged:
    """View M of the payload (all spans merged into one message), parsed on first use."""

    def __init__(self, payload: bytes) -> None:
        self._payload = payload
        self._spans: Any = None

    @property
    def spans(self) -> Any:
        if self._spans is None:
            try:
                view = TracesDataAttributesView.FromString(self._payload)
            except ProtobufDecodeError as exc:
                raise DecodeError(f"not a valid OTLP protobuf TracesData: {exc}") from None
            self._spans = view.resource_spans.scope_spans.spans
        return self._spans


def _first_links(
    spans: list[Any], n: int, merged: _Merged, payload: bytes
) -> dict[str, np.ndarray]:
    hi = np.zeros(n, dtype=np.uint64)
    lo = np.zeros(n, dtype=np.uint64)
    sid = np.zeros(n, dtype=np.uint64)
    last_links = list(map(_last_link, spans))
    # Spans whose (last) link is non-empty; a link serialized empty has no ids to pair by.
    rows = list(compress(range(n), last_links))
    if not rows:
        return {"link_trace_hi": hi, "link_trace_lo": lo, "link_span_id": sid}
    if len(merged.spans.links) == len(rows):
        # One link per linked span, so View A's last link is also the first.
        raws = [last_links[row] for row in rows]
    else:
        raws = _exact_first_links(payload, rows)
    for row, raw in zip(rows, raws, strict=True):  # links are rare (messaging, batch jobs)
        try:
            link = trace_pb2.Span.Link.FromString(raw)
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


def _exact_first_links(payload: bytes, rows: list[int]) -> list[bytes]:
    """First link of each row when some span has several: a full parse with the real classes."""
    data = trace_pb2.TracesData.FromString(payload)
    spans = [s for rs in data.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return [spans[row].links[0].SerializeToString() for row in rows]


Hits = tuple[np.ndarray, np.ndarray, np.ndarray]  # (span row, key id, value code)


def _with(hits: Hits, more: Hits | None) -> Hits:
    if more is None:
        return hits
    return tuple(np.concatenate([a, b]) for a, b in zip(hits, more, strict=True))  # type: ignore[return-value]


def _attribute_columns(
    spans: list[Any], n: int, merged: _Merged, ctx: DecodeContext, res_hits: Hits | None
) -> dict[str, np.ndarray]:
    plan = ctx.plan
    attr_lists = list(map(_attributes, spans))
    counts = np.fromiter(map(len, attr_lists), dtype=np.int64, count=n)
    total = int(counts.sum())
    empty = np.zeros(0, dtype=np.int64)
    if total == 0:
        return plan.resolve(n, *_with((empty, empty, empty.astype(np.int32)), res_hits))
    kvs = merged.spans.attributes
    values = kvs.value
    if len(kvs.key) != total or len(values) != total:
        # Some KeyValue lacks its key or value field (legal, unusual): lists are misaligned.
        return _attribute_columns_exact(attr_lists, n, ctx, res_hits)
    key_ids = np.fromiter(
        map(plan.key_ids_utf8.get, kvs.key[_ALL], repeat(-1)), dtype=np.int64, count=total
    )
    hit_idx = np.flatnonzero(key_ids >= 0)
    hit_values = list(map(values.__getitem__, hit_idx.tolist()))
    codes = list(map(ctx.value_codes.get, hit_values))
    if None in codes:
        codes = [
            ctx.value_code(v) if c is None else c for v, c in zip(hit_values, codes, strict=True)
        ]
    owner = np.repeat(np.arange(n), counts)
    hits = (owner[hit_idx], key_ids[hit_idx], np.array(codes, dtype=np.int32))
    return plan.resolve(n, *_with(hits, res_hits))


def _attribute_columns_exact(
    attr_lists: list[Any], n: int, ctx: DecodeContext, res_hits: Hits | None
) -> dict[str, np.ndarray]:
    spans, keys, codes = [], [], []
    for row, raws in enumerate(attr_lists):
        for raw in raws:
            hit = ctx.attribute_hit(raw)
            if hit is not None:
                spans.append(row)
                keys.append(hit[0])
                codes.append(hit[1])
    hits = (np.array(spans, dtype=np.int64), np.array(keys, dtype=np.int64),
            np.array(codes, dtype=np.int32))
    return ctx.plan.resolve(n, *_with(hits, res_hits))
