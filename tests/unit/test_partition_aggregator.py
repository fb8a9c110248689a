"""PartitionAggregator: offset holds, idle flushes, and a randomized exactness/replay property."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from processor.aggregate.partition import Emission, PartitionAggregator
from processor.otlp.batch import SpanBatch, StringTable
from tests.unit.spans import Spans, store_config, windows_config

MS = 1_000_000
SIZE_MS, LATENESS_MS = 10_000, 5_000
T0 = 1_700_000_000_000  # ms, start of window W0
W0, W1, W2 = T0, T0 + 10_000, T0 + 20_000


@pytest.fixture
def sp() -> Spans:
    return Spans(StringTable())


def _agg(sp: Spans, ttl_ms: int = 60_000, closed_until_ms: int = 0,
         applied: dict[int, tuple[int, int]] | None = None) -> PartitionAggregator:
    return PartitionAggregator("spans", 0, sp.strings, store_config(ttl_ms),
                               windows_config(SIZE_MS, LATENESS_MS), closed_until_ms * MS, applied)


def _tick(sp: Spans, end_ms: int) -> dict:
    return sp.span(trace=999_999, id=end_ms, service="tick", kind="internal",
                   start_ms=end_ms - 1, end_ms=end_ms)


def _root(sp: Spans, trace: int, end_ms: int, error: bool = False) -> dict:
    return sp.span(trace=trace, id=trace, service="fe", kind="server", start_ms=end_ms - 3,
                   end_ms=end_ms, error=error)


# -- offset holds -------------------------------------------------------------------------


def test_safe_offset_is_next_offset_when_nothing_is_held(sp: Spans) -> None:
    agg = _agg(sp)
    assert agg.safe_offset() == -1
    # A replay of records whose windows were already emitted holds nothing.
    agg = _agg(sp, closed_until_ms=W1, applied={W0 * MS: (42, 42)})
    agg.add(sp.batch(_root(sp, 1, W0 + 5), offset=40), 41)
    agg.add(sp.batch(_root(sp, 2, W0 + 6), offset=41), 42)
    assert agg.safe_offset() == 42
    # Each root span is a call and a user edge.
    assert agg.windows.take_stats().late == {("span", "replayed"): 2, ("edge", "replayed"): 2}


def test_a_late_span_holds_its_offset_until_its_correction_is_flushed(sp: Spans) -> None:
    agg = _agg(sp, closed_until_ms=W1, applied={W0 * MS: (40, 40)})
    agg.add(sp.batch(_root(sp, 1, W0 + 5), offset=41), 42)
    assert agg.safe_offset() == 41
    em = agg.flush_corrections()
    assert [(r["service"], r["window_start"], r["calls"], r["correction"], r["applied_through"])
            for r in em.health] == [("fe", W0, 1, 42, 42)]
    assert agg.safe_offset() == 42
    # Replayed after a restart that found the correction stored: skipped, not added twice.
    again = _agg(sp, closed_until_ms=W1, applied={W0 * MS: (42, 42)})
    again.add(sp.batch(_root(sp, 1, W0 + 5), offset=41), 42)
    assert again.flush_corrections().health == []
    assert again.windows.take_stats().late == {("span", "replayed"): 1, ("edge", "replayed"): 1}


def test_safe_offset_holds_records_of_open_windows_until_they_are_flushed(sp: Spans) -> None:
    agg = _agg(sp)
    for off in range(3):
        agg.add(sp.batch(_root(sp, off + 1, W0 + 100 * off), offset=off), off + 1)
        assert agg.safe_offset() == 0
    agg.add(sp.batch(_tick(sp, W1 + LATENESS_MS), offset=3), 4)
    # The watermark has passed W0, but its rows are not emitted yet.
    assert agg.safe_offset() == 0
    em = agg.flush_closed()
    assert [(r["service"], r["calls"]) for r in em.health] == [("fe", 3)]
    # Only the record feeding the still-open W1 is held now.
    assert agg.safe_offset() == 3


def test_safe_offset_never_passes_a_span_waiting_in_the_store(sp: Spans) -> None:
    agg = _agg(sp, ttl_ms=60_000)
    s = sp.span(trace=1, id=11, parent=10, service="be", kind="server", start_ms=W0 + 1,
                end_ms=W0 + 5)
    agg.add(sp.batch(s, offset=0), 1)
    agg.add(sp.batch(_tick(sp, W1 + LATENESS_MS), offset=1), 2)
    em = agg.flush_closed()
    assert [(r["service"], r["window_start"]) for r in em.health] == [("be", W0)]
    # W0 is emitted, but the server still waits for its client: record 0 stays needed.
    assert len(agg.store) == 1
    assert agg.safe_offset() == 0

    c = sp.span(trace=1, id=10, parent=1, service="fe", kind="client", start_ms=W0,
                end_ms=W1 + 6)
    agg.add(sp.batch(c, offset=2), 3)
    assert len(agg.store) == 0
    # The edge lives in W1 and was built from record 0 as well.
    assert agg.safe_offset() == 0

    agg.add(sp.batch(_tick(sp, W2 + LATENESS_MS), offset=3), 4)
    em = agg.flush_closed()
    assert [(r["client"], r["server"], r["window_start"], r["requests"]) for r in em.edges] == [
        ("fe", "be", W1, 1)]
    assert agg.safe_offset() == 3  # only the tick feeding the open W2


# -- idle flush ----------------------------------------------------------------------------


def test_flush_idle_emits_provisionally_and_re_emits_with_more_data(sp: Spans) -> None:
    agg = _agg(sp)
    orphan = sp.span(trace=50, id=500, parent=1, service="fe", kind="client", end_ms=W0 + 9,
                     virtual_peer="cache")
    agg.add(sp.batch(_root(sp, 1, W0 + 10), _root(sp, 2, W0 + 20, error=True),
                     _root(sp, 3, W0 + 30), orphan, offset=0), 1)
    first = agg.flush_idle()
    assert [(r["service"], r["window_start"], r["calls"], r["errors"]) for r in first.health] == [
        ("fe", W0, 3, 1)]
    assert sorted((r["client"], r["server"], r["requests"]) for r in first.edges) == [
        ("fe", "cache", 1), ("user", "fe", 3)]
    # Nothing changed: nothing to re-emit.
    assert agg.flush_idle().health == []
    # The window stayed open, so its records stay held.
    assert agg.safe_offset() == 0

    agg.add(sp.batch(_root(sp, 4, W0 + 40, error=True), _root(sp, 5, W0 + 50), offset=1), 2)
    second = agg.flush_idle()
    assert [(r["service"], r["window_start"], r["calls"], r["errors"]) for r in second.health] == [
        ("fe", W0, 5, 2)]
    assert sorted((r["client"], r["server"], r["requests"]) for r in second.edges) == [
        ("fe", "cache", 1), ("user", "fe", 5)]
    assert second.health_keys() == first.health_keys()


# -- randomized property: exact totals, with and without a crash --------------------------

SERVICES = ("fe", "cart", "pay", "stock", "ship")


@dataclass
class Truth:
    edges: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    failed: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class TraceGen:
    """Random traces; the expected edges and calls are counted from the structure itself."""

    sp: Spans
    rng: np.random.Generator
    rows: list[dict] = field(default_factory=list)
    truth: Truth = field(default_factory=Truth)

    def _id(self) -> int:
        return int(self.rng.integers(1, 2**63))

    def _err(self) -> bool:
        return bool(self.rng.random() < 0.1)

    def _edge(self, client: str, server: str, conn: str, failed: bool) -> None:
        self.truth.edges[(client, server, conn)] += 1
        self.truth.failed[(client, server, conn)] += int(failed)

    def trace(self, start_ms: float) -> None:
        trace = int(self.rng.integers(1, 2**63)) << 64 | self._id()
        svc = str(self.rng.choice(SERVICES))
        if self.rng.random() < 0.1:  # a scheduled job: INTERNAL root, no user edge
            self.serve(trace, self._id(), 0, "cron", "internal", start_ms, 0)
        else:
            _, err = self.serve(trace, self._id(), 0, svc, "server", start_ms, 0)
            self._edge("user", svc, "virtual_node", err)

    def serve(self, trace: int, sid: int, parent: int, service: str, kind: str,
              start_ms: float, depth: int, link: tuple[int, int] = (0, 0)) -> tuple[float, bool]:
        """Adds a SERVER/CONSUMER (or root) span and its calls; returns (end_ms, error)."""
        t = start_ms + self.rng.uniform(0.1, 2)
        for _ in range(int(self.rng.integers(0, 3)) if depth < 3 else 0):
            t = self.call(trace, sid, service, t, depth) + self.rng.uniform(0.1, 2)
        err = self._err()
        self.rows.append(self.sp.span(trace=trace, id=sid, parent=parent, service=service,
                                      kind=kind, start_ms=start_ms, end_ms=t, error=err,
                                      link_trace=link[0], link_span=link[1]))
        self.truth.calls[service] += 1
        self.truth.errors[service] += int(err)
        return t, err

    def call(self, trace: int, parent: int, caller: str, start_ms: float, depth: int) -> float:
        cid, callee, cerr = self._id(), str(self.rng.choice(SERVICES)), self._err()
        r = self.rng.random()
        attrs: dict[str, Any] = {}
        kind = "client"
        if r < 0.55:  # request/response
            # Sometimes the callee's clock runs ahead, so its spans may end in a later
            # window than the client span that is the edge's time.
            skew = self.rng.uniform(0, 3_000) if self.rng.random() < 0.2 else 0.0
            server_end, serr = self.serve(trace, self._id(), cid, callee, "server",
                                          start_ms + 0.5 + skew, depth + 1)
            end = server_end - skew + 0.5
            self._edge(caller, callee, "", cerr or serr)
        elif r < 0.7:  # database
            end = start_ms + self.rng.uniform(0.2, 3)
            attrs = {"db_name": str(self.rng.choice(("orders", "users")))}
            self._edge(caller, attrs["db_name"], "database", cerr)
        elif r < 0.85:  # messaging, to a child consumer or one linked from a new trace
            kind = "producer"
            end = start_ms + self.rng.uniform(0.1, 1)
            if self.rng.random() < 0.5:
                _, serr = self.serve(trace, self._id(), cid, callee, "consumer", end + 1,
                                     depth + 1)
            else:
                other = int(self.rng.integers(1, 2**63)) << 64 | self._id()
                _, serr = self.serve(other, self._id(), 0, callee, "consumer", end + 1,
                                     depth + 1, link=(trace, cid))
            self._edge(caller, callee, "messaging_system", cerr or serr)
        else:  # nobody answers: a virtual peer
            end = start_ms + self.rng.uniform(0.5, 30)
            peer = str(self.rng.choice(("ext-api", "")))
            if peer:
                attrs = {"virtual_peer": peer}
            self._edge(caller, peer or "unknown", "virtual_node", cerr)
        self.rows.append(self.sp.span(trace=trace, id=cid, parent=parent, service=caller,
                                      kind=kind, start_ms=start_ms, end_ms=end, error=cerr,
                                      **attrs))
        if self.rng.random() < 0.3:  # INTERNAL work never counts anywhere
            self.rows.append(self.sp.span(trace=trace, id=self._id(), parent=parent,
                                          service=caller, kind="internal", start_ms=start_ms,
                                          end_ms=end))
        return end


def _records(gen: TraceGen, n_traces: int, max_delay_ms: float, straggle_ms: int = 0) -> list[SpanBatch]:
    """Spans arrive up to max_delay after they end, in random-sized, shuffled batches; with
    ``straggle_ms``, one trace in 20 (with every trace it links to) arrives that much later
    still, as a collector retrying an export would deliver it."""
    extra: list[int] = []
    for i in range(n_traces):
        before = len(gen.rows)
        gen.trace(T0 + i * 1_000 + gen.rng.uniform(0, 900))
        late = straggle_ms if straggle_ms and gen.rng.random() < 0.05 else 0
        extra += [late] * (len(gen.rows) - before)
    spans = gen.sp.batch(*gen.rows)
    arrival = spans.end_ns + (gen.rng.uniform(0, max_delay_ms, len(spans)) * MS).astype(np.int64)
    arrival += np.asarray(extra, np.int64) * MS
    order = np.argsort(arrival, kind="stable")
    cuts = np.cumsum(gen.rng.integers(1, 40, len(spans)))
    cuts = cuts[cuts < len(spans)]
    return [spans.take(gen.rng.permutation(idx)).with_offset(off)
            for off, idx in enumerate(np.split(order, cuts))]


Rows = dict[tuple, dict]


def _new_agg(strings: StringTable, lateness_ms: int, rows: Rows | None = None,
             closed_until_ns: int = 0) -> PartitionAggregator:
    """ttl exceeds the arrival delay, so nothing expires early. ``rows``: the durable rows a
    restart finds (their applied-through marks, as Store.load_applied reads them)."""
    applied: dict[int, tuple[int, int]] = {}
    for key, r in (rows or {}).items():
        ws = r["window_start"] * MS
        if ws < closed_until_ns:
            h, e = applied.get(ws, (0, 0))
            through = r["applied_through"]
            applied[ws] = (max(h, through), e) if key[0] == "h" else (h, max(e, through))
    return PartitionAggregator("spans", 0, strings, store_config(10_000, max_items=100_000),
                               windows_config(SIZE_MS, lateness_ms), closed_until_ns, applied)


def _absorb(out: Rows, em: Emission) -> None:
    # Stored partials replace by key (ReplacingMergeTree): the last emission wins.
    for r in em.health:
        out[("h", r["service"], r["window_start"], r["correction"])] = r
    for r in em.edges:
        out[("e", r["client"], r["server"], r["connection_type"], r["window_start"], r["correction"])] = r


def _feed(agg: PartitionAggregator, records: list[SpanBatch], first: int, last: int,
          out: Rows) -> None:
    for off in range(first, last):
        agg.add(records[off], off + 1)
        _absorb(out, agg.flush_closed())


def _totals(rows: Rows) -> Truth:
    got = Truth()
    for key, r in rows.items():
        if key[0] == "h":
            got.calls[r["service"]] += r["calls"]
            got.errors[r["service"]] += r["errors"]
        else:
            edge = (r["client"], r["server"], r["connection_type"])
            got.edges[edge] += r["requests"]
            got.failed[edge] += r["failed"]
    return got


def _check_sketch_sizes(rows: Rows) -> None:
    """Every request lands in exactly the latency sketches of the sides it has."""
    for key, r in rows.items():
        if key[0] == "h":
            assert sum(r["latency_counts"]) == r["calls"], key
            continue
        has_client = r["client"] != "user"
        # A database edge's server side is its client span (as the connector records it).
        has_server = r["connection_type"] != "virtual_node" or not has_client
        assert sum(r["client_counts"]) == (r["requests"] if has_client else 0), key
        assert sum(r["server_counts"]) == (r["requests"] if has_server else 0), key


@pytest.mark.parametrize(("seed", "filler_strings", "straggle_ms"),
                         [(1, 0, 0), (2, 0, 0), (3, 20_000, 0), (4, 0, 40_000), (5, 0, 90_000)])
def test_random_traces_give_exact_totals_with_and_without_a_crash(
        seed: int, filler_strings: int, straggle_ms: int) -> None:
    """Spans arrive up to 5 s after they end, within the 20 s of lateness. Straggling
    traces come 2 and 4.5 x the lateness later: the corrections must make the totals just as
    exact, also when a restart replays records whose corrections were already stored."""
    lateness_ms = 20_000
    strings = StringTable()
    # A long-lived table: many codes before the service names (e.g. server.address values).
    for i in range(filler_strings):
        strings.code(f"10.0.{i // 256}.{i % 256}")
    gen = TraceGen(Spans(strings), np.random.default_rng(seed))
    records = _records(gen, n_traces=300, max_delay_ms=5_000, straggle_ms=straggle_ms)
    n = len(records)

    whole: Rows = {}
    agg = _new_agg(strings, lateness_ms)
    _feed(agg, records, 0, n, whole)
    _absorb(whole, agg.flush_idle())
    late = agg.windows.take_stats().late
    if not straggle_ms:
        assert late == {}
    else:
        assert late.get(("span", "corrected"), 0) > 0 and late.get(("edge", "corrected"), 0) > 0
        assert set(late) <= {("span", "corrected"), ("edge", "corrected")}
    assert agg.store.stats.evicted == 0 and len(agg.store) == 0

    got = _totals(whole)
    assert got.edges == gen.truth.edges
    assert got.failed == gen.truth.failed
    assert got.calls == gen.truth.calls
    assert got.errors == gen.truth.errors
    _check_sketch_sizes(whole)

    # Crash after record k: only closed-window rows are durable; restart from safe_offset.
    for k in sorted(gen.rng.integers(n // 4, 3 * n // 4, size=3).tolist()):
        crashed: Rows = {}
        first = _new_agg(strings, lateness_ms)
        _feed(first, records, 0, k, crashed)
        safe = first.safe_offset()
        assert 0 < safe <= k  # the crash point is interesting: some, not all, is replayed
        second = _new_agg(strings, lateness_ms, crashed, first.windows.closed_until_ns)
        _feed(second, records, safe, n, crashed)
        _absorb(crashed, second.flush_idle())
        assert _counts(crashed) == _counts(whole), k
        if straggle_ms:
            assert second.windows.take_stats().late.get(("span", "replayed"), 0) > 0, k


def _counts(rows: Rows) -> dict[tuple, tuple[int, int]]:
    """Per entity and window, summed over its base row and corrections (as stage 2 does)."""
    out: dict[tuple, tuple[int, int]] = {}
    for key, r in rows.items():
        a, b = (r["calls"], r["errors"]) if key[0] == "h" else (r["requests"], r["failed"])
        x, y = out.get(key[:-1], (0, 0))
        out[key[:-1]] = (x + a, y + b)
    return out
