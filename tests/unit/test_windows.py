"""Event-time tumbling windows: the arithmetic table and what windows count and when they close."""

from __future__ import annotations

import numpy as np
import pytest

from processor.aggregate.messages import HealthKey
from processor.aggregate.partition import Emission, PartitionAggregator
from processor.config import StoreConfig
from processor.graph import pack_edge, unpack_edge
from processor.otlp.batch import StringTable
from processor.windows import arith
from tests.unit.spans import Spans, emit_all, store_config, windows_config

MS = 1_000_000
SIZE_MS, LATENESS_MS = 10_000, 5_000
T0 = 1_700_000_000_000  # ms, a multiple of SIZE_MS: the start of window W0
W0, W1, W2 = T0, T0 + SIZE_MS, T0 + 2 * SIZE_MS


@pytest.mark.parametrize(
    ("t", "size", "start"),
    [
        (0, 10, 0), (1, 10, 0), (9, 10, 0), (10, 10, 10), (19, 10, 10), (20, 10, 20),
        # Epoch-aligned, whatever the first event: real nanosecond timestamps.
        (T0 * MS, SIZE_MS * MS, T0 * MS),
        (T0 * MS + 1, SIZE_MS * MS, T0 * MS),
        (W1 * MS - 1, SIZE_MS * MS, T0 * MS),
        (W1 * MS, SIZE_MS * MS, W1 * MS),
        (T0 * MS + 7, 60_000 * MS, (T0 // 60_000) * 60_000 * MS),
    ],
)
def test_window_start_table(t: int, size: int, start: int) -> None:
    assert arith.window_start(t, size) == start


def test_window_start_is_vectorised() -> None:
    t = np.array([0, 9, 10, 25, 39, 40], dtype=np.int64)
    assert arith.window_start(t, 10).tolist() == [0, 0, 10, 20, 30, 40]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("max_event", "lateness", "wm"), [(100, 30, 70), (100, 0, 100), (30, 30, 0)]
)
def test_watermark_table(max_event: int, lateness: int, wm: int) -> None:
    assert arith.watermark(max_event, lateness) == wm


@pytest.mark.parametrize(
    ("start", "size", "wm", "closed"),
    [(0, 10, 9, False), (0, 10, 10, True), (0, 10, 11, True), (10, 10, 19, False),
     (10, 10, 20, True), (10, 10, 0, False)],
)
def test_is_closed_table(start: int, size: int, wm: int, closed: bool) -> None:
    assert arith.is_closed(start, size, wm) is closed


def test_pack_edge_round_trips_large_codes() -> None:
    client = np.array([0, 1, 70_000, 2**30 - 1], np.int32)
    server = np.array([5, 2**31 - 1, 3, 123_456], np.int32)
    conn = np.array([0, 1, 2, 3], np.int8)
    packed = pack_edge(client, server, conn)
    assert [unpack_edge(int(p)) for p in packed] == list(
        zip(client.tolist(), server.tolist(), conn.tolist(), strict=True))


# -- windows through a partition aggregator -------------------------------------------


@pytest.fixture
def sp() -> Spans:
    return Spans(StringTable())


def _agg(sp: Spans) -> PartitionAggregator:
    return PartitionAggregator("spans", 0, sp.strings, store_config(2_000),
                               windows_config(SIZE_MS, LATENESS_MS))


def _calls(em: Emission) -> dict[tuple[str, int], tuple[int, int]]:
    return {(r["service"], r["window_start"]): (r["calls"], r["errors"]) for r in em.health}


def _edges(em: Emission) -> dict[tuple[str, str, str, int], tuple[int, int]]:
    return {(r["client"], r["server"], r["connection_type"], r["window_start"]):
            (r["requests"], r["failed"]) for r in em.edges}


def _root(sp: Spans, trace: int, service: str, start_ms: float, end_ms: float,
          error: bool = False) -> dict:
    return sp.span(trace=trace, id=trace * 100, service=service, kind="server",
                   start_ms=start_ms, end_ms=end_ms, error=error)


def _tick(sp: Spans, end_ms: float) -> dict:
    """A span of an unrelated service that moves the watermark."""
    return sp.span(trace=999_999, id=int(end_ms), service="tick", kind="internal",
                   start_ms=end_ms - 1, end_ms=end_ms)


def test_span_is_windowed_by_its_end_time(sp: Spans) -> None:
    agg = _agg(sp)
    # Starts in W0, ends in W1: it belongs to W1.
    agg.add(sp.batch(_root(sp, 1, "fe", W1 - 2_000, W1 + 1)), 1)
    calls = _calls(emit_all(agg))
    assert calls[("fe", W1)] == (1, 0)
    assert ("fe", W0) not in calls


def test_window_closes_only_when_watermark_reaches_its_end(sp: Spans) -> None:
    agg = _agg(sp)
    agg.add(sp.batch(_root(sp, 1, "fe", W0 + 1_000, W0 + 1_500)), 1)
    # Watermark = max end - lateness = one ms short of W0's end.
    agg.add(sp.batch(_tick(sp, W1 + LATENESS_MS - 1)), 2)
    assert agg.flush_closed().health == []
    agg.add(sp.batch(_tick(sp, W1 + LATENESS_MS)), 3)
    em = agg.flush_closed()
    assert _calls(em) == {("fe", W0): (1, 0)}
    assert {(r["window_start"], r["window_end"]) for r in em.health} == {(W0, W1)}
    assert em.watermark_ms == W1
    # Emitted once: a second flush has nothing more to say about W0.
    assert agg.flush_closed().health == []


def test_late_span_is_dropped_and_counted_with_late_spans_drop(sp: Spans) -> None:
    agg = PartitionAggregator("spans", 0, sp.strings, store_config(2_000),
                              windows_config(SIZE_MS, LATENESS_MS, late_spans="drop"))
    agg.add(sp.batch(_root(sp, 1, "fe", W0 + 1_000, W0 + 1_500), offset=0), 1)
    agg.add(sp.batch(_tick(sp, W1 + LATENESS_MS), offset=1), 2)
    assert _calls(agg.flush_closed()) == {("fe", W0): (1, 0)}
    agg.add(sp.batch(_root(sp, 2, "fe", W0 + 2_000, W0 + 2_500, error=True), offset=2), 3)
    assert agg.windows.take_stats().late == {("span", "dropped"): 1, ("edge", "dropped"): 1}
    later = emit_all(agg).extend(agg.flush_corrections())
    assert ("fe", W0) not in _calls(later)  # never re-emitted, never added to


def test_late_span_becomes_a_correction_row_beside_the_base_row(sp: Spans) -> None:
    agg = _agg(sp)
    agg.add(sp.batch(_root(sp, 1, "fe", W0 + 1_000, W0 + 1_500), offset=0), 1)
    agg.add(sp.batch(_tick(sp, W1 + LATENESS_MS), offset=1), 2)
    [base] = [r for r in agg.flush_closed().health if r["service"] == "fe"]
    assert (base["calls"], base["correction"], base["applied_through"]) == (1, 0, 2)
    # Another fe request ending in the closed W0, then one in the open W1.
    agg.add(sp.batch(_root(sp, 2, "fe", W0 + 2_000, W0 + 2_500, error=True), offset=2), 3)
    assert agg.windows.take_stats().late == {("span", "corrected"): 1, ("edge", "corrected"): 1}
    assert ("fe", W0) not in _calls(emit_all(agg))  # the base row is never rewritten
    em = agg.flush_corrections()
    assert [(r["service"], r["window_start"], r["calls"], r["errors"], r["correction"])
            for r in em.health] == [("fe", W0, 1, 1, 3)]
    assert _edges(em) == {("user", "fe", "virtual_node", W0): (1, 1)}
    assert em.health_keys() == [HealthKey("fe", W0)]  # stage 2 re-finalises the window
    assert agg.flush_corrections().health == []


def test_late_edge_is_corrected_in_the_client_window(sp: Spans) -> None:
    agg = _agg(sp)
    agg.add(sp.batch(_tick(sp, W1 + LATENESS_MS), offset=0), 1)
    assert agg.flush_closed().edges == []  # W0 had nothing but is closed now
    agg.add(sp.batch(_tick(sp, W2 + LATENESS_MS), offset=1), 2)
    agg.flush_closed()  # closes W1
    c = sp.span(trace=1, id=10, parent=1, service="fe", kind="client", end_ms=W1 + 9)
    s = sp.span(trace=1, id=11, parent=10, service="be", kind="server", end_ms=W1 + 5)
    agg.add(sp.batch(c, s, offset=2), 3)
    assert agg.windows.take_stats().late == {("span", "corrected"): 1, ("edge", "corrected"): 1}
    em = agg.flush_corrections()
    assert _edges(em) == {("fe", "be", "", W1): (1, 0)}
    assert _calls(em) == {("be", W1): (1, 0)}


def test_a_window_stays_open_while_a_client_span_ending_in_it_waits(sp: Spans) -> None:
    # A pairing ttl longer than the lateness: the unanswered client's edge (a virtual node,
    # once it expires) must land in its window's base row, not after it closed.
    agg = PartitionAggregator("spans", 0, sp.strings, store_config(3 * LATENESS_MS),
                              windows_config(SIZE_MS, LATENESS_MS))
    c = sp.span(trace=1, id=10, parent=1, service="fe", kind="client", end_ms=W1 - 100)
    agg.add(sp.batch(c, offset=0), 1)
    agg.add(sp.batch(_tick(sp, W1 + LATENESS_MS), offset=1), 2)
    assert _edges(agg.flush_closed()) == {}  # W0 held open
    agg.add(sp.batch(_tick(sp, W1 + 3 * LATENESS_MS), offset=2), 3)  # the client expires
    em = agg.flush_closed()
    assert _edges(em) == {("fe", "unknown", "virtual_node", W0): (1, 0)}
    assert agg.windows.take_stats().late == {}


def test_late_correction_waits_for_a_late_client_still_in_the_pairing_store(sp: Spans) -> None:
    # Its server may still come: storing the window's correction now would leave the edge
    # behind an applied-through mark it could not pass.
    agg = _agg(sp)
    agg.add(sp.batch(_tick(sp, W1 + LATENESS_MS), offset=0), 1)
    agg.flush_closed()
    c = sp.span(trace=1, id=10, parent=1, service="fe", kind="client", end_ms=W0 + 9)
    root = _root(sp, 2, "fe", W0 + 1, W0 + 20)
    agg.add(sp.batch(c, root, offset=1), 2)
    assert agg.flush_corrections().health == []
    s = sp.span(trace=1, id=11, parent=10, service="be", kind="server", end_ms=W0 + 5)
    agg.add(sp.batch(s, offset=2), 3)
    em = agg.flush_corrections()
    assert _edges(em) == {("fe", "be", "", W0): (1, 0), ("user", "fe", "virtual_node", W0): (1, 0)}


def test_calls_count_server_consumer_and_root_spans_only(sp: Spans) -> None:
    agg = _agg(sp)
    t = W0 + 1_000
    rows = [
        sp.span(trace=1, id=1, service="fe", kind="server", start_ms=t, end_ms=t + 50),
        sp.span(trace=1, id=2, parent=1, service="fe", kind="client", start_ms=t, end_ms=t + 9),
        sp.span(trace=1, id=3, parent=2, service="be", kind="server", start_ms=t, end_ms=t + 8),
        sp.span(trace=1, id=4, parent=3, service="be", kind="internal", start_ms=t, end_ms=t + 1),
        sp.span(trace=1, id=5, parent=3, service="be", kind="producer", start_ms=t, end_ms=t + 1),
        sp.span(trace=1, id=6, parent=5, service="worker", kind="consumer", start_ms=t,
                end_ms=t + 9),
        # Roots of any kind are requests into the system.
        sp.span(trace=2, id=7, service="cron", kind="internal", start_ms=t, end_ms=t + 3),
        sp.span(trace=3, id=8, service="batch", kind="client", start_ms=t, end_ms=t + 3),
        sp.span(trace=4, id=9, service="pub", kind="producer", start_ms=t, end_ms=t + 3),
    ]
    agg.add(sp.batch(*rows), 1)
    calls = {svc: c for (svc, _), (c, _) in _calls(emit_all(agg)).items()}
    assert calls == {"fe": 1, "be": 1, "worker": 1, "cron": 1, "batch": 1, "pub": 1}


def test_errors_are_counted_per_service_and_window(sp: Spans) -> None:
    agg = _agg(sp)
    rows = [_root(sp, i, "fe", W0 + i, W0 + i + 1, error=(i % 3 == 0)) for i in range(1, 10)]
    rows += [_root(sp, 50, "fe", W1 + 1, W1 + 2, error=True)]
    agg.add(sp.batch(*rows), 1)
    assert _calls(emit_all(agg)) == {("fe", W0): (9, 3), ("fe", W1): (1, 1)}


def test_service_latency_sketch_holds_each_call(sp: Spans) -> None:
    agg = _agg(sp)
    agg.add(sp.batch(*[_root(sp, i, "fe", W0, W0 + d) for i, d in enumerate((5, 5, 200), 1)]), 1)
    [row] = emit_all(agg).health
    assert sum(row["latency_counts"]) == 3
    assert len(row["latency_keys"]) == 2  # two distinct latencies, two buckets


def test_edge_counts_in_client_end_window_even_if_server_ended_earlier(sp: Spans) -> None:
    agg = _agg(sp)
    c = sp.span(trace=1, id=10, parent=1, service="fe", kind="client", start_ms=W1 - 50,
                end_ms=W1 + 5)
    s = sp.span(trace=1, id=11, parent=10, service="be", kind="server", start_ms=W1 - 40,
                end_ms=W1 - 1)
    agg.add(sp.batch(s), 1)
    agg.add(sp.batch(c), 2)
    em = emit_all(agg)
    assert _edges(em) == {("fe", "be", "", W1): (1, 0)}
    assert _calls(em)[("be", W0)] == (1, 0)  # the server's call stays in its own window


def test_edge_failures_and_connection_types_are_kept_apart(sp: Spans) -> None:
    agg = _agg(sp)
    t = W0 + 100
    rows = []
    for i in range(4):
        rows.append(sp.span(trace=i + 1, id=10 + i, parent=1, service="fe", kind="client",
                            end_ms=t, error=(i == 0)))
        rows.append(sp.span(trace=i + 1, id=20 + i, parent=10 + i, service="be", kind="server",
                            end_ms=t))
    rows.append(sp.span(trace=9, id=90, parent=1, service="fe", kind="client", end_ms=t,
                        db_name="be"))  # same node name, different connection type
    agg.add(sp.batch(*rows), 1)
    assert _edges(emit_all(agg)) == {("fe", "be", "", W0): (4, 1),
                                         ("fe", "be", "database", W0): (1, 0)}


def test_closed_until_survives_restart_so_replay_cannot_reopen(sp: Spans) -> None:
    # The stored rows of W0 cover offsets below 2: a replay of offset 1 is already in them.
    agg = PartitionAggregator("spans", 0, sp.strings, StoreConfig(),
                              windows_config(SIZE_MS, LATENESS_MS), closed_until_ns=W1 * MS,
                              applied={W0 * MS: (2, 2)})
    agg.add(sp.batch(_root(sp, 1, "fe", W0, W0 + 5), _root(sp, 2, "fe", W1, W1 + 5)), 1)
    assert agg.windows.stats.late == {("span", "replayed"): 1, ("edge", "replayed"): 1}
    assert _calls(emit_all(agg).extend(agg.flush_corrections())) == {("fe", W1): (1, 0)}


def test_edge_latency_sketches_survive_large_string_codes() -> None:
    # A long-lived StringTable (e.g. many server.address values) gives service codes past
    # 2**14; a packed edge id * 65536 used to overflow int64 and drop the edge's sketches.
    strings = StringTable()
    for i in range(20_000):
        strings.code(f"10.0.{i // 256}.{i % 256}")
    sp = Spans(strings)
    agg = _agg(sp)
    rows = []
    for i, (cli, ms) in enumerate((("fe", 5.0), ("fe", 7.0), ("mobile", 9.0))):
        rows.append(sp.span(trace=i + 1, id=10 + i, parent=1, service=cli, kind="client",
                            start_ms=W0, end_ms=W0 + ms + 1))
        rows.append(sp.span(trace=i + 1, id=20 + i, parent=10 + i, service="be", kind="server",
                            start_ms=W0, end_ms=W0 + ms))
    agg.add(sp.batch(*rows), 1)
    got = {(r["client"], r["server"]): (r["requests"], sum(r["server_counts"]),
                                        sum(r["client_counts"]))
           for r in emit_all(agg).edges}
    assert got == {("fe", "be"): (2, 2, 2), ("mobile", "be"): (1, 1, 1)}
