"""Stage 1 for one input partition: spans in, per-window partial rows out, with a safe offset.

The safe offset is the lowest Kafka offset still needed to rebuild state that is not yet
durable (open windows and spans waiting in the pairing store). Committing only below it
is what makes a kill-and-restart end with exact totals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from processor.graph import CONN_NAMES, EdgeBatch, GraphSettings, PairingStore
from processor.otlp.batch import SpanBatch, StringTable
from processor.windows import sketch
from processor.windows.accumulator import PartitionWindows, WindowPartial, unpack_edge

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

    def health_keys(self) -> list[tuple[str, int]]:
        return [(r["service"], r["window_start"]) for r in self.health]

    def edge_keys(self) -> list[tuple[str, str, str, int]]:
        return [(r["client"], r["server"], r["connection_type"], r["window_start"]) for r in self.edges]


class PartitionAggregator:
    def __init__(self, topic: str, partition: int, strings: StringTable, graph: GraphSettings,
                 size_ns: int, allowed_lateness_ns: int, closed_until_ns: int = 0) -> None:
        self.topic = topic
        self.partition = partition
        self.strings = strings
        self.store = PairingStore(strings, graph)
        self.windows = PartitionWindows(size_ns, allowed_lateness_ns, closed_until_ns)
        self.next_offset = -1  # one past the last record added
        self.last_record_wall = time.monotonic()

    def add(self, spans: SpanBatch, next_offset: int | None = None) -> EdgeBatch:
        """Add a batch; returns the edges it completed (for the service-graph metrics)."""
        self.windows.add_spans(spans)
        edges = self.store.add(spans)
        self.windows.add_edges(edges)
        if next_offset is not None:
            self.next_offset = max(self.next_offset, next_offset)
        self.last_record_wall = time.monotonic()
        return edges

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
        em = self._emit(self.windows.close(self.windows.ready()))
        boundary = wm - wm % self.windows.size_ns
        self.windows.closed_until_ns = max(self.windows.closed_until_ns, boundary)
        em.watermark_ms = self.windows.closed_until_ns // NS_PER_MS
        return em

    def flush_idle(self) -> Emission:
        """Quiet partition: expire waiting spans and emit what is open, provisionally.

        Windows stay open, so if traffic resumes the same partial rows are re-emitted with
        more data and replace these.
        """
        self.windows.add_edges(self.store.flush_all())
        em = self._emit(self.windows.close(self.windows.ready()))
        return em.extend(self._emit(self.windows.dirty()))

    def flush_dirty(self) -> Emission:
        """Shutdown: emit closed windows and, provisionally, open ones that changed."""
        return self.flush_closed().extend(self._emit(self.windows.dirty()))

    def _emit(self, windows: list[tuple[int, WindowPartial]]) -> Emission:
        em = Emission(watermark_ms=self.windows.closed_until_ns // NS_PER_MS)
        version = time.time_ns()
        size_ms = self.windows.size_ns // NS_PER_MS
        names = self.strings.strings
        for start_ns, w in windows:
            w.dirty = False
            ws = start_ns // NS_PER_MS
            base = {"window_start": ws, "window_end": ws + size_ms, "input_topic": self.topic,
                    "input_partition": self.partition, "version": version}
            if w.svc:
                ids, calls, errors = w.svc[0]
                sk = w.svc_sketch[0] if w.svc_sketch else None
                for i, sid in enumerate(ids.tolist()):
                    keys, counts = _sketch_of(sk, sid)
                    em.health.append({**base, "service": names[sid], "calls": int(calls[i]),
                                      "errors": int(errors[i]), "latency_keys": keys,
                                      "latency_counts": counts})
            if w.edge:
                ids, req, failed = w.edge[0]
                srv = w.srv_sketch[0] if w.srv_sketch else None
                cli = w.cli_sketch[0] if w.cli_sketch else None
                for i, eid in enumerate(ids.tolist()):
                    c, s, conn = unpack_edge(eid)
                    sk_keys, sk_counts = _sketch_of(srv, eid)
                    ck_keys, ck_counts = _sketch_of(cli, eid)
                    em.edges.append({**base, "client": names[c], "server": names[s],
                                     "connection_type": CONN_NAMES[conn], "requests": int(req[i]),
                                     "failed": int(failed[i]), "server_keys": sk_keys,
                                     "server_counts": sk_counts, "client_keys": ck_keys,
                                     "client_counts": ck_counts})
        return em


def _sketch_of(sk: tuple[np.ndarray, np.ndarray, np.ndarray] | None, entity: int) -> tuple[list[int], list[int]]:
    if sk is None:
        return [], []
    ids, keys, counts = sk
    lo, hi = np.searchsorted(ids, entity, "left"), np.searchsorted(ids, entity, "right")
    return keys[lo:hi].tolist(), counts[lo:hi].tolist()


def merged_quantiles(keys: list[list[int]], counts: list[list[int]]) -> tuple[list[int], list[int], list[float]]:
    """Merge several stored sketches and read p50/p95/p99 (ms)."""
    k = np.concatenate([np.asarray(x, np.int32) for x in keys]) if keys else np.empty(0, np.int32)
    c = np.concatenate([np.asarray(x, np.uint64) for x in counts]) if counts else np.empty(0, np.uint64)
    mk, mc = sketch.merge(k, c)
    return mk.tolist(), mc.tolist(), sketch.quantiles(mk, mc, (0.5, 0.95, 0.99))
