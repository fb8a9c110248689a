"""Which span attributes feed which SpanBatch columns, and how attribute values become codes."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from processor.config.components import ServiceGraphConfig
from processor.errors import DecodeError
from processor.otlp.batch import StringTable

SERVICE_NAME = "service.name"

# Caches keyed by raw serialized bytes are cleared when they reach this many entries: the
# values they hold (service names, peer names, db names) are low-cardinality in practice.
CACHE_LIMIT = 65536
# Serialized Status messages as SDKs write them when there is no message.
_STATUS_SEED = {b"": 0, b"\x18\x00": 0, b"\x18\x01": 1, b"\x18\x02": 2}


def format_double(value: float) -> str:
    # Shortest round-trip digits without exponent, like the collector's Value.AsString.
    return str(np.format_float_positional(value, trim="-"))


def any_value_str(value: common_pb2.AnyValue) -> str:
    """String form of an OTLP AnyValue ("" when unset), as the collector's AsString gives it."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which is None:
        return ""
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which == "int_value":
        return str(value.int_value)
    if which == "double_value":
        return format_double(value.double_value)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return json.dumps(_any_to_python(value), separators=(",", ":"))


def _any_to_python(value: common_pb2.AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_any_to_python(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _any_to_python(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None if which is None else getattr(value, which)


def json_any_value_str(value: Any) -> str:
    """String form of an OTLP/JSON AnyValue object ({"stringValue": ...} etc.)."""
    if not isinstance(value, dict):
        if value is None:
            return ""
        raise DecodeError(f"attribute value must be an AnyValue object, got {type(value).__name__}")
    for name, v in value.items():
        if name in ("stringValue", "string_value"):
            if not isinstance(v, str):
                raise DecodeError("stringValue must be a string")
            return v
        if name in ("intValue", "int_value"):
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise DecodeError("intValue must be an integer or a decimal string")
            try:
                return str(int(v))
            except ValueError:
                raise DecodeError(f"intValue {v!r} is not an integer") from None
        if name in ("boolValue", "bool_value"):
            if not isinstance(v, bool):
                raise DecodeError("boolValue must be true or false")
            return "true" if v else "false"
        if name in ("doubleValue", "double_value"):
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise DecodeError("doubleValue must be a number")
            try:
                return format_double(float(v))
            except ValueError:
                raise DecodeError(f"doubleValue {v!r} is not a number") from None
        if name in ("bytesValue", "bytes_value"):
            return str(v)
        if name in ("arrayValue", "array_value", "kvlistValue", "kvlist_value"):
            return json.dumps(v, separators=(",", ":"))
    return ""


@dataclass(frozen=True)
class AttributePlan:
    """For every attribute key that feeds a column: which columns, at which priority.

    A column takes the value of its lowest-priority key present with a non-empty value.
    A column read on the resource too (the connector's `dimensions` and
    `database_name_attributes`) tries each key on the resource, then on the span, before
    the next key. Resource keys have ids of their own, after the span keys' ids.
    """

    columns: tuple[tuple[str, tuple[str, ...], bool], ...]  # (name, keys, read on the resource)
    keys: tuple[str, ...] = field(init=False)
    key_ids: dict[str, int] = field(init=False)  # span attribute key -> id
    key_ids_utf8: dict[bytes, int] = field(init=False)
    resource_key_ids: dict[str, int] = field(init=False)  # resource attribute key -> id
    # Flattened (key, column, priority) targets, grouped by key id.
    target_start: np.ndarray = field(init=False)
    target_count: np.ndarray = field(init=False)
    target_column: np.ndarray = field(init=False)
    target_priority: np.ndarray = field(init=False)

    @classmethod
    def build(cls, servicegraph: ServiceGraphConfig) -> AttributePlan:
        """The plan for `processors.servicegraph` (its attribute lists, first present wins)."""
        dims = tuple((f"dim{i}", (key,), True) for i, key in enumerate(servicegraph.dimensions))
        return cls(
            columns=(
                ("db_name", servicegraph.database_name_attributes, True),
                ("virtual_peer", servicegraph.virtual_node_peer_attributes, False),
                *dims,
            )
        )

    def __post_init__(self) -> None:
        span_t: dict[str, list[tuple[int, int]]] = {}
        res_t: dict[str, list[tuple[int, int]]] = {}
        for col, (_, keys, on_resource) in enumerate(self.columns):
            for i, key in enumerate(keys):
                if on_resource:
                    res_t.setdefault(key, []).append((col, 2 * i))
                    span_t.setdefault(key, []).append((col, 2 * i + 1))
                else:
                    span_t.setdefault(key, []).append((col, i))
        targets = [*span_t.values(), *res_t.values()]
        flat = [t for ts in targets for t in ts]
        counts = np.array([len(ts) for ts in targets], dtype=np.int64)
        set_ = object.__setattr__  # frozen dataclass: derived fields are set once here
        set_(self, "keys", tuple(span_t))
        set_(self, "key_ids", {k: i for i, k in enumerate(span_t)})
        set_(self, "key_ids_utf8", {k.encode(): i for i, k in enumerate(span_t)})
        set_(self, "resource_key_ids", {k: len(span_t) + i for i, k in enumerate(res_t)})
        set_(self, "target_count", counts)
        set_(self, "target_start", np.cumsum(counts) - counts)
        set_(self, "target_column", np.array([c for c, _ in flat], dtype=np.int64))
        set_(self, "target_priority", np.array([p for _, p in flat], dtype=np.int64))

    @property
    def column_names(self) -> list[str]:
        return [name for name, _, _ in self.columns]

    @property
    def dimension_count(self) -> int:
        return sum(name.startswith("dim") for name in self.column_names)

    def resolve(
        self, n: int, hit_span: np.ndarray, hit_key: np.ndarray, hit_code: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Columns (int32 codes, length n; `dims` (n, dimensions)) from attribute hits (span
        row, key id, code). Hits must be in attribute order within a span, so a duplicated
        key keeps its first value.
        """
        ncols = len(self.columns)
        out = np.zeros(ncols * n, dtype=np.int32)
        keep = hit_code != 0  # an empty value counts as absent: fall through to the next key
        if not keep.all():
            hit_span, hit_key, hit_code = hit_span[keep], hit_key[keep], hit_code[keep]
        h = int(hit_span.size)
        if h:
            # One row per (hit, target column), then per (column, span) the lowest priority
            # and, among equals, the earliest hit wins: sort one packed int64 key per row.
            rep = self.target_count[hit_key]
            row = np.repeat(np.arange(h), rep)
            target = np.repeat(self.target_start[hit_key] - (np.cumsum(rep) - rep), rep)
            target += np.arange(row.size)
            slot = self.target_column[target] * n + hit_span[row]
            prios = int(self.target_priority.max()) + 1
            if ncols * n * prios * h < 2**62:
                packed = (slot * prios + self.target_priority[target]) * h + row
                packed.sort()
                slot, row = packed // (prios * h), packed % h
            else:  # too large to pack (never in practice): sort on two keys instead
                order = np.lexsort((row, self.target_priority[target], slot))
                slot, row = slot[order], row[order]
            first = np.empty(slot.size, dtype=bool)
            first[0] = True
            np.not_equal(slot[1:], slot[:-1], out=first[1:])
            out[slot[first]] = hit_code[row[first]]
        cols = out.reshape(ncols, n)
        named = {name: cols[i] for i, name in enumerate(self.column_names) if not name.startswith("dim")}
        ndims = self.dimension_count
        named["dims"] = np.ascontiguousarray(cols[ncols - ndims:].T) if ndims else np.zeros((n, 0), np.int32)
        return named


def resource_span_hits(rs_hits: list[tuple[tuple[int, int], ...]], spans_per_rs: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each ResourceSpans' resource attribute hits ((key id, code), ...) as hits of every span
    it holds (spans numbered in document order): (span row, key id, code)."""
    rs = [i for i, hits in enumerate(rs_hits) for _ in hits]
    if not rs:
        e = np.empty(0, np.int64)
        return e, e, np.empty(0, np.int32)
    rs_idx = np.array(rs, dtype=np.int64)
    keys = np.array([k for hits in rs_hits for k, _ in hits], dtype=np.int64)
    codes = np.array([c for hits in rs_hits for _, c in hits], dtype=np.int32)
    first_row = np.cumsum(spans_per_rs) - spans_per_rs
    count = spans_per_rs[rs_idx]
    total = int(count.sum())
    rows = np.repeat(first_row[rs_idx] - (np.cumsum(count) - count), count) + np.arange(total)
    return rows, np.repeat(keys, count), np.repeat(codes, count)


def merge_hits(base: tuple[tuple[int, int], ...], extra: tuple[tuple[int, int], ...]
               ) -> tuple[tuple[int, int], ...]:
    """Resource hits with `extra` (from record headers) replacing hits of the same key."""
    if not extra:
        return base
    keys = {k for k, _ in extra}
    return tuple(h for h in base if h[0] not in keys) + extra


class DecodeContext:
    """State shared by the decoders: the string table, the plan and raw-bytes caches."""

    def __init__(self, strings: StringTable, plan: AttributePlan) -> None:
        self.strings = strings
        self.plan = plan
        # serialized Resource -> (service code, its hits of the plan's resource keys)
        self.resource_info: dict[bytes, tuple[int, tuple[tuple[int, int], ...]]] = {}
        # Hits the record being decoded adds to every resource (header_extraction).
        self.record_hits: tuple[tuple[int, int], ...] = ()
        self.attribute_hits: dict[bytes, tuple[int, int]] = {}  # serialized KeyValue -> (key, code)
        self.value_codes: dict[bytes, int] = {}  # serialized AnyValue -> code of its string form
        self.status_codes: dict[bytes, int] = dict(_STATUS_SEED)  # serialized Status -> code

    def forget_codes(self) -> None:
        """The string table was compacted: cached codes are stale."""
        self.resource_info.clear()
        self.attribute_hits.clear()
        self.value_codes.clear()

    def resource(self, raw_resource: bytes) -> tuple[int, tuple[tuple[int, int], ...]]:
        """(service.name code, (resource key id, value code) of the plan's resource keys) of a
        serialized Resource; service code 0 when absent; cached."""
        try:
            resource = resource_pb2.Resource.FromString(raw_resource)
        except ProtobufDecodeError as exc:
            raise DecodeError(f"invalid resource: {exc}") from None
        info = self.resource_of((kv.key, kv.value) for kv in resource.attributes)
        if len(self.resource_info) >= CACHE_LIMIT:
            self.resource_info.clear()
        self.resource_info[raw_resource] = info
        return info

    def resource_of(self, attributes: Iterable[tuple[str, Any]], json: bool = False
                    ) -> tuple[int, tuple[tuple[int, int], ...]]:
        """(service code, resource hits) from (key, AnyValue) pairs; the first of a key wins."""
        service: int | None = None
        hits: dict[int, int] = {}
        wanted = self.plan.resource_key_ids
        to_str = json_any_value_str if json else any_value_str
        for key, value in attributes:
            if key == SERVICE_NAME and service is None:
                service = self.strings.code(to_str(value))
            kid = wanted.get(key)
            if kid is not None and kid not in hits:
                hits[kid] = self.strings.code(to_str(value))
        return service or 0, tuple((k, c) for k, c in hits.items() if c)

    def status_code(self, raw_status: bytes) -> int:
        """StatusCode of a serialized Status; cached (messages repeat)."""
        try:
            code = int(trace_pb2.Status.FromString(raw_status).code)
        except ProtobufDecodeError as exc:
            raise DecodeError(f"invalid span status: {exc}") from None
        if len(self.status_codes) >= CACHE_LIMIT:
            self.status_codes = dict(_STATUS_SEED)
        self.status_codes[raw_status] = code
        return code

    def value_code(self, raw_value: bytes) -> int:
        """Code of the string form of a serialized AnyValue; cached."""
        try:
            value = common_pb2.AnyValue.FromString(raw_value)
        except ProtobufDecodeError as exc:
            raise DecodeError(f"invalid attribute value: {exc}") from None
        code = self.strings.code(any_value_str(value))
        if len(self.value_codes) >= CACHE_LIMIT:
            self.value_codes.clear()
        self.value_codes[raw_value] = code
        return code

    def attribute_hit(self, raw_kv: bytes) -> tuple[int, int] | None:
        """(key id, value code) of a serialized KeyValue whose key is in the plan; cached."""
        try:
            kv = common_pb2.KeyValue.FromString(raw_kv)
        except ProtobufDecodeError as exc:
            raise DecodeError(f"invalid span attribute: {exc}") from None
        key_id = self.plan.key_ids.get(kv.key)
        if key_id is None:
            return None
        hit = (key_id, self.strings.code(any_value_str(kv.value)))
        if len(self.attribute_hits) >= CACHE_LIMIT:
            self.attribute_hits.clear()
        self.attribute_hits[raw_kv] = hit
        return hit
