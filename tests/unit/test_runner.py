"""Stages 1 and 2 in process (LocalRun): exact totals against the generator's ground truth,
with keyed and unkeyed input, and after a crash that replays from the committed offsets."""

from __future__ import annotations

import zlib

import pytest

from processor.aggregate.runner import LocalRun
from processor.aggregate.stage1 import Record
from processor.config import Config, parse_config
from processor.generate import GroundTruth, ShopGenerator, to_records
from processor.storage.window_store import MemoryStore
from tests.truth_compare import assert_exact

WINDOW_NS = 2_000_000_000
START_NS = 1_767_225_600 * 10**9  # window aligned
PARTITIONS = 3
CONFIG = """
receivers:
  kafka: {{traces: {{topics: [spans], encoding: {encoding}}}, group_id: g, rekey: {rekey}}}
processors:
  servicegraph: {{store: {{ttl: 1s, max_items: 100000}}}}
  windows: {{size: 2s, allowed_lateness: 2s, idle_timeout: 2s}}
exporters: {{clickhouse: {{endpoint: "chdb://unused"}}}}
service: {{pipelines: {{traces: {{receivers: [kafka], processors: [servicegraph, windows], exporters: [clickhouse]}}}}}}
"""


def _now() -> float:
    """The wall clock of these runs: an hour after the traffic starts (event time is bounded by it)."""
    return START_NS / 1e9 + 3600


def _config(encoding: str = "otlp_proto", rekey: str = "auto") -> Config:
    return parse_config(CONFIG.format(encoding=encoding, rekey=rekey), environ={})


def _traffic(seed: int, seconds: float = 20, encoding: str = "otlp_proto", keyed: bool = True,
             per_partition: list[GroundTruth] | None = None, rate: float = 80) -> tuple[list[Record], GroundTruth]:
    """Shop traffic as input records (a trace per record, partitioned by its key as a keyed
    producer would; unkeyed records are spread round-robin), and its ground truth (and, in
    ``per_partition``, each partition's own)."""
    traces = list(ShopGenerator(seed=seed, rate=rate, start_ns=START_NS).traces(seconds))
    truth = GroundTruth(WINDOW_NS)
    truth.add_all(traces)
    records, offsets = [], [0] * PARTITIONS
    for i, (trace, (key, value)) in enumerate(zip(traces, to_records(traces, encoding), strict=True)):
        p = zlib.crc32(key) % PARTITIONS if keyed else i % PARTITIONS
        records.append(Record("spans", p, offsets[p], key if keyed else None, value))
        offsets[p] += 1
        if per_partition is not None:
            per_partition[p].add(trace)
    return records, truth


def _feed(run: LocalRun, records: list[Record], batch: int = 150) -> None:
    for i in range(0, len(records), batch):
        run.feed(records[i:i + batch])


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_keyed_traffic_gives_the_ground_truth(encoding: str) -> None:
    records, truth = _traffic(seed=11, encoding=encoding)
    run = LocalRun(_config(encoding), partitions=PARTITIONS, wall_clock=_now)
    _feed(run, records)
    result = run.finish()
    assert_exact(truth, result.health, result.edges)
    assert result.dead_letters == []
    registry = result.metrics.registry
    assert registry.get_sample_value("otel_insights_spans_total") == sum(
        t.span_count for t in ShopGenerator(seed=11, rate=80, start_ns=START_NS).traces(20))
    assert registry.get_sample_value("otel_insights_rekeyed_records_total") == 0


def test_unkeyed_traffic_is_rekeyed_by_trace_and_gives_the_ground_truth() -> None:
    records, truth = _traffic(seed=12, keyed=False)
    run = LocalRun(_config(), partitions=PARTITIONS, wall_clock=_now)
    _feed(run, records)
    result = run.finish()
    assert_exact(truth, result.health, result.edges)
    rekeyed = result.metrics.registry.get_sample_value("otel_insights_rekeyed_records_total")
    assert rekeyed == len(records)


def test_undecodable_records_are_dead_letters_and_the_rest_is_exact() -> None:
    records, truth = _traffic(seed=13, seconds=8)
    bad = [Record("spans", 0, 10_000 + i, f"{i:032x}".encode(), v)
           for i, v in enumerate([b"\xff\x00not protobuf", b"\x0a\x05short"])]
    run = LocalRun(_config(), partitions=PARTITIONS, wall_clock=_now)
    run.feed(records[:50] + bad)
    _feed(run, records[50:])
    result = run.finish()
    assert [(r.offset, r.value) for r, _ in result.dead_letters] == [(b.offset, b.value) for b in bad]
    assert_exact(truth, result.health, result.edges)


def test_a_keyed_json_record_nested_too_deeply_is_a_dead_letter() -> None:
    records, truth = _traffic(seed=17, seconds=6, encoding="otlp_json")
    nested = Record("spans", 0, 10_000, f"{7:032x}".encode(), b"[" * 100_000)
    run = LocalRun(_config("otlp_json"), partitions=PARTITIONS, wall_clock=_now)
    run.feed(records[:40] + [nested])
    _feed(run, records[40:])
    result = run.finish()
    assert [(r.offset, e) for r, e in result.dead_letters] == [(10_000, "not valid OTLP/JSON: nested too deeply")]
    assert_exact(truth, result.health, result.edges)


