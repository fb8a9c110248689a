"""PairingStore: servicegraph-connector pairing rules, one rule per test."""

from __future__ import annotations

import math

import pytest

from processor.config import StoreConfig
from processor.config.duration import Duration
from processor.graph import PairingStore
from processor.otlp.batch import StringTable
from tests.unit.spans import Spans, edge_rows

TTL_MS = 2_000


@pytest.fixture
def sp() -> Spans:
    return Spans(StringTable())


def _store(sp: Spans, ttl_ms: int = TTL_MS, max_items: int = 1000) -> PairingStore:
    return PairingStore(sp.strings, StoreConfig(ttl=Duration(ttl_ms * 1_000_000), max_items=max_items))


def _call(sp: Spans, trace: int = 1, client_id: int = 10, server_id: int = 11,
          client_error: bool = False, server_error: bool = False) -> tuple[dict, dict]:
    """fe CLIENT (1..9 ms) calling be SERVER (2..5 ms) in `trace`."""
    c = sp.span(trace=trace, id=client_id, parent=1, service="fe", kind="client",
                start_ms=1, end_ms=9, error=client_error)
    s = sp.span(trace=trace, id=server_id, parent=client_id, service="be", kind="server",
                start_ms=2, end_ms=5, error=server_error)
    return c, s


def test_client_and_server_pair_into_one_edge_with_each_sides_latency(sp: Spans) -> None:
    store = _store(sp)
    c, s = _call(sp)
    [e] = edge_rows(store.add(sp.batch(c, s)), sp.strings)
    assert (e["client"], e["server"], e["conn"], e["failed"]) == ("fe", "be", "", False)
    assert e["client_ms"] == pytest.approx(8.0)
    assert e["server_ms"] == pytest.approx(3.0)
    # The window is decided by the client span's end.
    assert e["time_ns"] == 9_000_000
    assert len(store) == 0 and store.stats.paired == 1


def test_server_first_then_client_in_a_later_batch_still_pairs(sp: Spans) -> None:
    store = _store(sp)
    c, s = _call(sp)
    assert len(store.add(sp.batch(s, offset=0))) == 0
    assert len(store) == 1
    [e] = edge_rows(store.add(sp.batch(c, offset=1)), sp.strings)
    assert (e["client"], e["server"], e["conn"]) == ("fe", "be", "")
    assert e["server_ms"] == pytest.approx(3.0) and e["client_ms"] == pytest.approx(8.0)
    # The edge must hold the earlier record: a replay has to see both spans again.
    assert e["hold_offset"] == 0
    assert len(store) == 0


def test_same_span_id_in_another_trace_does_not_pair(sp: Spans) -> None:
    store = _store(sp)
    c = sp.span(trace=1, id=10, parent=1, service="fe", kind="client", end_ms=9)
    s = sp.span(trace=2, id=11, parent=10, service="be", kind="server", end_ms=5)
    assert len(store.add(sp.batch(c, s))) == 0
    assert len(store) == 2


def test_trace_ids_differing_only_in_high_half_do_not_pair(sp: Spans) -> None:
    store = _store(sp)
    c = sp.span(trace=(1 << 64) | 7, id=10, parent=1, service="fe", kind="client", end_ms=9)
    s = sp.span(trace=(2 << 64) | 7, id=11, parent=10, service="be", kind="server", end_ms=5)
    assert len(store.add(sp.batch(c, s))) == 0


def test_server_finds_its_client_among_clients_sharing_the_span_id(sp: Spans) -> None:
    # Two waiting clients with the same span id in different traces: the server of the
    # second trace must pair with the second client, whichever sorts first.
    store = _store(sp)
    a = sp.span(trace=1, id=10, parent=1, service="fe", kind="client", end_ms=9)
    b = sp.span(trace=2, id=10, parent=1, service="mobile", kind="client", end_ms=9)
    store.add(sp.batch(a, b))
    s = sp.span(trace=2, id=11, parent=10, service="be", kind="server", end_ms=5)
    [e] = edge_rows(store.add(sp.batch(s)), sp.strings)
    assert (e["client"], e["server"]) == ("mobile", "be")
    assert len(store) == 1  # trace 1's client still waits


