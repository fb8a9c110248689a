"""Stage 1 for one input partition: spans in, per-window partial rows out, with a safe offset.

The safe offset is the lowest Kafka offset still needed to rebuild state that is not yet
durable (open windows and spans waiting in the pairing store). Committing only below it
is what makes a kill-and-restart end with exact totals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from processor.aggregate.messages import EdgeKey, HealthKey, dimensions_key, source_name
from processor.config.components import ServiceGraphConfig, StoreConfig, WindowsConfig
from processor.graph import CONN_NAMES, EdgeBatch, EdgeCodes, EdgeIds, PairingStats, PairingStore
from processor.otlp.batch import SpanBatch, StringTable
from processor.windows.accumulator import PartitionWindows, WindowPartial
from processor.windows.arith import window_start
from processor.windows.cardinality import OVERFLOW
from processor.windows.sketch import sketch_of

NS_PER_MS = 1_000_000


@dataclass
class Emission:
    """What a flush produced: partial rows to store and the keys stage 2 must (re)finalise."""

    health: list[dict] = field(default_factory=list)
    edges: list[dict] = field(default_factory=list)
    watermark_ms: int = 0

    def extend(self, other: Emission) -> Emission:
        self.health += other.health
        self.edges += other.edges
        return self

    def __bool__(self) -> bool:
        return bool(self.health or self.edges)

    def health_keys(self) -> list[HealthKey]:
        return [HealthKey(r["service"], r["window_start"]) for r in self.health]

    def edge_keys(self) -> list[EdgeKey]:
        return [EdgeKey(r["client"], r["server"], r["connection_type"], r["window_start"],
                        dimensions_key(r["dimensions"])) for r in self.edges]


@dataclass
class PartitionStats:
    """What one partition counted since the last `take_stats`, for the self metrics."""

    late: dict[tuple[str, str], int]  # (what, action) -> count, see WindowStats
    pairing: PairingStats
    waiting_spans: int  # in the pairing store now
    overflow: dict[str, int]  # span / edge -> counted under the overflow entity


class Completed(NamedTuple):
    """Edges some call completed, with their ids (for the traces_service_graph_* series)."""

    edges: EdgeBatch
    ids: np.ndarray


class PartitionAggregator:
    """Pairs and windows the spans of one input partition (`topic`/`partition`)."""

    def __init__(self, topic: str, partition: int, strings: StringTable,
                 store: StoreConfig | ServiceGraphConfig,
                 windows: WindowsConfig, closed_until_ns: int = 0,
                 applied: Mapping[int, tuple[int, int]] | None = None,
                 horizon_ns: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 edge_ids: EdgeIds | None = None) -> None:
        """``store``: `processors.servicegraph` (or only its store settings, no dimensions);
        ``closed_until_ns``, ``applied``: what the stored partials say of closed windows
        (see PartitionWindows); ``horizon_ns``: how far back late data is corrected;
        ``edge_ids``: the worker's edge numbering (one per string table)."""
        graph = store if isinstance(store, ServiceGraphConfig) else ServiceGraphConfig(store=store)
        self.topic = topic
        self.partition = partition
        self.strings = strings
        self.clock = clock
        self.dimensions = graph.dimensions
        self.edge_ids = edge_ids or EdgeIds(len(graph.dimensions))
        self.store = PairingStore(strings, graph.store, bool(graph.virtual_node_peer_attributes))
        overflow = strings.code(OVERFLOW)
        no_dims = (0,) * len(graph.dimensions)
        self.windows = PartitionWindows(
            windows, closed_until_ns, applied, horizon_ns, overflow_code=overflow,
            overflow_edge=self.edge_ids.id_of(EdgeCodes(overflow, overflow, 0, no_dims, no_dims)))
        self.completed: list[Completed] = []  # since the last take_completed
        self.next_offset = -1  # one past the last record added
        self.last_record_at = clock()

    @property
    def source(self) -> str:
        """The name stage 2 tracks this partition's watermark under."""
        return source_name(self.topic, self.partition)

    @property
    def watermark_ms(self) -> int:
        """Every window ending at or before this was emitted (what stage 2 is told)."""
        return self.windows.closed_until_ns // NS_PER_MS

    def add(self, spans: SpanBatch, next_offset: int | None = None, active: bool = True) -> EdgeBatch:
        """Add a batch; returns the edges it completed (also kept for `take_completed`).

        ``active``: the batch held data (progress markers alone do not keep a partition busy).
        """
        self.windows.add_spans(spans)
        edges = self.store.add(spans)
        self._add_edges(edges)
        self.windows.floor_ns = self.store.min_client_end_ns()
        if next_offset is not None:
            self.next_offset = max(self.next_offset, next_offset)
        if active:
            self.last_record_at = self.clock()
        return edges

    def observe(self, end_ns: int) -> None:
        """Event time read but not aggregated here (spans sent on to the re-key topic): it
        moves this partition's watermark all the same, so stage 2 is not held back by it."""
        self.windows.max_end_ns = max(self.windows.max_end_ns, end_ns)
        self.store.clock_ns = max(self.store.clock_ns, end_ns)  # waiting spans expire with it

    @property
    def max_end_ns(self) -> int:
        """The latest span end this partition has read."""
        return self.windows.max_end_ns

    def cap(self, cap_ns: int | None) -> None:
        """Let event time (window closing and pairing expiry) go no further than ``cap_ns``."""
        self.windows.cap_ns = cap_ns
        self.store.cap_ns = cap_ns

    def quiet_for(self) -> float:
        """Seconds since the last record was added."""
        return self.clock() - self.last_record_at

    def _add_edges(self, edges: EdgeBatch) -> None:
        if len(edges):
            ids = self.edge_ids.ids(edges)
            self.windows.add_edges(edges, ids)
            self.completed.append(Completed(edges, ids))

    def take_completed(self) -> list[Completed]:
        """Every edge completed since the last call, by records or by an idle flush: what the
        traces_service_graph_* series count, as the connector counts each completed edge."""
        out, self.completed = self.completed, []
        return out

    def take_stats(self) -> PartitionStats:
        ws = self.windows.take_stats()
        return PartitionStats(ws.late, self.store.take_stats(), len(self.store), ws.overflow)

    def codes(self) -> np.ndarray:
        """Every string code this partition's state holds, the codes of the edges it holds
        ids of included (for StringTable.compact)."""
        return np.concatenate([self.store.codes().astype(np.int64), self.windows.codes(),
                               self.edge_ids.codes(self.windows.edge_ids())])

    def edge_ids_held(self) -> np.ndarray:
        """Every edge id this partition's state holds (for EdgeIds.compact)."""
        return self.windows.edge_ids()

    def remap_codes(self, remap: np.ndarray, remap_edges: Callable[[np.ndarray], np.ndarray]) -> None:
        """Follow a StringTable.compact and the EdgeIds.compact that went with it. Completed
        edges must have been taken (`take_completed`) before: they are not remapped."""
        if self.completed:
            raise RuntimeError("take_completed before compacting: completed edges hold codes")
        self.store.remap_codes(remap)
        self.windows.remap_codes(remap, remap_edges)

    def safe_offset(self) -> int:
        """Every record below this offset is fully reflected in emitted, durable rows."""
        cands = [self.next_offset]
        for o in (self.store.min_offset(), self.windows.min_hold_offset()):
            if o is not None and o >= 0:
                cands.append(o)
        return min(cands)

    def flush_closed(self) -> Emission:
        """Emit windows the watermark has passed; they leave memory.

        Afterwards every window ending at or before the watermark counts as closed, also
        ones that never saw data, so the advertised watermark means "all emitted". It is
        kept on a window boundary: it then changes once per window, which is when it has
        to be stored and advertised, not on every batch.
        """
        wm = self.windows.watermark_ns
        before = self.windows.closed_until_ns
        em = self._emit(self.windows.close(self.windows.ready(), self.next_offset))
        boundary = window_start(wm, self.windows.size_ns)
        self.windows.closed_until_ns = max(self.windows.closed_until_ns, boundary)
        if self.windows.closed_until_ns != before:
            # Pending corrections go with the watermark: stored before it moves, so a
            # restart never finds them past a horizon they were inside of.
            em.extend(self.flush_corrections())
        em.watermark_ms = self.watermark_ms
        return em

    def flush_corrections(self) -> Emission:
        """Store the late data collected for closed windows (see PartitionWindows)."""
        through = self.next_offset
        return self._emit(self.windows.take_corrections(through), through, correction=through)

    def flush_idle(self) -> Emission:
        """Quiet partition: expire waiting spans and emit what is open, provisionally.

        Windows stay open, so if traffic resumes the same partial rows are re-emitted with
        more data and replace these.
        """
        self._add_edges(self.store.flush_all())
        self.windows.floor_ns = None
        em = self._emit(self.windows.close(self.windows.ready(), self.next_offset))
        return em.extend(self.flush_open()).extend(self.flush_corrections())

    def flush_open(self) -> Emission:
        """Emit every open window that changed since it was last emitted; they stay open."""
        return self._emit(self.windows.dirty())

    def _emit(self, windows: list[tuple[int, WindowPartial]], applied_through: int | None = None,
              correction: int = 0) -> Emission:
        """Partial rows of ``windows``: base rows (``correction`` 0) or one correction's rows;
        each says it covers every contribution completed below ``applied_through``."""
        em = Emission(watermark_ms=self.watermark_ms)
        through = self.next_offset if applied_through is None else applied_through
        version = time.time_ns()
        size_ms = self.windows.size_ns // NS_PER_MS
        names = self.strings.strings
        dims = [(f"client_{d}", f"server_{d}") for d in self.dimensions]
        for start_ns, w in windows:
            w.dirty = False
            ws = start_ns // NS_PER_MS
            base = {"window_start": ws, "window_end": ws + size_ms, "input_topic": self.topic,
                    "input_partition": self.partition, "applied_through": max(through, 0),
                    "correction": correction, "version": version}
            if w.svc:
                ids, calls, errors = w.svc[0]
                sk = w.svc_sketch[0] if w.svc_sketch else None
                for i, sid in enumerate(ids.tolist()):
                    keys, counts = sketch_of(sk, sid)
                    em.health.append({**base, "service": names[sid], "calls": int(calls[i]),
                                      "errors": int(errors[i]), "latency_keys": keys,
                                      "latency_counts": counts})
            if w.edge:
                ids, req, failed = w.edge[0]
                srv = w.srv_sketch[0] if w.srv_sketch else None
                cli = w.cli_sketch[0] if w.cli_sketch else None
                for i, eid in enumerate(ids.tolist()):
                    k = self.edge_ids.key(eid)
                    sk_keys, sk_counts = sketch_of(srv, eid)
                    ck_keys, ck_counts = sketch_of(cli, eid)
                    labels = {**{n: names[v] for (n, _), v in zip(dims, k.client_dims, strict=True) if v},
                              **{n: names[v] for (_, n), v in zip(dims, k.server_dims, strict=True) if v}}
                    em.edges.append({**base, "client": names[k.client], "server": names[k.server],
                                     "connection_type": CONN_NAMES[k.conn],
                                     "dimensions": dict(sorted(labels.items())), "requests": int(req[i]),
                                     "failed": int(failed[i]), "server_keys": sk_keys,
                                     "server_counts": sk_counts, "client_keys": ck_keys,
                                     "client_counts": ck_counts})
        return em
