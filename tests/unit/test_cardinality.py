"""Bounded state under hostile input: the per-window cardinality limit, the string table, the series."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from prometheus_client import generate_latest

from processor.aggregate import stage1 as stage1_module
from processor.aggregate.runner import LocalRun
from processor.aggregate.stage1 import Record
from processor.config import Config, parse_config
from processor.generate import GroundTruth, ShopGenerator, to_records
from processor.graph.edges import EdgeBatch
from processor.telemetry import ServiceGraphSeries
from processor.windows.cardinality import OVERFLOW, admit
from tests.hostile import distinct_services
from tests.truth_compare import assert_exact

WINDOW_NS = 2_000_000_000
START_NS = 1_767_225_600 * 10**9  # window aligned
PARTITIONS = 3
CONFIG = """
receivers: {{kafka: {{traces: {{topic: spans}}, group_id: g}}}}
processors:
  servicegraph: {{store: {{ttl: 1s, max_items: 100000}}, metrics_cardinality_limit: {series}}}
  windows: {{size: 2s, allowed_lateness: 2s, idle_timeout: 2s, cardinality_limit: {limit}}}
exporters: {{clickhouse: {{endpoint: "chdb://unused"}}}}
service: {{pipelines: {{traces: {{receivers: [kafka], processors: [servicegraph, windows], exporters: [clickhouse]}}}}}}
"""


def _config(limit: int = 2000, series: int = 10_000) -> Config:
    return parse_config(CONFIG.format(limit=limit, series=series), environ={})


def _records(pairs: list[tuple[bytes, bytes]]) -> list[Record]:
    offsets = [0] * PARTITIONS
    out = []
    for key, value in pairs:
        p = zlib.crc32(key) % PARTITIONS
        out.append(Record("spans", p, offsets[p], key, value))
        offsets[p] += 1
    return out


def _run(config: Config) -> LocalRun:
    return LocalRun(config, partitions=PARTITIONS, wall_clock=lambda: START_NS / 1e9 + 3600)


def _sample(run: LocalRun, name: str, **labels: str) -> float:
    value = run.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_admit_keeps_the_first_distinct_ids_in_arrival_order() -> None:
    admitted = np.empty(0, np.int64)
    ids, admitted, folded = admit(admitted, np.array([5, 3, 5, 9, 3], np.int32), limit=2, overflow=1)
    assert ids.tolist() == [5, 3, 5, 1, 3] and admitted.tolist() == [3, 5] and folded == 1
    # Known ids and the overflow entity itself always pass; new ones go to overflow.
    ids, admitted, folded = admit(admitted, np.array([7, 5, 1, 3], np.int32), limit=2, overflow=1)
    assert ids.tolist() == [1, 5, 1, 3] and admitted.tolist() == [3, 5] and folded == 1
    ids, admitted, folded = admit(admitted, np.array([8], np.int32), limit=3, overflow=1)
    assert ids.tolist() == [8] and admitted.tolist() == [3, 5, 8] and folded == 0


def test_a_flood_of_service_names_is_counted_under_the_overflow_entity() -> None:
    limit, n = 50, 6000
    pairs = distinct_services(n, START_NS + WINDOW_NS // 10, WINDOW_NS // 2)  # all in one window
    run = _run(_config(limit=limit, series=100))
    records = _records(pairs)
    for i in range(0, len(records), 500):
        run.feed(records[i:i + 500])
    result = run.finish()
    health = result.health
    named = [r for r in health if r["service"] != OVERFLOW]
    overflow = [r for r in health if r["service"] == OVERFLOW]
    assert len(named) <= PARTITIONS * limit and len(overflow) == 1
    # Every call counted once: the named services' calls and the overflow's add up to all.
    assert sum(r["calls"] for r in health) == n
    assert sum(r["errors"] for r in health) == len(range(0, n, 7))
    assert overflow[0]["calls"] == n - len(named)
    assert _sample(run, "otel_insights_cardinality_overflow_total", what="span") == n - len(named)
    edges = result.edges
    assert sum(r["requests"] for r in edges) == n
    over_edges = [r for r in edges if r["client"] == OVERFLOW]
    assert len(over_edges) == 1 and over_edges[0]["server"] == OVERFLOW
    assert len(edges) <= PARTITIONS * limit + 1
    assert _sample(run, "otel_insights_cardinality_overflow_total", what="edge") == over_edges[0]["requests"]
    # The service-graph series are capped too; the overflow series holds the rest, exactly.
    series = run.metrics.service_graph
    assert len(series) <= 101
    text = generate_latest(run.metrics.registry).decode()
    total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("traces_service_graph_request_total{"))
    assert total == n


def test_below_the_limit_nothing_overflows() -> None:
    pairs = distinct_services(300, START_NS + WINDOW_NS // 10, WINDOW_NS // 2)
    run = _run(_config(limit=300))
    run.feed(_records(pairs))
    result = run.finish()
    assert len(result.health) == 300 and OVERFLOW not in {r["service"] for r in result.health}
    assert _sample(run, "otel_insights_cardinality_overflow_total", what="span") == 0


def test_the_string_table_is_compacted_and_the_totals_stay_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shop traffic mixed with a stream of one-off service names: the string table stays
    bounded (it forgets names no state holds any more), and compaction in the middle of
    open windows and waiting spans changes no total."""
    monkeypatch.setattr(stage1_module, "COMPACT_STRINGS_AT", 2000)
    traces = list(ShopGenerator(seed=3, rate=60, start_ns=START_NS).traces(30))
    truth = GroundTruth(WINDOW_NS)
    truth.add_all(traces)
    junk = distinct_services(12_000, START_NS, 30 * 10**9, errors_every=10**9, prefix="junk")
    shop = to_records(traces, "otlp_proto")
    # Interleave in time order so windows keep closing while the junk flows.
    mixed = sorted(shop + junk, key=lambda kv: _end_ns(kv[1]))
    run = _run(_config(limit=5000))
    sizes = []
    records = _records(mixed)
    for i in range(0, len(records), 400):
        run.feed(records[i:i + 400])
        sizes.append(len(run.stage1.strings))
    result = run.finish()
    junk_rows = [r for r in result.health if r["service"].startswith("junk-")]
    assert sum(r["calls"] for r in junk_rows) == len(junk)
    shop_health = [r for r in result.health if not r["service"].startswith("junk-")]
    shop_edges = [r for r in result.edges if not r["server"].startswith("junk-")]
    assert_exact(truth, shop_health, shop_edges)
    # Without compaction the table would hold every junk name (12,000 and more).
    assert max(sizes) < 6000, max(sizes)


