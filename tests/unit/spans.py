"""Readable SpanBatch factory for unit tests: one keyword call per span, one shared StringTable."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from processor.aggregate.partition import Emission, PartitionAggregator
from processor.config import StoreConfig, WindowsConfig
from processor.config.duration import Duration
from processor.graph.edges import CONN_NAMES, EdgeBatch
from processor.otlp.batch import (
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_INTERNAL,
    KIND_PRODUCER,
    KIND_SERVER,
    STATUS_ERROR,
    STATUS_UNSET,
    SpanBatch,
    StringTable,
)

KINDS = {"internal": KIND_INTERNAL, "server": KIND_SERVER, "client": KIND_CLIENT,
         "producer": KIND_PRODUCER, "consumer": KIND_CONSUMER}
# Span attributes that are strings in the batch (stored as StringTable codes).
STRING_ATTRS = ("db_name", "virtual_peer")
NS_PER_MS = 1_000_000
_U64 = (1 << 64) - 1


def store_config(ttl_ms: int, max_items: int = 1000) -> StoreConfig:
    """processors.servicegraph.store with a ttl in ms."""
    return StoreConfig(ttl=Duration(ttl_ms * NS_PER_MS), max_items=max_items)


def windows_config(size_ms: int, allowed_lateness_ms: int = 30_000,
                   late_spans: Literal["correct", "drop"] = "correct") -> WindowsConfig:
    """processors.windows with sizes in ms."""
    return WindowsConfig(size=Duration(size_ms * NS_PER_MS),
                         allowed_lateness=Duration(allowed_lateness_ms * NS_PER_MS),
                         late_spans=late_spans)


def emit_all(agg: PartitionAggregator) -> Emission:
    """Closed windows and, provisionally, the open ones that changed (waiting spans stay)."""
    return agg.flush_closed().extend(agg.flush_open())


def ms_to_ns(ms: float) -> int:
    """Whole ms exactly, the fraction rounded: a plain float product loses ~256 ns at epoch scale."""
    whole = math.floor(ms)
    return whole * NS_PER_MS + round((ms - whole) * NS_PER_MS)


@dataclass
class Spans:
    """Builds span rows and batches against one StringTable (share it with the store)."""

    strings: StringTable = field(default_factory=StringTable)

    def span(self, trace: int, id: int, parent: int = 0, service: str = "svc",
             kind: str = "internal", start_ms: float = 0.0, end_ms: float = 1.0,
             error: bool = False, link_trace: int = 0, link_span: int = 0, offset: int = -1,
             dims: tuple[str, ...] = (), **attrs: str) -> dict[str, Any]:
        """One span as a column-name -> value row. Trace ids may be up to 128 bits; `dims`
        are its servicegraph `dimensions` values ("" = absent), in the configured order."""
        unknown = set(attrs) - set(STRING_ATTRS)
        if unknown:
            raise TypeError(f"unknown span attributes {sorted(unknown)}")
        row = {
            "trace_hi": trace >> 64, "trace_lo": trace & _U64, "span_id": id,
            "parent_span_id": parent, "service": self.strings.code(service),
            "kind": KINDS[kind], "start_ns": ms_to_ns(start_ms), "end_ns": ms_to_ns(end_ms),
            "status": STATUS_ERROR if error else STATUS_UNSET,
            "link_trace_hi": link_trace >> 64, "link_trace_lo": link_trace & _U64,
            "link_span_id": link_span, "offset": offset,
        }
        for name in STRING_ATTRS:
            row[name] = self.strings.code(attrs.get(name, ""))
        row["dims"] = [self.strings.code(v) for v in dims]
        return row

    def batch(self, *rows: dict[str, Any], offset: int | None = None) -> SpanBatch:
        """Rows -> SpanBatch; `offset` (the Kafka record) overrides every row's offset."""
        if not rows:
            return SpanBatch.empty()
        cols: dict[str, object] = {n: [r[n] for r in rows] for n in SpanBatch.column_names()}
        b = SpanBatch.from_columns(cols)
        if offset is not None:
            b.offset = np.full(len(b), offset, dtype=np.int64)
        return b

    def name(self, code: int) -> str:
        return self.strings.lookup(int(code))


def edge_rows(edges: EdgeBatch, strings: StringTable) -> list[dict[str, Any]]:
    """EdgeBatch -> one readable dict per edge (names decoded, NaN latency kept)."""
    return [
        {"client": strings.lookup(int(edges.client[i])),
         "server": strings.lookup(int(edges.server[i])),
         "conn": CONN_NAMES[int(edges.conn[i])], "failed": bool(edges.failed[i]),
         "client_ms": float(edges.client_ms[i]), "server_ms": float(edges.server_ms[i]),
         "time_ns": int(edges.time_ns[i]), "hold_offset": int(edges.hold_offset[i])}
        for i in range(len(edges))
    ]