@pytest.mark.parametrize(
    ("client_error", "server_error", "failed"),
    [(False, False, False), (True, False, True), (False, True, True), (True, True, True)],
)
def test_edge_failed_when_either_side_errors(sp: Spans, client_error: bool, server_error: bool,
                                             failed: bool) -> None:
    store = _store(sp)
    c, s = _call(sp, client_error=client_error, server_error=server_error)
    [e] = edge_rows(store.add(sp.batch(c, s)), sp.strings)
    assert e["failed"] is failed


def test_producer_and_child_consumer_pair_as_messaging_system(sp: Spans) -> None:
    store = _store(sp)
    p = sp.span(trace=1, id=10, parent=1, service="orders", kind="producer", start_ms=1, end_ms=2)
    c = sp.span(trace=1, id=11, parent=10, service="billing", kind="consumer", start_ms=3, end_ms=7)
    [e] = edge_rows(store.add(sp.batch(c, p)), sp.strings)
    assert (e["client"], e["server"], e["conn"]) == ("orders", "billing", "messaging_system")
    assert e["client_ms"] == pytest.approx(1.0) and e["server_ms"] == pytest.approx(4.0)


def test_consumer_pairs_with_producer_through_a_span_link_in_another_trace(sp: Spans) -> None:
    store = _store(sp)
    p = sp.span(trace=1, id=10, parent=1, service="orders", kind="producer", end_ms=2)
    # The consumer starts its own trace (no parent) and links back to the producer.
    c = sp.span(trace=99, id=50, parent=0, service="billing", kind="consumer", end_ms=8,
                link_trace=1, link_span=10)
    assert len(store.add(sp.batch(p, offset=0))) == 0
    [e] = edge_rows(store.add(sp.batch(c, offset=1)), sp.strings)
    assert (e["client"], e["server"], e["conn"]) == ("orders", "billing", "messaging_system")
    assert len(store) == 0
    assert store.stats.virtual_user == 0  # a linked consumer is not a root "user" call


def test_link_to_another_trace_does_not_pair_with_same_span_id_in_own_trace(sp: Spans) -> None:
    store = _store(sp)
    p = sp.span(trace=99, id=10, parent=1, service="orders", kind="producer", end_ms=2)
    c = sp.span(trace=99, id=50, parent=10, service="billing", kind="consumer", end_ms=8,
                link_trace=1, link_span=10)
    # The link wins over the parent: the consumer waits for trace 1's span 10.
    assert len(store.add(sp.batch(p, c))) == 0


@pytest.mark.parametrize("kind", ["client", "producer"])
def test_database_client_becomes_an_edge_at_once(sp: Spans, kind: str) -> None:
    # As the connector: a client (or producer: it falls through to the client case) span
    # with a database name is complete at once, named by it; the client span's duration
    # is its server latency too.
    store = _store(sp)
    c = sp.span(trace=1, id=10, parent=1, service="be", kind=kind, start_ms=1, end_ms=4,
                db_name="orders", error=True)
    [e] = edge_rows(store.add(sp.batch(c)), sp.strings)
    assert (e["client"], e["server"], e["conn"], e["failed"]) == ("be", "orders", "database", True)
    assert e["client_ms"] == pytest.approx(3.0) and e["server_ms"] == pytest.approx(3.0)
    assert len(store) == 0 and store.stats.database == 1


def test_a_client_without_a_database_name_waits_for_its_server(sp: Spans) -> None:
    # db.system alone (no database_name_attributes value, the decoder's db_name column) is
    # an ordinary client: it pairs, or expires to a virtual node.
    store = _store(sp, ttl_ms=1_000)
    c = sp.span(trace=1, id=10, parent=1, service="be", kind="client", end_ms=4,
                virtual_peer="postgresql")
    assert len(store.add(sp.batch(c))) == 0
    [e] = edge_rows(store.add(sp.batch(_clock(sp, 2_000))), sp.strings)
    assert (e["server"], e["conn"]) == ("postgresql", "virtual_node")


def test_root_server_span_is_a_user_edge_at_once(sp: Spans) -> None:
    store = _store(sp)
    s = sp.span(trace=1, id=10, parent=0, service="fe", kind="server", start_ms=0, end_ms=6)
    [e] = edge_rows(store.add(sp.batch(s)), sp.strings)
    assert (e["client"], e["server"], e["conn"]) == ("user", "fe", "virtual_node")
    assert e["server_ms"] == pytest.approx(6.0) and math.isnan(e["client_ms"])
    assert len(store) == 0 and store.stats.virtual_user == 1