def test_compaction_with_dimensions_keeps_every_edge_and_its_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """With `dimensions` an edge's id numbers its label values too (processor.graph.EdgeIds):
    compaction renumbers the edges still held and forgets the rest, and the rows and series
    come out as from a run that never compacts. service.name as a dimension puts every junk
    name in an edge's labels."""
    traces = list(ShopGenerator(seed=5, rate=60, start_ns=START_NS).traces(20))
    junk = distinct_services(6000, START_NS, 20 * 10**9, errors_every=10**9, prefix="junk")
    mixed = sorted(to_records(traces, "otlp_proto") + junk, key=lambda kv: _end_ns(kv[1]))
    records = _records(mixed)
    text = CONFIG.format(limit=5000, series=100_000).replace(
        "metrics_cardinality_limit:", "dimensions: [db.system, service.name], metrics_cardinality_limit:")

    def run_with(compact_at: int) -> tuple[LocalRun, list[int]]:
        monkeypatch.setattr(stage1_module, "COMPACT_STRINGS_AT", compact_at)
        run = _run(parse_config(text, environ={}))
        held = []
        for i in range(0, len(records), 400):
            run.feed(records[i:i + 400])
            held.append(len(run.stage1.edge_ids._keys))
        return run, held

    never, never_held = run_with(10**9)
    compacted, held = run_with(1000)
    expected, result = never.finish(), compacted.finish()

    def rows(edges: list[dict]) -> list[tuple]:
        return sorted((r["client"], r["server"], r["connection_type"], r["window_start"],
                       tuple(sorted(r["dimensions"].items())), r["requests"], r["failed"]) for r in edges)

    assert rows(result.edges) == rows(expected.edges)
    assert {r["dimensions"].get("server_service.name", "") for r in result.edges} >= {"frontend", "junk-000042"}
    assert any("client_db.system" in r["dimensions"] for r in result.edges)
    counts = [{(s.name, tuple(sorted(s.labels.items()))): s.value for m in run.metrics.registry.collect()
               for s in m.samples if s.name == "traces_service_graph_request_total"} for run in (never, compacted)]
    assert counts[0] == counts[1] and len(counts[0]) > 6000
    # The edge table forgets what no state holds: without compaction it has every junk edge.
    assert max(never_held) > 6000 and max(held) < 3000, (max(never_held), max(held))


def _end_ns(value: bytes) -> int:
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    data = TracesData.FromString(value)
    return max(s.end_time_unix_nano for rs in data.resource_spans for ss in rs.scope_spans for s in ss.spans)


def _series(server: str, failed: bool = False) -> tuple[tuple[list, np.ndarray], EdgeBatch]:
    """One edge a -> ``server`` and the series it counts in."""
    labels = (("client", "a"), ("connection_type", ""), ("failed", "true" if failed else "false"),
              ("server", server))
    z = np.zeros(1, np.int64)
    edge = EdgeBatch(client=np.zeros(1, np.int32), server=np.zeros(1, np.int32), conn=np.zeros(1, np.int8),
                     failed=np.array([failed]), client_ms=np.array([20.0]), server_ms=np.array([10.0]),
                     time_ns=z, client_end_ns=z, server_end_ns=z, hold_offset=z, offset=z,
                     client_dims=np.zeros((1, 0), np.int32), server_dims=np.zeros((1, 0), np.int32))
    return ([labels], np.array([0])), edge


def test_series_expire_and_are_capped() -> None:
    now = [0.0]
    s = ServiceGraphSeries(expiration_s=60, max_series=2, clock=lambda: now[0])
    assert s.observe(*_series("b")) == 0
    assert s.observe(*_series("c")) == 0
    assert s.observe(*_series("d")) == 1  # a third series: into the overflow one
    assert len(s) == 3 and s.overflow in s._series
    assert {v for _, v in s.overflow} == {OVERFLOW}
    now[0] = 30.0
    s.observe(*_series("b"))  # keeps a->b alive
    now[0] = 75.0
    names = {m.samples[0].labels["server"] for m in list(s.collect())[:1] if m.samples}
    assert names == {"b"}  # a->c and the overflow series were not updated for 60 s
    assert len(s) == 1
    s.observe(*_series("c"))  # room again: a->c comes back with fresh counts
    assert len(s) == 2 and s._series[_series("c")[0][0][0]][0] == 1


def test_series_labels_are_any_set_of_names() -> None:
    """So more labels (the connector's `failed`, dimensions, virtual_node) only widen the sets."""
    s = ServiceGraphSeries()
    ([labels], inverse), edge = _series("b", failed=True)
    s.observe(([(*labels, ("client_deployment_environment", "prod"))], inverse), edge)
    text = "".join(str(m.samples) for m in s.collect())
    assert "'failed': 'true'" in text and "'client_deployment_environment': 'prod'" in text
