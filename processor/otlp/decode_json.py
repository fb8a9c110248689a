"""The `otlp_json` decoder: OTLP/JSON (hex ids, camelCase or snake_case keys) -> SpanBatch.

Walks the parsed JSON dicts directly: protobuf's json_format would expect base64 ids, which
OTLP/JSON replaces with hex. One pass per span that only appends raw values (column-wise
passes are slower here: each revisits every span dict, which is no longer in the CPU cache);
ids, times, enums and attribute values are then converted per column.
"""

from __future__ import annotations

import json
from itertools import chain, compress, repeat
from typing import Any

import numpy as np

from processor.errors import DecodeError
from processor.otlp.attributes import (
    DecodeContext,
    json_any_value_str,
    merge_hits,
    resource_span_hits,
)
from processor.otlp.batch import SpanBatch

_KIND_NAMES = (
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
)
_STATUS_NAMES = ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")
_KINDS: dict[Any, int] = {**{n: i for i, n in enumerate(_KIND_NAMES)}, **{i: i for i in range(6)}}
_STATUSES: dict[Any, int] = {
    **{n: i for i, n in enumerate(_STATUS_NAMES)},
    **{i: i for i in range(3)},
}


def load_document(payload: bytes) -> dict[str, Any]:
    """Parse an OTLP/JSON payload into its top-level object (DecodeError when it is not one)."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None
    except RecursionError:  # hostile nesting must not take the worker down
        raise DecodeError("not valid OTLP/JSON: nested too deeply") from None
    if isinstance(doc, list):
        # rotel's kafka exporter writes the bare resourceSpans array.
        doc = {"resourceSpans": doc}
    if not isinstance(doc, dict):
        raise DecodeError(f"OTLP/JSON payload must be a JSON object, not {type(doc).__name__}")
    return doc


def decode_json(payload: bytes, ctx: DecodeContext) -> SpanBatch:
    if not payload.strip():
        return SpanBatch.empty()
    doc = load_document(payload)
    try:
        return _decode_document(doc, ctx)
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        # Cheap structural checks happen per level; anything else malformed lands here.
        raise DecodeError(f"invalid OTLP/JSON structure: {type(exc).__name__}: {exc}") from None


_get = dict.get  # unbound: map(_get, dicts, repeat(key)) runs in C (TypeError on non-dicts)


def _field(obj: Any, camel: str, snake: str, what: str) -> list[Any]:
    if not isinstance(obj, dict):
        raise DecodeError(f"{what} entries must be JSON objects, not {type(obj).__name__}")
    value = obj.get(camel)
    if value is None:
        value = obj.get(snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DecodeError(f"{camel} must be a JSON array, not {type(value).__name__}")
    return value


def _resource(resource_spans: dict[str, Any], ctx: DecodeContext
              ) -> tuple[int, tuple[tuple[int, int], ...]]:
    """(service.name code, resource hits of the plan's resource keys and the record's headers)."""
    resource = resource_spans.get("resource") or {}
    if not isinstance(resource, dict):
        raise DecodeError("resource must be a JSON object")
    service, hits = ctx.resource_of(((kv.get("key"), kv.get("value"))
                                     for kv in resource.get("attributes") or ()), json=True)
    return service, merge_hits(hits, ctx.record_hits)


def _decode_document(doc: dict[str, Any], ctx: DecodeContext) -> SpanBatch:
    trace_ids: list[Any] = []
    span_ids: list[Any] = []
    parent_ids: list[Any] = []
    kinds: list[Any] = []
    starts: list[Any] = []
    ends: list[Any] = []
    statuses: list[Any] = []
    services: list[int] = []
    rs_hits: list[tuple[tuple[int, int], ...]] = []
    spans_per_rs: list[int] = []
    link_lists: list[Any] = []
    attribute_lists: list[Any] = []
    for rs in _field(doc, "resourceSpans", "resource_spans", "payload"):
        service, hits = _resource(rs, ctx)
        rs_hits.append(hits)
        spans_per_rs.append(len(services))
        for ss in _field(rs, "scopeSpans", "scope_spans", "resourceSpans"):
            spans = _field(ss, "spans", "spans", "scopeSpans")
            services += repeat(service, len(spans))
            for sp in spans:
                get = sp.get
                trace_ids.append(get("traceId") or get("trace_id") or "")
                span_ids.append(get("spanId") or get("span_id") or "")
                parent_ids.append(get("parentSpanId") or get("parent_span_id") or "")
                kinds.append(get("kind", 0))
                starts.append(get("startTimeUnixNano") or get("start_time_unix_nano") or 0)
                ends.append(get("endTimeUnixNano") or get("end_time_unix_nano") or 0)
                status = get("status")
                statuses.append(status.get("code", 0) if status else 0)
                link_lists.append(get("links"))
                # Attributes are matched afterwards, in C over all spans (see _attribute_hits).
                attribute_lists.append(get("attributes") or ())
    if not trace_ids:
        return SpanBatch.empty()
    rs_first = np.array(spans_per_rs + [len(services)], dtype=np.int64)
    res_hits = resource_span_hits(rs_hits, np.diff(rs_first)) if any(rs_hits) else None
    links = []  # (row, traceId, spanId) of each span's first link
    for row in compress(range(len(link_lists)), link_lists):  # links are rare
        first = link_lists[row][0]
        links.append(
            (
                row,
                first.get("traceId") or first.get("trace_id") or "",
                first.get("spanId") or first.get("span_id") or "",
            )
        )
    return _assemble(
        ctx,
        trace_ids,
        span_ids,
        parent_ids,
        kinds,
        starts,
        ends,
        _enum_column(statuses, _STATUSES, "status.code"),
        np.array(services, dtype=np.int32),
        links,
        _attribute_hits(attribute_lists, ctx.plan.key_ids, ctx, res_hits),
    )


def _attribute_hits(
    attribute_lists: list[Any], key_ids: dict[str, int], ctx: DecodeContext,
    res_hits: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(owner row, key id, value code) of every attribute whose key is in key_ids, in order,
    then the resources' hits (`res_hits`, their own key ids)."""
    kvs = list(chain.from_iterable(attribute_lists))
    key_id: Any = key_ids.get
    try:
        keys = map(key_id, map(_get, kvs, repeat("key")), repeat(-1))
        key_idx = np.fromiter(keys, dtype=np.int64, count=len(kvs))
    except TypeError:
        bad = next(
            (kv for kv in kvs if not isinstance(kv, dict) or not isinstance(kv.get("key"), str)),
            None,
        )
        raise DecodeError(
            f'attributes must be {{"key": string, "value": AnyValue}}, got {bad!r}'
        ) from None
    hit = np.flatnonzero(key_idx >= 0)
    counts = np.fromiter(map(len, attribute_lists), dtype=np.int64, count=len(attribute_lists))
    owner = np.repeat(np.arange(len(attribute_lists)), counts)[hit]
    values = list(map(_get, map(kvs.__getitem__, hit.tolist()), repeat("value")))
    out = (owner, key_idx[hit], _value_codes(values, ctx))
    if res_hits is None:
        return out
    return tuple(np.concatenate([a, b]) for a, b in zip(out, res_hits, strict=True))  # type: ignore[return-value]