def _clock(sp: Spans, end_ms: float) -> dict:
    """An unrelated INTERNAL span: it only moves the partition's event clock."""
    return sp.span(trace=777, id=777, service="tick", kind="internal", end_ms=end_ms)


def test_unanswered_client_expires_after_ttl_of_event_time_into_virtual_peer(sp: Spans) -> None:
    store = _store(sp)
    c = sp.span(trace=1, id=10, parent=1, service="fe", kind="client", start_ms=500,
                end_ms=1_000, virtual_peer="payments-api")
    assert len(store.add(sp.batch(c))) == 0
    # Exactly ttl of event time later: not yet expired.
    assert len(store.add(sp.batch(_clock(sp, 1_000 + TTL_MS)))) == 0
    assert len(store) == 1
    [e] = edge_rows(store.add(sp.batch(_clock(sp, 1_000 + TTL_MS + 1))), sp.strings)
    assert (e["client"], e["server"], e["conn"]) == ("fe", "payments-api", "virtual_node")
    assert e["client_ms"] == pytest.approx(500.0) and math.isnan(e["server_ms"])
    assert e["time_ns"] == 1_000 * 1_000_000
    assert len(store) == 0
    assert store.stats.expired["client"] == 1 and store.stats.virtual_peer == 1


def test_expiry_follows_event_time_not_the_number_of_batches(sp: Spans) -> None:
    store = _store(sp)
    store.add(sp.batch(sp.span(trace=1, id=10, parent=1, service="fe", kind="client",
                               end_ms=1_000)))
    for _ in range(50):  # many batches, but event time barely moves
        assert len(store.add(sp.batch(_clock(sp, 1_500)))) == 0
    assert len(store) == 1


def test_unanswered_client_without_peer_attribute_goes_to_unknown(sp: Spans) -> None:
    store = _store(sp)
    store.add(sp.batch(sp.span(trace=1, id=10, parent=1, service="fe", kind="client",
                               end_ms=1_000)))
    [e] = edge_rows(store.add(sp.batch(_clock(sp, 5_000))), sp.strings)
    assert (e["client"], e["server"], e["conn"]) == ("fe", "unknown", "virtual_node")


def test_unanswered_producer_counts_as_expired_producer(sp: Spans) -> None:
    store = _store(sp)
    store.add(sp.batch(sp.span(trace=1, id=10, parent=1, service="orders", kind="producer",
                               end_ms=1_000)))
    [e] = edge_rows(store.add(sp.batch(_clock(sp, 5_000))), sp.strings)
    assert (e["client"], e["server"]) == ("orders", "unknown")
    assert store.stats.expired == {"producer": 1}


def test_server_whose_client_never_arrives_expires_without_an_edge(sp: Spans) -> None:
    store = _store(sp)
    s = sp.span(trace=1, id=11, parent=10, service="be", kind="server", end_ms=1_000)
    assert len(store.add(sp.batch(s))) == 0
    assert len(store.add(sp.batch(_clock(sp, 1_000 + TTL_MS)))) == 0
    assert len(store) == 1
    assert len(store.add(sp.batch(_clock(sp, 1_000 + TTL_MS + 1)))) == 0
    assert len(store) == 0
    assert store.stats.expired == {"server": 1}
    assert store.stats.virtual_peer == 0 and store.stats.paired == 0


def test_late_client_after_its_server_expired_does_not_pair(sp: Spans) -> None:
    store = _store(sp)
    c, s = _call(sp)
    store.add(sp.batch(s))
    store.add(sp.batch(_clock(sp, 10_000)))  # server expires
    # The client arrives late: it waits its ttl from when it came, then expires alone.
    assert len(store.add(sp.batch(c))) == 0 and len(store) == 1
    assert len(store.add(sp.batch(_clock(sp, 10_000 + TTL_MS)))) == 0
    [e] = edge_rows(store.add(sp.batch(_clock(sp, 10_000 + TTL_MS + 1))), sp.strings)
    assert (e["client"], e["server"], e["conn"]) == ("fe", "unknown", "virtual_node")


