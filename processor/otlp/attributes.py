"""Which span attributes feed which SpanBatch columns, and how attribute values become codes."""

from __future__ import annotations

import base64
import json
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

    A column takes the value of its lowest-priority key present on the span with a non-empty
    value; e.g. server_address is server.address, else net.peer.name.
    """

    columns: tuple[tuple[str, tuple[str, ...]], ...]
    keys: tuple[str, ...] = field(init=False)
    key_ids: dict[str, int] = field(init=False)
    key_ids_utf8: dict[bytes, int] = field(init=False)
    # Flattened (key, column, priority) targets, grouped by key id.
    target_start: np.ndarray = field(init=False)
    target_count: np.ndarray = field(init=False)
    target_column: np.ndarray = field(init=False)
    target_priority: np.ndarray = field(init=False)

    @classmethod
    def build(cls, servicegraph: ServiceGraphConfig) -> AttributePlan:
        """The plan for `processors.servicegraph` (its attribute lists, first present wins)."""
        return cls(
            columns=(
                ("peer_service", ("peer.service",)),
                ("server_address", ("server.address", "net.peer.name")),
                ("db_system", ("db.system", "db.system.name")),
                ("db_name", servicegraph.database_name_attributes),
                ("messaging_system", ("messaging.system",)),
                ("virtual_peer", servicegraph.virtual_node_peer_attributes),
            )
        )

    def __post_init__(self) -> None:
        targets: dict[str, list[tuple[int, int]]] = {}
        for col, (_, keys) in enumerate(self.columns):
            for prio, key in enumerate(keys):
                targets.setdefault(key, []).append((col, prio))
        keys = tuple(targets)
        flat = [t for k in keys for t in targets[k]]
        counts = np.array([len(targets[k]) for k in keys], dtype=np.int64)
        set_ = object.__setattr__  # frozen dataclass: derived fields are set once here
        set_(self, "keys", keys)
        set_(self, "key_ids", {k: i for i, k in enumerate(keys)})
        set_(self, "key_ids_utf8", {k.encode(): i for i, k in enumerate(keys)})
        set_(self, "target_count", counts)
        set_(self, "target_start", np.cumsum(counts) - counts)
        set_(self, "target_column", np.array([c for c, _ in flat], dtype=np.int64))
        set_(self, "target_priority", np.array([p for _, p in flat], dtype=np.int64))

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def resolve(
        self, n: int, hit_span: np.ndarray, hit_key: np.ndarray, hit_code: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Column arrays (int32 codes, length n) from attribute hits (span row, key id, code).

        Hits must be in attribute order within a span, so a duplicated key keeps its first value.
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
        return {name: cols[i] for i, name in enumerate(self.column_names)}


class DecodeContext:
    """State shared by the decoders: the string table, the plan and raw-bytes caches."""

    def __init__(self, strings: StringTable, plan: AttributePlan) -> None:
        self.strings = strings
        self.plan = plan
        self.resource_service: dict[bytes, int] = {}  # serialized Resource -> service code
        self.attribute_hits: dict[bytes, tuple[int, int]] = {}  # serialized KeyValue -> (key, code)
        self.value_codes: dict[bytes, int] = {}  # serialized AnyValue -> code of its string form
        self.status_codes: dict[bytes, int] = dict(_STATUS_SEED)  # serialized Status -> code

    def forget_codes(self) -> None:
        """The string table was compacted: cached codes are stale."""
        self.resource_service.clear()
        self.attribute_hits.clear()
        self.value_codes.clear()

    def service_code(self, raw_resource: bytes) -> int:
        """Code of service.name in a serialized Resource (0 when absent); cached."""
        try:
            resource = resource_pb2.Resource.FromString(raw_resource)
        except ProtobufDecodeError as exc:
            raise DecodeError(f"invalid resource: {exc}") from None
        code = 0
        for kv in resource.attributes:
            if kv.key == SERVICE_NAME:
                code = self.strings.code(any_value_str(kv.value))
                break
        if len(self.resource_service) >= CACHE_LIMIT:
            self.resource_service.clear()
        self.resource_service[raw_resource] = code
        return code

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