def _value_codes(values: list[Any], ctx: DecodeContext) -> np.ndarray:
    """Codes of the string forms of AnyValue objects, interning each distinct string once."""
    strings: list[Any]
    try:
        strings = list(map(_get, values, repeat("stringValue")))
    except TypeError:  # some value is not an object; json_any_value_str says which
        strings = [None] * len(values)
    if set(map(type, strings)) - {str}:  # other value types (or broken ones)
        strings = [
            s if type(s) is str else json_any_value_str(v)
            for s, v in zip(strings, values, strict=True)
        ]
    code = ctx.strings.code
    codes = {s: code(s) for s in dict.fromkeys(strings)}
    return np.fromiter(map(codes.__getitem__, strings), dtype=np.int32, count=len(strings))


def _assemble(
    ctx: DecodeContext,
    trace_ids: list[Any],
    span_ids: list[Any],
    parent_ids: list[Any],
    kinds: list[Any],
    starts: list[Any],
    ends: list[Any],
    status: np.ndarray,
    services: np.ndarray,
    links: list[tuple[int, Any, Any]],
    hits: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> SpanBatch:
    """The batch from raw per-span values (hex ids, JSON numbers or strings) and attribute hits."""
    n = len(trace_ids)
    trace = _hex_ids(trace_ids, 16, "traceId")
    span = _hex_ids(span_ids, 8, "spanId")
    parent = _hex_ids(parent_ids, 8, "parentSpanId", optional=True)
    cols: dict[str, object] = {
        "trace_hi": trace[:, 0],
        "trace_lo": trace[:, 1],
        "span_id": span[:, 0],
        "parent_span_id": parent[:, 0],
        "service": services,
        "kind": _enum_column(kinds, _KINDS, "kind"),
        "start_ns": _int64_column(starts, "startTimeUnixNano"),
        "end_ns": _int64_column(ends, "endTimeUnixNano"),
        "status": status,
    }
    hi = np.zeros(n, dtype=np.uint64)
    lo = np.zeros(n, dtype=np.uint64)
    lsid = np.zeros(n, dtype=np.uint64)
    if links:
        rows = np.array([r for r, _, _ in links], dtype=np.int64)
        link_trace = _hex_ids([t for _, t, _ in links], 16, "links[0].traceId", rows)
        hi[rows], lo[rows] = link_trace[:, 0], link_trace[:, 1]
        lsid[rows] = _hex_ids([s for _, _, s in links], 8, "links[0].spanId", rows)[:, 0]
    cols.update({"link_trace_hi": hi, "link_trace_lo": lo, "link_span_id": lsid})
    cols.update(ctx.plan.resolve(n, *hits))
    return SpanBatch.from_columns(cols)


def _hex_ids(
    ids: list[Any], width: int, what: str, rows: np.ndarray | None = None, optional: bool = False
) -> np.ndarray:
    """Hex id strings -> (n, width // 8) uint64 array; "" -> 0 when optional."""
    chars = 2 * width

    def fail(i: int, why: str) -> DecodeError:
        row = int(rows[i]) if rows is not None else i
        return DecodeError(f"span {row}: {what} {ids[i]!r} {why}")

    try:
        lengths = set(map(len, ids))
    except TypeError:
        i = next(i for i, v in enumerate(ids) if not isinstance(v, str))
        raise fail(i, "must be a hex string") from None
    if lengths != {chars}:
        bad = lengths - ({chars, 0} if optional else {chars})
        if bad:
            i = next(i for i, v in enumerate(ids) if len(v) in bad)
            raise fail(i, f"must be {chars} hex characters ({width} bytes)")
        ids = [v or "0" * chars for v in ids]
    try:
        raw = bytes.fromhex("".join(ids))
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != width * len(ids):  # also catches the spaces bytes.fromhex tolerates
        for i, v in enumerate(ids):
            try:
                ok = isinstance(v, str) and len(bytes.fromhex(v)) == width
            except ValueError:
                ok = False
            if not ok:
                raise fail(i, "is not a hex id")
        raise DecodeError(f"{what}: invalid hex ids")  # unreachable: some id failed above
    return np.frombuffer(raw, dtype=">u8").reshape(len(ids), width // 8).astype(np.uint64)


def _enum_column(
    values: list[Any], names: dict[Any, int], what: str, rows: list[int] | None = None
) -> np.ndarray:
    codes = list(map(names.get, values))
    if None in codes:
        for i, (v, c) in enumerate(zip(values, codes, strict=True)):
            if c is None:
                if isinstance(v, int) and not isinstance(v, bool):
                    codes[i] = 0  # unknown numeric enum value: read as unspecified, like proto
                else:
                    row = rows[i] if rows is not None else i
                    raise DecodeError(f"span {row}: {what} {v!r} is not a valid enum value")
    return np.array(codes, dtype=np.int8)


def _int64_column(values: list[Any], what: str) -> np.ndarray:
    """int64 column from JSON numbers or decimal strings (OTLP/JSON writes int64 as strings)."""
    # int() on str/int is exact and C-level; floats and bools need the checks below.
    if set(map(type, values)) <= {str, int}:
        try:
            out = np.fromiter(map(int, values), dtype=np.int64, count=len(values))
            if out.size == 0 or out.min() >= 0:
                return out
        except (ValueError, OverflowError):
            pass
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):  # slow path: find and name the bad value, or accept 1.7e18
        if isinstance(v, bool) or not isinstance(v, (int, str, float)):
            raise DecodeError(f"span {i}: {what} must be an integer or a decimal string")
        try:
            value = int(v) if not isinstance(v, float) or v.is_integer() else None
        except ValueError:
            value = None
        if value is None or not 0 <= value < 2**64:
            raise DecodeError(f"span {i}: {what} {v!r} is not a valid unsigned 64-bit integer")
        out[i] = min(value, 2**63 - 1)  # past int64 (year 2262) saturates, as in decode_proto
    return out