def test_an_unkeyed_record_that_cannot_be_parsed_for_rekeying_is_a_dead_letter() -> None:
    records, truth = _traffic(seed=16, seconds=6, encoding="otlp_json", keyed=False)
    nested = Record("spans", 1, 10_000, None, b"[" * 100_000)  # JSON nested past the parser's limit
    run = LocalRun(_config("otlp_json"), partitions=PARTITIONS, wall_clock=_now)
    run.feed(records[:40] + [nested])
    _feed(run, records[40:])
    result = run.finish()
    # Decoded before it is re-keyed, so it fails (and says why) as a keyed record would.
    assert [(r.offset, e) for r, e in result.dead_letters] == [(10_000, "not valid OTLP/JSON: nested too deeply")]
    assert_exact(truth, result.health, result.edges)


@pytest.mark.parametrize("crash_after", [300, 700, 1100])
def test_a_crash_replayed_from_the_committed_offsets_gives_the_ground_truth(crash_after: int) -> None:
    records, truth = _traffic(seed=14, seconds=24)
    assert crash_after < len(records)
    cfg, store = _config(rekey="never"), MemoryStore()
    first = LocalRun(cfg, partitions=PARTITIONS, store=store, wall_clock=_now)
    _feed(first, records[:crash_after])
    first.advance(0.5)  # a timer tick, as the worker's
    committed = dict(first.safe_offsets)
    uncommitted = first.uncommitted_partials()
    # What survives the crash: the store (partials, finals, watermarks), the committed input
    # offsets and the partials records not yet committed; the processes' memory is gone.
    assert any(committed[("spans", p)] < max(r.offset for r in records[:crash_after] if r.partition == p) + 1
               for p in range(PARTITIONS))  # some records really are replayed
    second = LocalRun(cfg, partitions=PARTITIONS, store=store, wall_clock=_now)
    second.redeliver(uncommitted)
    replay = [r for r in records if r.offset >= committed.get((r.topic, r.partition), 0)]
    _feed(second, replay)
    result = second.finish()
    assert_exact(truth, result.health, result.edges)


def test_a_crash_while_stage_2_waits_keeps_the_keys_only_the_committed_partition_had() -> None:
    """Partition 0 runs ahead and commits past windows stage 2 cannot finalise yet (the other
    partitions have sent nothing): the keys of entities only partition 0 saw in those windows
    exist only as uncommitted partials records, and the restart must get them again."""
    per_partition = [GroundTruth(WINDOW_NS) for _ in range(PARTITIONS)]
    records, truth = _traffic(seed=15, seconds=24, per_partition=per_partition, rate=10)
    cfg, store = _config(rekey="never"), MemoryStore()
    first = LocalRun(cfg, partitions=PARTITIONS, store=store, wall_clock=_now)
    ahead = [r for r in records if r.partition == 0]
    _feed(first, ahead)
    committed = dict(first.safe_offsets)
    closed_ns = first.stage1.aggregators[("spans", 0)].watermark_ms * 1_000_000  # emitted before this
    only_p0 = [k for k in per_partition[0].edge_windows() if k[3] + WINDOW_NS <= closed_ns
               and all(k not in other.edge_windows() for other in per_partition[1:])]
    assert only_p0, "the traffic must have an edge-window only partition 0 saw"
    second = LocalRun(cfg, partitions=PARTITIONS, store=store, wall_clock=_now)
    second.redeliver(first.uncommitted_partials())
    _feed(second, [r for r in records if r.offset >= committed.get((r.topic, r.partition), 0)])
    result = second.finish()
    assert_exact(truth, result.health, result.edges)


def _without_dimensions(edges: list[dict]) -> list[dict]:
    """Edge rows as the ground truth (no labels) keys them: in the shop traffic each edge's
    spans always carry the same attributes, so an edge has one label set per window."""
    keys = {(r["client"], r["server"], r["connection_type"], r["window_start"]) for r in edges}
    assert len(keys) == len(edges)
    return edges


def test_a_crash_with_dimensions_replaces_its_partials_and_is_exact() -> None:
    """With dimensions an edge's identity includes its labels; a replay after a crash rewrites
    the same keyed partial rows, so the result equals an uninterrupted run, label by label."""
    text = CONFIG.format(encoding="otlp_proto", rekey="never").replace(
        "servicegraph: {store: {ttl: 1s, max_items: 100000}}",
        "servicegraph: {store: {ttl: 1s, max_items: 100000}, "
        "dimensions: [peer.service, db.system, messaging.system]}")
    cfg = parse_config(text, environ={})
    records, truth = _traffic(seed=16, seconds=24)
    whole = LocalRun(cfg, partitions=PARTITIONS, store=MemoryStore(), wall_clock=_now)
    _feed(whole, records)
    uninterrupted = whole.finish()
    labelled = {tuple(sorted(r["dimensions"])) for r in uninterrupted.edges}
    assert {("client_db.system",), ("client_messaging.system", "server_messaging.system"),
            ("client_peer.service",)} <= labelled
    store = MemoryStore()
    first = LocalRun(cfg, partitions=PARTITIONS, store=store, wall_clock=_now)
    _feed(first, records[:700])
    first.advance(0.5)
    committed, uncommitted = dict(first.safe_offsets), first.uncommitted_partials()
    second = LocalRun(cfg, partitions=PARTITIONS, store=store, wall_clock=_now)
    second.redeliver(uncommitted)
    _feed(second, [r for r in records if r.offset >= committed.get((r.topic, r.partition), 0)])
    result = second.finish()

    def rows(edges: list[dict]) -> list[tuple]:
        return sorted((r["client"], r["server"], r["connection_type"], r["window_start"],
                       tuple(sorted(r["dimensions"].items())), r["requests"], r["failed"])
                      for r in edges)

    assert rows(result.edges) == rows(uninterrupted.edges)
    assert_exact(truth, result.health, _without_dimensions(result.edges))
