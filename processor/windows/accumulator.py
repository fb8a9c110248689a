"""Per-input-partition window state: vectorised partial aggregates keyed by window start."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from processor.config.components import WindowsConfig
from processor.graph.edge_ids import pack_edge
from processor.graph.edges import EdgeBatch
from processor.otlp.batch import KIND_CONSUMER, KIND_SERVER, STATUS_ERROR, SpanBatch
from processor.windows import sketch
from processor.windows.arith import is_closed, watermark, window_start
from processor.windows.cardinality import admit


def _group_sum(ids: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    uniq, inv = np.unique(ids, return_inverse=True)
    return uniq, [np.bincount(inv, weights=v, minlength=uniq.size).astype(np.int64) for v in values]


@dataclass
class WindowPartial:
    """Accumulated rows for one window of one partition, appended per batch, merged at emit."""

    hold_offset: int
    svc: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    svc_sketch: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    edge: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    srv_sketch: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    cli_sketch: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    dirty: bool = True
    # The services and packed edges with rows of their own (see windows.cardinality).
    services: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    edges: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def compact(self) -> None:
        """Merge appended parts so memory stays bounded by distinct (entity, bucket) pairs."""
        self.svc = [_merge_counts(self.svc)] if self.svc else []
        self.edge = [_merge_counts(self.edge)] if self.edge else []
        for name in ("svc_sketch", "srv_sketch", "cli_sketch"):
            parts = getattr(self, name)
            if parts:
                setattr(self, name, [_merge_sketch(parts)])


def _merge_counts(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
    ids = np.concatenate([p[0] for p in parts])
    uniq, (a, b) = _group_sum(ids, np.concatenate([p[1] for p in parts]),
                              np.concatenate([p[2] for p in parts]))
    return uniq, a, b


def _merge_sketch(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
    ids = np.concatenate([p[0] for p in parts])
    keys = np.concatenate([p[1] for p in parts]).astype(np.int64)
    counts = np.concatenate([p[2] for p in parts])
    # Dense ids first: a packed edge id * 65536 would overflow int64 (see sketch.grouped).
    gids, dense = np.unique(ids, return_inverse=True)
    combined = dense.astype(np.int64) * 65536 + (keys + 32768)
    uniq, summed = _group_sum(combined, counts)
    return gids[uniq // 65536], (uniq % 65536 - 32768).astype(np.int32), summed[0].astype(np.uint64)


SIDES = ("span", "edge")  # what a late contribution is: a service call or an edge request
LATE_ACTIONS = ("corrected", "replayed", "dropped")


@dataclass
class WindowStats:
    """Late data since the last `take_stats`, for the self metrics: per (what, action).

    corrected: added to its closed window as a correction; replayed: a replay of one the
    window's stored rows already hold; dropped: `late_spans: drop`, or older than the
    correction horizon.
    """

    late: dict[tuple[str, str], int] = field(default_factory=dict)
    overflow: dict[str, int] = field(default_factory=dict)  # what -> counted under the overflow entity

    def count(self, what: str, action: str, n: int) -> None:
        if n:
            self.late[(what, action)] = self.late.get((what, action), 0) + n

    def overflowed(self, what: str, n: int) -> None:
        if n:
            self.overflow[what] = self.overflow.get(what, 0) + n

    def total(self, what: str) -> int:
        return sum(n for (w, _), n in self.late.items() if w == what)


class PartitionWindows:
    """Tumbling event-time windows for one input partition.

    The watermark is this partition's max span end time minus allowed lateness; a window
    closes when the watermark passes its end. `closed_until_ns` survives restarts (it is
    stored with the partials) so a replay cannot reopen a window that was already emitted.

    Data for a closed window is late. With `late_spans: correct` it is collected per window
    as a correction, stored as extra partial rows that stage 2 adds to the window's base
    row. What makes that exact across replays is each window's *applied-through* offsets
    (`applied`, health and edge side): every contribution completed by a record below them
    is in the window's stored rows, and none at or above. A base row covers what was read
    before the window closed; a correction flushed at offset T covers everything completed
    below T. So a replayed contribution below the mark is skipped, and one at or above it
    is new. Two rules keep the marks true:

    - a window does not close while a client span ending in it waits in the pairing store
      (`floor_ns`): when it expires, its edge is in the window's base row;
    - a correction is stored only once no waiting client can add to its window.
    """

    def __init__(self, cfg: WindowsConfig, closed_until_ns: int = 0,
                 applied: Mapping[int, tuple[int, int]] | None = None,
                 horizon_ns: int | None = None, overflow_code: int = 0,
                 overflow_edge: int | None = None) -> None:
        """``applied``: the stored applied-through offsets of closed windows, by window start
        (ns). ``horizon_ns``: how far behind the closed windows a correction may reach
        (default: the config's correction_horizon). ``overflow_code``: the string code of
        the overflow entity (see windows.cardinality); ``overflow_edge``: the id of the edge
        from it to itself (default: its packed id, an edge id without dimensions)."""
        self.size_ns = cfg.size.ns
        self.limit = cfg.cardinality_limit
        self.overflow_service = overflow_code
        self.overflow_edge = int(pack_edge(np.array([overflow_code]), np.array([overflow_code]),
                                           np.array([0]))[0]) if overflow_edge is None else overflow_edge
        self.lateness_ns = cfg.allowed_lateness.ns
        self.correct = cfg.late_spans == "correct"
        self.horizon_ns = cfg.correction_horizon.ns if horizon_ns is None else horizon_ns
        self.max_end_ns = 0
        # Event time may not pass this (a re-key partition's slowest origin); None: no cap.
        self.cap_ns: int | None = None
        # The earliest end of a client span waiting in the pairing store; None: none waits.
        self.floor_ns: int | None = None
        self.closed_until_ns = closed_until_ns
        self.open: dict[int, WindowPartial] = {}
        self.corrections: dict[int, WindowPartial] = {}
        self.applied: dict[int, list[int]] = {int(w): [h, e] for w, (h, e) in (applied or {}).items()}
        self.stats = WindowStats()

    def take_stats(self) -> WindowStats:
        s, self.stats = self.stats, WindowStats()
        return s

    @property
    def watermark_ns(self) -> int:
        end = self.max_end_ns if self.cap_ns is None else min(self.max_end_ns, self.cap_ns)
        wm = watermark(end, self.lateness_ns)
        if self.floor_ns is not None:
            wm = min(wm, self.floor_ns)
        return max(self.closed_until_ns, wm)

    def _closed(self, starts: np.ndarray) -> np.ndarray:
        """Which windows end at or before closed_until: data for them is late."""
        return np.asarray(is_closed(starts, self.size_ns, self.closed_until_ns))

    def _window(self, t_ns: int, offset: int) -> WindowPartial:
        w = self.open.get(t_ns)
        if w is None:
            w = self.open[t_ns] = WindowPartial(hold_offset=offset)
        return w

    def _correction(self, t_ns: int, offset: int) -> WindowPartial:
        w = self.corrections.get(t_ns)
        if w is None:
            w = self.corrections[t_ns] = WindowPartial(hold_offset=offset)
        w.hold_offset = min(w.hold_offset, offset)
        return w

    def _late(self, what: str, starts: np.ndarray, offsets: np.ndarray, late: np.ndarray) -> np.ndarray:
        """Which of the late contributions (``late``) to apply as corrections; every late one
        is counted by what happens to it."""
        apply = np.zeros(late.shape, bool)
        idx = np.nonzero(late)[0]
        if not idx.size:
            return apply
        if not self.correct:
            self.stats.count(what, "dropped", int(idx.size))
            return apply
        side = SIDES.index(what)
        st, off = starts[idx], offsets[idx]
        through = np.zeros(idx.size, np.int64)
        for w in np.unique(st).tolist():
            got = self.applied.get(int(w))
            if got is not None:
                through[st == w] = got[side]
        replayed = off < through
        too_old = ~replayed & (st + self.size_ns <= self.closed_until_ns - self.horizon_ns)
        ok = ~replayed & ~too_old
        self.stats.count(what, "replayed", int(replayed.sum()))
        self.stats.count(what, "dropped", int(too_old.sum()))
        self.stats.count(what, "corrected", int(ok.sum()))
        apply[idx[ok]] = True
        return apply

    def hold(self, end_ns: np.ndarray, offsets: np.ndarray) -> None:
        """Record that `offsets` must be replayed to rebuild the windows of `end_ns`."""
        ok = end_ns > 0
        if not ok.any():
            return
        starts = window_start(end_ns[ok], self.size_ns)
        offs = offsets[ok]
        for s in np.unique(starts[~self._closed(starts)]):
            m = int(offs[starts == s].min())
            w = self._window(int(s), m)
            w.hold_offset = min(w.hold_offset, m)

    def add_spans(self, spans: SpanBatch) -> None:
        if not len(spans):
            return
        self.max_end_ns = max(self.max_end_ns, int(spans.end_ns.max()))
        self.hold(spans.end_ns, spans.offset)
        counted = ((spans.kind == KIND_SERVER) | (spans.kind == KIND_CONSUMER)
                   | (spans.parent_span_id == 0))
        s = spans.take(counted)
        if not len(s):
            return
        starts = window_start(s.end_ns, self.size_ns)
        late = self._closed(starts)
        corrected = self._late("span", starts, s.offset, late)
        ms = (s.end_ns - s.start_ns).astype(np.float64) / 1e6
        err = (s.status == STATUS_ERROR).astype(np.int64)
        for mask, target in ((~late, self._window), (corrected, self._correction)):
            for start in np.unique(starts[mask]).tolist():
                m = mask & (starts == start)
                w = target(int(start), int(s.offset[m].min()))
                service, w.services, folded = admit(w.services, s.service[m], self.limit,
                                                    self.overflow_service)
                self.stats.overflowed("span", folded)
                ids, (calls, errors) = _group_sum(service.astype(np.int64),
                                                  np.ones(int(m.sum())), err[m])
                w.svc.append((ids, calls, errors))
                w.svc_sketch.append(sketch.grouped(service, ms[m]))
                w.dirty = True

    def add_edges(self, e: EdgeBatch, ids_all: np.ndarray) -> None:
        """Count edges in their windows; ``ids_all`` is each edge's id (processor.graph.EdgeIds).
        An edge past its window's cardinality limit is counted under the overflow edge, and
        renamed in ``e`` and ``ids_all`` too (its client and server become the overflow
        entity, without dimensions) so the service-graph series see the same."""
        if not len(e):
            return
        self.hold(e.client_end_ns, e.hold_offset)
        self.hold(e.server_end_ns, e.hold_offset)
        starts = window_start(e.time_ns, self.size_ns)
        late = self._closed(starts)
        corrected = self._late("edge", starts, e.offset, late)
        # Admission in completion order (the record that completed each edge), not in the
        # order the pairing store happens to list a batch's edges.
        order = np.lexsort((ids_all, e.offset))
        for mask, target in ((~late, self._window), (corrected, self._correction)):
            for start in np.unique(starts[mask]).tolist():
                idx = order[(mask & (starts == start))[order]]
                m = np.zeros(len(e), bool)
                m[idx] = True
                w = target(int(start), int(e.hold_offset[m].min()))
                admitted, w.edges, folded = admit(w.edges, ids_all[idx], self.limit, self.overflow_edge)
                if folded:
                    self.stats.overflowed("edge", folded)
                    over = idx[admitted == self.overflow_edge]
                    ids_all[over] = self.overflow_edge
                    e.client[over] = e.server[over] = self.overflow_service
                    e.conn[over] = 0
                    e.client_dims[over] = e.server_dims[over] = 0
                ids = ids_all[m]
                uniq, (req, failed) = _group_sum(ids, np.ones(ids.size), e.failed[m].astype(np.int64))
                w.edge.append((uniq, req, failed))
                for side, store in ((e.server_ms[m], w.srv_sketch), (e.client_ms[m], w.cli_sketch)):
                    has = ~np.isnan(side)
                    if has.any():
                        store.append(sketch.grouped(ids[has], side[has]))
                w.dirty = True

    def codes(self) -> np.ndarray:
        """Every service code the open windows and pending corrections hold (for
        StringTable.compact; the codes edges name are the edge ids' own, see `edge_ids`)."""
        parts = [np.array([self.overflow_service], np.int64)]
        for w in (*self.open.values(), *self.corrections.values()):
            parts += [w.services] + [p[0].astype(np.int64) for p in (*w.svc, *w.svc_sketch)]
        return np.concatenate(parts)

    def edge_ids(self) -> np.ndarray:
        """Every edge id the open windows and pending corrections hold."""
        parts = [np.array([self.overflow_edge], np.int64)]
        for w in (*self.open.values(), *self.corrections.values()):
            parts += [w.edges] + [q[0].astype(np.int64) for q in (*w.edge, *w.srv_sketch, *w.cli_sketch)]
        return np.concatenate(parts)

    def remap_codes(self, remap: np.ndarray, remap_edges: Callable[[np.ndarray], np.ndarray]) -> None:
        """Follow a StringTable.compact (``remap``) and the EdgeIds.compact that went with it
        (``remap_edges``). Kept codes and ids keep their order, so sorted ids stay sorted."""
        self.overflow_service = int(remap[self.overflow_service])
        self.overflow_edge = int(remap_edges(np.array([self.overflow_edge]))[0])
        for w in (*self.open.values(), *self.corrections.values()):
            w.services = remap[w.services].astype(np.int64)
            w.svc = [(remap[p[0]].astype(p[0].dtype), *p[1:]) for p in w.svc]
            w.svc_sketch = [(remap[p[0]].astype(p[0].dtype), *p[1:]) for p in w.svc_sketch]
            w.edges = remap_edges(w.edges)
            for name in ("edge", "srv_sketch", "cli_sketch"):
                setattr(w, name, [(remap_edges(p[0]), *p[1:]) for p in getattr(w, name)])

    def ready(self) -> list[int]:
        wm = self.watermark_ns
        return sorted(s for s in self.open if is_closed(s, self.size_ns, wm))

    def close(self, starts: list[int], applied_through: int) -> list[tuple[int, WindowPartial]]:
        """Remove windows from the open set; later data for them counts as late.

        ``applied_through``: one past the last offset read, what their base rows cover.
        """
        out = []
        for s in starts:
            w = self.open.pop(s)
            w.compact()
            out.append((s, w))
            self.applied[s] = [applied_through, applied_through]
            self.closed_until_ns = max(self.closed_until_ns, s + self.size_ns)
        return out

    def take_corrections(self, applied_through: int) -> list[tuple[int, WindowPartial]]:
        """Corrections to store now, with everything completed below ``applied_through``:
        those of windows no waiting client span can add to any more."""
        out = []
        for s in sorted(self.corrections):
            if self.floor_ns is not None and s + self.size_ns > self.floor_ns:
                continue
            w = self.corrections.pop(s)
            w.compact()
            out.append((s, w))
            self.applied[s] = [applied_through, applied_through]
        # Marks of windows past the horizon are never read again.
        oldest_end = self.closed_until_ns - self.horizon_ns
        for s in [s for s in self.applied if s + self.size_ns <= oldest_end]:
            del self.applied[s]
        return out

    def dirty(self) -> list[tuple[int, WindowPartial]]:
        out = []
        for s in sorted(self.open):
            w = self.open[s]
            if w.dirty:
                w.compact()
                out.append((s, w))
        return out

    def min_hold_offset(self) -> int | None:
        """The lowest offset a replay needs to rebuild open windows and pending corrections."""
        return min((w.hold_offset for w in (*self.open.values(), *self.corrections.values())),
                   default=None)
