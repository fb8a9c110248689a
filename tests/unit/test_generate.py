"""Synthetic shop traffic: structure of the emitted spans, the ground truth oracle, faults, output."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from processor.errors import ConfigError
from processor.generate import (
    FaultSpec,
    GeneratedTrace,
    GroundTruth,
    ShopGenerator,
    paced,
    to_records,
)
from processor.generate.faults import FaultIndex
from processor.generate.topology import check_topology

Span = trace_pb2.Span
SERVER, CLIENT, PRODUCER, CONSUMER = (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT,
                                      Span.SPAN_KIND_PRODUCER, Span.SPAN_KIND_CONSUMER)
ERROR = trace_pb2.Status.STATUS_CODE_ERROR
S = 1_000_000_000
T0 = 1_700_000_000 * S
W = 10 * S  # window
FAULT_START, FAULT_END = T0 + 20 * S, T0 + 40 * S
INSIDE, OUTSIDE = (T0 + 20 * S, T0 + 30 * S), (T0, T0 + 10 * S, T0 + 50 * S)

FAULTS = [
    FaultSpec("latency_shift", "payment", FAULT_START, FAULT_END, 3.0),
    FaultSpec("error_burst", "email", FAULT_START, FAULT_END, 0.5),
    FaultSpec("traffic_drop", "ad", FAULT_START, FAULT_END, 0.8),
    FaultSpec("edge_failure", "frontend->cart", FAULT_START, FAULT_END, 1.0),
    FaultSpec("edge_failure", "checkout->accounting", FAULT_START, FAULT_END, 1.0),
]


@pytest.fixture(scope="module")
def plain() -> list[GeneratedTrace]:
    return list(ShopGenerator(seed=11, rate=150.0, start_ns=T0).traces(20))


@pytest.fixture(scope="module")
def faulted() -> list[GeneratedTrace]:
    # Faults on independent targets (none of them is a critical call of another), so each
    # can be checked on its own; all active in [20 s, 40 s) of a 60 s run.
    return list(ShopGenerator(seed=5, rate=200.0, start_ns=T0, faults=FAULTS).traces(60))


def spans_of(tr: GeneratedTrace) -> dict[bytes, tuple[str, Span]]:
    out = {}
    for rs in tr.data.resource_spans:
        (service,) = [kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name"]
        for ss in rs.scope_spans:
            for s in ss.spans:
                out[s.span_id] = (service, s)
    return out


def attrs(span: Span) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in span.attributes}


def walk_spans(traces: list[GeneratedTrace], window_ns: int) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """The documented counting rules, applied to the emitted spans (not the generator's records)."""
    services: dict[Any, Any] = defaultdict(lambda: {"calls": 0, "errors": 0, "latencies_ms": []})
    edges: dict[Any, Any] = defaultdict(lambda: {"requests": 0, "failed": 0, "server_latencies_ms": [],
                                                 "client_latencies_ms": []})

    def win(t: int) -> int:
        return t - t % window_ns

    for tr in traces:
        spans = spans_of(tr)
        for service, s in spans.values():
            err = s.status.code == ERROR
            ms = (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6
            root = not s.parent_span_id
            if s.kind in (SERVER, CONSUMER) or root:
                row = services[(service, win(s.end_time_unix_nano))]
                row["calls"] += 1
                row["errors"] += err
                row["latencies_ms"].append(ms)
            if s.kind in (SERVER, CONSUMER) and root:
                e = edges[("user", service, "virtual_node", win(s.end_time_unix_nano))]
                e["requests"] += 1
                e["failed"] += err
                e["server_latencies_ms"].append(ms)
            elif s.kind in (SERVER, CONSUMER):
                p_service, p = spans[s.parent_span_id]
                ctype = "messaging_system" if p.kind == PRODUCER or s.kind == CONSUMER else ""
                e = edges[(p_service, service, ctype, win(p.end_time_unix_nano))]
                e["requests"] += 1
                e["failed"] += err or p.status.code == ERROR
                e["server_latencies_ms"].append(ms)
                e["client_latencies_ms"].append((p.end_time_unix_nano - p.start_time_unix_nano) / 1e6)
            a = attrs(s)
            if s.kind in (CLIENT, PRODUCER) and a.get("db.name"):  # database_name_attributes
                e = edges[(service, a["db.name"], "database", win(s.end_time_unix_nano))]
                e["requests"] += 1
                e["failed"] += err
                e["client_latencies_ms"].append(ms)
                e["server_latencies_ms"].append(ms)  # the connector copies the client side
    return dict(services), dict(edges)


def normalised(d: dict[Any, Any]) -> dict[Any, Any]:
    return {k: {f: sorted(v) if isinstance(v, list) else v for f, v in row.items()} for k, row in d.items()}


def test_topology_is_closed() -> None:
    check_topology()


def test_same_seed_same_bytes_and_records() -> None:
    a = list(ShopGenerator(3, 50.0, T0, FAULTS[:2]).traces(5))
    b = list(ShopGenerator(3, 50.0, T0, FAULTS[:2]).traces(5))
    c = list(ShopGenerator(4, 50.0, T0, FAULTS[:2]).traces(5))
    assert [t.data.SerializeToString() for t in a] == [t.data.SerializeToString() for t in b]
    assert [t.calls for t in a] == [t.calls for t in b]
    assert [t.trace_id for t in a] != [t.trace_id for t in c]
    gen = ShopGenerator(3, 50.0, T0)
    assert [t.trace_id for t in gen.traces(5)] == [t.trace_id for t in gen.traces(5)]


def test_ids_grouping_and_roots(plain: list[GeneratedTrace]) -> None:
    for tr in plain:
        assert len(tr.trace_id) == 16 and tr.trace_id != bytes(16)
        services = [rs.resource.attributes[0].value.string_value for rs in tr.data.resource_spans]
        assert len(services) == len(set(services))  # one ResourceSpans per service
        assert all(len(rs.scope_spans) == 1 for rs in tr.data.resource_spans)
        spans = spans_of(tr)
        assert len(spans) == tr.span_count  # span ids unique within the trace
        roots = [(svc, s) for svc, s in spans.values() if not s.parent_span_id]
        assert [(svc, s.kind) for svc, s in roots] == [("frontend", SERVER)]
        assert roots[0][1].start_time_unix_nano == tr.start_ns
        for _svc, s in spans.values():
            assert s.trace_id == tr.trace_id
            assert len(s.span_id) == 8 and s.span_id != bytes(8)
            assert not s.parent_span_id or s.parent_span_id in spans
        assert tr.end_ns == max(s.end_time_unix_nano for _, s in spans.values())


def test_calls_nest_in_time(plain: list[GeneratedTrace]) -> None:
    paired_clients = 0
    for tr in plain:
        spans = spans_of(tr)
        children = {s.parent_span_id for _, s in spans.values()}
        for service, s in spans.values():
            assert s.start_time_unix_nano < s.end_time_unix_nano
            if not s.parent_span_id:
                continue
            p_service, p = spans[s.parent_span_id]
            if s.kind == SERVER:
                assert p.kind == CLIENT and p_service != service
                assert p.start_time_unix_nano < s.start_time_unix_nano
                assert s.end_time_unix_nano < p.end_time_unix_nano
            elif s.kind == CONSUMER:
                assert p.kind == PRODUCER and (p_service, service) == ("checkout", "accounting")
                assert s.start_time_unix_nano > p.end_time_unix_nano  # asynchronous
            else:  # a client or producer span sits inside its caller's server span
                assert p.kind == SERVER and p_service == service
                assert p.start_time_unix_nano <= s.start_time_unix_nano
                assert s.end_time_unix_nano <= p.end_time_unix_nano
            if s.kind in (CLIENT, PRODUCER) and "db.system" not in attrs(s):
                assert s.span_id in children  # every non-database client call has its server
                paired_clients += 1
    assert paired_clients > 1000


def test_server_duration_is_own_work_plus_sequential_calls(plain: list[GeneratedTrace]) -> None:
    for tr in plain[:300]:
        spans = spans_of(tr)
        for _svc, s in spans.values():
            if s.kind != SERVER:
                continue
            calls = sorted((c.start_time_unix_nano, c.end_time_unix_nano) for _, c in spans.values()
                           if c.parent_span_id == s.span_id)
            for (_, end), (start, _) in zip(calls, calls[1:], strict=False):
                assert end == start  # back to back: sequential, no overlap


def test_database_and_kafka_edges_are_emitted(plain: list[GeneratedTrace]) -> None:
    seen: dict[str, dict[str, str]] = {}
    for tr in plain:
        for service, s in spans_of(tr).values():
            a = attrs(s)
            if "db.system" in a:
                seen[f"{service}:{a['db.system']}"] = a
            if s.kind in (PRODUCER, CONSUMER):
                seen[f"{service}:{s.kind}"] = a
            if "peer.service" in a and s.kind == CLIENT and "db.system" not in a:
                seen[f"peer:{service}->{a['peer.service']}"] = a
    assert seen["cart:redis"]["db.name"] == "redis-cart"
    assert seen["product-catalog:postgresql"] == {
        "db.system": "postgresql", "db.name": "postgres", "peer.service": "pg-primary"}
    for key in (f"checkout:{PRODUCER}", f"accounting:{CONSUMER}"):
        assert seen[key]["messaging.system"] == "kafka"
        assert seen[key]["messaging.destination.name"] == "orders"
    assert "peer:frontend->ad" in seen
    edges = GroundTruth(W)
    edges.add_all(plain)
    kinds = {(c, s, t) for c, s, t, _ in edges.edge_windows()}
    assert {("cart", "redis-cart", "database"), ("product-catalog", "postgres", "database"),
            ("checkout", "accounting", "messaging_system"), ("user", "frontend", "virtual_node"),
            ("recommendation", "product-catalog", "")} <= kinds


@pytest.mark.parametrize("which", ["plain", "faulted"])
def test_ground_truth_equals_independent_span_count(which: str, request: pytest.FixtureRequest) -> None:
    traces = request.getfixturevalue(which)
    truth = GroundTruth(W)
    truth.add_all(traces)
    services, edges = walk_spans(traces, W)
    assert normalised(truth.service_windows()) == normalised(services)
    assert normalised(truth.edge_windows()) == normalised(edges)
    assert truth.traces == len(traces)
    # Enough of every outcome that the comparison means something.
    assert sum(v["errors"] for v in services.values()) > 100
    assert sum(v["failed"] for k, v in edges.items() if k[2] == "database") > 0
    # Database edges carry the client span's latency on both sides (as the connector
    # records them), root edges server latency only.
    for (_c, _s, ctype, _w), v in truth.edge_windows().items():
        if ctype == "database":
            assert v["server_latencies_ms"] == v["client_latencies_ms"] != []
        assert (v["client_latencies_ms"] == []) == (ctype == "virtual_node")


def _windows(truth: GroundTruth, entity: tuple[str, ...], starts: tuple[int, ...]) -> list[dict[str, Any]]:
    table: dict[Any, Any] = truth.service_windows() if len(entity) == 1 else truth.edge_windows()
    return [table[(*entity, w)] for w in starts]


def test_latency_shift_multiplies_target_latency_inside_interval_only(faulted: list[GeneratedTrace]) -> None:
    truth = GroundTruth(W)
    truth.add_all(faulted)
    p50 = [float(np.median(r["latencies_ms"])) for r in _windows(truth, ("payment",), (*INSIDE, *OUTSIDE))]
    inside, outside = p50[:2], p50[2:]
    for v in inside:
        assert 2.5 < v / np.median(outside) < 3.5
    assert max(outside) / min(outside) < 1.25
    # The shift does not leak into an unrelated service.
    cur = [float(np.median(r["latencies_ms"])) for r in _windows(truth, ("currency",), (*INSIDE, *OUTSIDE))]
    assert max(cur) / min(cur) < 1.25


def test_error_burst_raises_target_error_ratio(faulted: list[GeneratedTrace]) -> None:
    truth = GroundTruth(W)
    truth.add_all(faulted)
    rows = _windows(truth, ("email",), (*INSIDE, *OUTSIDE))
    ratios = [r["errors"] / r["calls"] for r in rows]
    assert all(0.4 < r < 0.6 for r in ratios[:2])
    assert all(r < 0.05 for r in ratios[2:])
    # email is not critical for checkout, so checkout's error ratio stays low.
    checkout = _windows(truth, ("checkout",), INSIDE)
    assert all(r["errors"] / r["calls"] < 0.1 for r in checkout)


def test_traffic_drop_lowers_calls_into_target(faulted: list[GeneratedTrace]) -> None:
    truth = GroundTruth(W)
    truth.add_all(faulted)
    ad = [r["calls"] for r in _windows(truth, ("ad",), (*INSIDE, *OUTSIDE))]
    edge = [r["requests"] for r in _windows(truth, ("frontend", "ad", ""), (*INSIDE, *OUTSIDE))]
    assert ad == edge  # the client span is dropped along with the server span
    baseline = float(np.mean(ad[2:]))
    assert all(0.1 < n / baseline < 0.3 for n in ad[:2])
    assert all(0.85 < n / baseline < 1.15 for n in ad[2:])


def test_traffic_drop_on_frontend_drops_whole_traces() -> None:
    fault = FaultSpec("traffic_drop", "frontend", T0 + 10 * S, T0 + 20 * S, 0.5)
    traces = list(ShopGenerator(8, 100.0, T0, [fault]).traces(20))
    before = sum(t.start_ns < T0 + 10 * S for t in traces)
    during = len(traces) - before
    assert 0.4 < during / before < 0.6


def test_edge_failure_fails_that_edge_only(faulted: list[GeneratedTrace]) -> None:
    truth = GroundTruth(W)
    truth.add_all(faulted)
    for edge in (("frontend", "cart", ""), ("checkout", "accounting", "messaging_system")):
        for r in _windows(truth, edge, INSIDE):
            assert r["requests"] > 10 and r["failed"] == r["requests"]
        for r in _windows(truth, edge, OUTSIDE):
            assert r["failed"] / r["requests"] < 0.05
    for r in _windows(truth, ("checkout", "cart", ""), INSIDE):
        assert r["failed"] / r["requests"] < 0.05
    # Both sides are ERROR on the failed edge: cart's server errors match the failed calls.
    for trace in faulted:
        for c in trace.calls:
            if (c.client, c.server) == ("frontend", "cart") and FAULT_START <= c.client_start_ns < FAULT_END:
                assert c.client_error and c.server_error


def test_fault_labels_and_validation() -> None:
    gen = ShopGenerator(1, 10.0, T0, FAULTS)
    assert gen.labels()[0] == {"kind": "latency_shift", "target": "payment", "start_ns": FAULT_START,
                               "end_ns": FAULT_END, "magnitude": 3.0}
    assert FAULTS[0].windows(W) == [T0 + 20 * S, T0 + 30 * S]
    assert FaultSpec.from_dict({"kind": "error_burst", "target": "a->b", "start_s": 5, "duration_s": 2,
                                "magnitude": 0.3}, base_ns=T0) == FaultSpec(
        "error_burst", "a->b", T0 + 5 * S, T0 + 7 * S, 0.3)
    for bad in (dict(kind="slow"), dict(magnitude=1.5, kind="error_burst"),
                dict(kind="edge_failure"), dict(end_ns=T0)):
        args = {"kind": "latency_shift", "target": "payment", "start_ns": T0, "end_ns": T0 + S,
                "magnitude": 1.0, **bad}
        with pytest.raises(ConfigError):
            FaultSpec(**args)  # type: ignore[arg-type]


def test_overlapping_faults_combine() -> None:
    a, b = T0, T0 + S
    idx = FaultIndex([FaultSpec("latency_shift", "x", a, b, 2.0), FaultSpec("latency_shift", "y->x", a, b, 3.0),
                      FaultSpec("error_burst", "x", a, b, 0.2), FaultSpec("error_burst", "y->x", a, b, 0.4),
                      FaultSpec("traffic_drop", "x", a, b, 0.5), FaultSpec("traffic_drop", "y->x", a, b, 0.5)])
    assert idx.latency_factor("x", "y->x", a) == 6.0
    assert idx.latency_factor("x", "z->x", a) == 2.0 and idx.latency_factor("x", "y->x", b) == 1.0
    assert idx.error_p("x", "y->x", a, 0.01) == 0.4 and idx.error_p("x", "y->x", b, 0.01) == 0.01
    assert idx.drop_p("x", "y->x", a) == 0.75


def test_arrivals_follow_rate_and_diurnal_shape() -> None:
    flat = list(ShopGenerator(2, 100.0, T0).traces(50))
    assert abs(len(flat) - 5000) < 5 * np.sqrt(5000)
    starts = [t.start_ns for t in flat]
    assert starts == sorted(starts) and T0 <= starts[0] and starts[-1] < T0 + 50 * S
    wave = list(ShopGenerator(2, 100.0, T0, diurnal_amplitude=0.8, diurnal_period_s=40).traces(40))
    first = sum(t.start_ns < T0 + 20 * S for t in wave)  # sine > 0: busy half
    second = len(wave) - first
    assert first / second > 2.5  # expected (1 + 0.8 * 2/pi) / (1 - 0.8 * 2/pi) ~ 3.1

    def per_second(gen: ShopGenerator) -> np.ndarray:
        return np.bincount([(t.start_ns - T0) // S for t in gen.traces(30)], minlength=30)

    noisy = per_second(ShopGenerator(2, 100.0, T0, rate_noise=0.5, noise_period_s=1))
    assert (noisy == per_second(ShopGenerator(2, 100.0, T0, rate_noise=0.5, noise_period_s=1))).all()
    # Poisson counts have variance ~ mean; the rate noise adds ~ (100 * 0.5)^2 on top.
    assert noisy.var() > 5 * noisy.mean()
    assert per_second(ShopGenerator(2, 100.0, T0)).var() < 2 * 100


def test_starts_at_wall_clock_now() -> None:
    now = time.time_ns()
    traces = list(ShopGenerator(1, 50.0, now).traces(1))
    assert traces and all(now <= t.start_ns < now + S for t in traces)


def test_to_records_keys_by_trace_id_hex(plain: list[GeneratedTrace]) -> None:
    records = to_records(plain[:50], "otlp_proto")
    for (key, value), tr in zip(records, plain[:50], strict=True):
        assert key == tr.trace_id.hex().encode() and len(key) == 32 and key == key.lower()
        assert trace_pb2.TracesData.FromString(value) == tr.data
    with pytest.raises(ConfigError):
        to_records(plain[:1], "zipkin")


def test_to_records_json() -> None:
    tr = next(iter(ShopGenerator(1, 10.0, T0).traces(5)))
    [(key, value)] = to_records([tr], "otlp_json")
    doc = json.loads(value)
    assert key == tr.trace_id.hex().encode()
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == tr.trace_id.hex()  # OTLP/JSON ids are hex, not base64


def test_paced_releases_in_end_order_at_mapped_wall_time(plain: list[GeneratedTrace]) -> None:
    clock = {"now": 5 * S}
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock["now"] += int(seconds * 1e9)

    batch = plain[:200]
    out = []
    for tr in paced(batch, speed=2.0, origin_ns=T0, now_ns=lambda: clock["now"], sleep=sleep):
        out.append(tr)
        expected = 5 * S + (tr.end_ns - T0) / 2.0
        assert abs(clock["now"] - expected) < 2  # released when its end maps to "now"
    assert sorted(t.trace_id for t in out) == sorted(t.trace_id for t in batch)
    assert [t.end_ns for t in out] == sorted(t.end_ns for t in batch)
    assert len(slept) > 100