def test_a_late_client_waits_its_ttl_for_a_server_arriving_after_it(sp: Spans) -> None:
    # Both spans of a call arrive long after they ended (a retried export), client first.
    store = _store(sp)
    c, s = _call(sp)
    store.add(sp.batch(_clock(sp, 10_000)))
    assert len(store.add(sp.batch(c))) == 0
    [e] = edge_rows(store.add(sp.batch(s)), sp.strings)
    assert (e["client"], e["server"], e["conn"]) == ("fe", "be", "")


def test_max_items_evicts_oldest_waiting_spans_into_edges(sp: Spans) -> None:
    store = _store(sp, ttl_ms=10**9, max_items=3)
    clients = [sp.span(trace=1, id=10 + i, parent=1, service=f"c{i}", kind="client",
                       end_ms=100 * (i + 1)) for i in range(5)]
    evicted = []
    for c in clients:
        evicted += edge_rows(store.add(sp.batch(c)), sp.strings)
        assert len(store) <= 3
    assert [(e["client"], e["server"], e["conn"]) for e in evicted] == [
        ("c0", "unknown", "virtual_node"), ("c1", "unknown", "virtual_node")]
    assert store.stats.evicted == 2
    # The three newest are still waiting and pair normally.
    servers = [sp.span(trace=1, id=100 + i, parent=10 + i, service="be", kind="server",
                       end_ms=50) for i in (2, 3, 4)]
    paired = edge_rows(store.add(sp.batch(*servers)), sp.strings)
    assert sorted((e["client"], e["conn"]) for e in paired) == [("c2", ""), ("c3", ""), ("c4", "")]


def test_evicted_servers_leave_without_an_edge(sp: Spans) -> None:
    store = _store(sp, ttl_ms=10**9, max_items=2)
    servers = [sp.span(trace=1, id=100 + i, parent=10 + i, service="be", kind="server",
                       end_ms=100 * (i + 1)) for i in range(4)]
    assert len(store.add(sp.batch(*servers))) == 0
    assert len(store) == 2
    assert store.stats.evicted == 2 and store.stats.expired == {"server": 2}


def test_second_server_on_the_same_client_does_not_double_count(sp: Spans) -> None:
    store = _store(sp)
    c, s = _call(sp)
    s2 = sp.span(trace=1, id=12, parent=10, service="be", kind="server", end_ms=6)
    edges = edge_rows(store.add(sp.batch(c, s, s2)), sp.strings)
    assert len(edges) == 1
    # The extra server keeps waiting and later expires without producing an edge.
    assert len(store) == 1
    assert len(store.flush_all()) == 0
    assert store.stats.paired == 1 and store.stats.expired == {"server": 1}


def test_two_servers_waiting_before_the_client_yield_one_edge(sp: Spans) -> None:
    store = _store(sp)
    c, s = _call(sp)
    s2 = sp.span(trace=1, id=12, parent=10, service="be", kind="server", end_ms=6)
    store.add(sp.batch(s, s2))
    assert len(store.add(sp.batch(c))) == 1
    assert len(store.flush_all()) == 0


def test_flush_all_expires_everything_now(sp: Spans) -> None:
    store = _store(sp)
    c = sp.span(trace=1, id=10, parent=1, service="fe", kind="client", end_ms=9,
                virtual_peer="redis")
    s = sp.span(trace=2, id=21, parent=20, service="be", kind="server", end_ms=9)
    store.add(sp.batch(c, s))
    [e] = edge_rows(store.flush_all(), sp.strings)
    assert (e["client"], e["server"]) == ("fe", "redis")
    assert len(store) == 0
    assert store.stats.expired == {"client": 1, "server": 1}


def test_take_stats_resets_counters(sp: Spans) -> None:
    store = _store(sp)
    c, s = _call(sp)
    store.add(sp.batch(c, s))
    assert store.take_stats().paired == 1
    assert store.stats.paired == 0


def test_min_offset_is_lowest_waiting_span_offset(sp: Spans) -> None:
    store = _store(sp)
    assert store.min_offset() is None
    store.add(sp.batch(sp.span(trace=1, id=11, parent=10, service="be", kind="server",
                               end_ms=5), offset=7))
    store.add(sp.batch(sp.span(trace=2, id=20, parent=1, service="fe", kind="client",
                               end_ms=5), offset=9))
    assert store.min_offset() == 7
