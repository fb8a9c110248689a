"""Columnar batch of completed service-graph edges (one row per request)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

CONN_NONE, CONN_MESSAGING, CONN_DATABASE, CONN_VIRTUAL = 0, 1, 2, 3
# Values of the connector's connection_type label.
CONN_NAMES = ("", "messaging_system", "database", "virtual_node")


@dataclass
class EdgeBatch:
    """Completed edges. Latencies are NaN for a side that has no span (a virtual node's);
    a database edge's server latency is its client span's, as the connector records it.

    `time_ns` decides the window: the client span's end, or the server span's end when
    there is no client. `hold_offset` is the lowest Kafka offset among the edge's spans and
    `client_end_ns`/`server_end_ns` (0 = absent) name the windows that must hold it, so a
    replay after a crash starts early enough to rebuild the edge whole. `offset` is the
    record that completed the edge (the later span of a pair; a one-sided edge's own span):
    a replay from any earlier offset completes it again at the same record, which is how a
    late correction tells an edge it already applied from a new one. `client_dims` and
    `server_dims` hold each side's `dimensions` values (codes, 0 = absent or no such side).
    """

    client: np.ndarray  # int32 string code
    server: np.ndarray  # int32 string code
    conn: np.ndarray  # int8 CONN_*
    failed: np.ndarray  # bool
    client_ms: np.ndarray  # float64
    server_ms: np.ndarray  # float64
    time_ns: np.ndarray  # int64
    client_end_ns: np.ndarray  # int64
    server_end_ns: np.ndarray  # int64
    hold_offset: np.ndarray  # int64
    offset: np.ndarray  # int64
    client_dims: np.ndarray  # int32 (n, dimensions)
    server_dims: np.ndarray  # int32 (n, dimensions)

    def __len__(self) -> int:
        return int(self.client.shape[0])

    @staticmethod
    def concat(parts: list[EdgeBatch]) -> EdgeBatch:
        parts = [p for p in parts if len(p)]
        if not parts:
            return EMPTY_EDGES
        if len(parts) == 1:
            return parts[0]
        names = [f.name for f in fields(EdgeBatch)]
        return EdgeBatch(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


EMPTY_EDGES = EdgeBatch(
    client=np.empty(0, np.int32), server=np.empty(0, np.int32), conn=np.empty(0, np.int8),
    failed=np.empty(0, bool), client_ms=np.empty(0), server_ms=np.empty(0),
    time_ns=np.empty(0, np.int64), client_end_ns=np.empty(0, np.int64),
    server_end_ns=np.empty(0, np.int64), hold_offset=np.empty(0, np.int64),
    offset=np.empty(0, np.int64), client_dims=np.empty((0, 0), np.int32),
    server_dims=np.empty((0, 0), np.int32),
)
