"""Exactness where production ordering differs from the happy path (LocalRun, no broker):
unkeyed input live and from a backlog, crashes inside the hand-over to stage 2, re-keyed
records replayed by a new owner of their input partition, spans from a skewed clock, and
late spans correcting closed windows (also across crashes).

Every case compares final rows with the generator's ground truth, computed independently
of the pipeline from the calls the generator made.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from processor.aggregate.messages import Watermark
from processor.aggregate.runner import LocalRun
from processor.aggregate.stage1 import Record
from processor.config import Config, parse_config
from processor.generate import GroundTruth, ShopGenerator, to_records
from processor.storage.window_store import MemoryStore
from tests.truth_compare import assert_exact

WINDOW_NS = 2_000_000_000
LATENESS_NS = 2_000_000_000
START_NS = 1_767_225_600 * 10**9  # window aligned
NOW_S = START_NS / 1e9 + 3600  # the wall clock of these runs
PARTITIONS = 3
CONFIG = """
receivers:
  kafka: {traces: {topics: [spans]}, group_id: g, rekey: auto}
processors:
  servicegraph: {store: {ttl: 1s, max_items: 100000}}
  windows: {size: 2s, allowed_lateness: 2s, idle_timeout: 2s, max_future_skew: 5m}
exporters: {clickhouse: {endpoint: "chdb://unused"}}
service: {pipelines: {traces: {receivers: [kafka], processors: [servicegraph, windows], exporters: [clickhouse]}}}
"""


def _config() -> Config:
    return parse_config(CONFIG, environ={})


def _run(store: MemoryStore | None = None, partitions: int = PARTITIONS) -> LocalRun:
    return LocalRun(_config(), partitions=partitions, store=store, wall_clock=lambda: NOW_S)


def _traces(seed: int, seconds: float, rate: float = 80, start_ns: int = START_NS) -> list:
    return list(ShopGenerator(seed=seed, rate=rate, start_ns=start_ns).traces(seconds))


def _truth(traces: list) -> GroundTruth:
    truth = GroundTruth(WINDOW_NS)
    truth.add_all(traces)
    return truth


def _unkeyed(run: LocalRun, traces: list, per_record: int = 5,
             partitions: list[int] | None = None) -> list[Record]:
    """Batches of traces in one record each, no key, round-robin over the input partitions
    (a collector's kafka exporter with its defaults)."""
    to = partitions or list(range(PARTITIONS))
    out = []
    for i in range(0, len(traces), per_record):
        data = TracesData()
        for tr in traces[i:i + per_record]:
            data.resource_spans.extend(tr.data.resource_spans)
        out.append(run.record(data.SerializeToString(), to[(i // per_record) % len(to)]))
    return out


def _feed_live(run: LocalRun, records: list[Record], per_batch: int = 30) -> None:
    """In batches, the clock moving 0.2 s after each."""
    for i in range(0, len(records), per_batch):
        run.feed(records[i:i + per_batch])
        run.advance(0.2)


def _keyed(run: LocalRun, traces: list) -> list[Record]:
    return [run.record(value, zlib.crc32(key) % run.partitions, key)
            for key, value in to_records(traces, "otlp_proto")]


def _sample(run: LocalRun, name: str, **labels: str) -> float:
    """The sum of the metric's samples whose labels include ``labels``."""
    return sum(sample.value for metric in run.metrics.registry.collect() for sample in metric.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def test_unkeyed_input_becomes_final_while_traffic_still_flows() -> None:
    """Records fed as they would arrive live (200 ms of traffic at a time, all partitions),
    with the clock moving: windows close behind the traffic, without waiting for it to stop."""
    traces = _traces(seed=41, seconds=24)
    run = _run()
    records = _unkeyed(run, traces)
    step_ns = 200_000_000
    t = START_NS
    i = 0
    while i < len(records):
        batch = []
        while i < len(records) and traces[min(i * 5, len(traces) - 1)].start_ns < t + step_ns:
            batch.append(records[i])
            i += 1
        run.feed(batch)
        run.advance(0.2)
        t += step_ns
    # Traffic is still "flowing": nothing said idle, no finish. Windows that ended more than
    # lateness + the pairing TTL + a window ago must be final and exact already.
    last_end = max(tr.end_ns for tr in traces)
    cutoff = (last_end - LATENESS_NS - 1_000_000_000) // WINDOW_NS * WINDOW_NS - WINDOW_NS
    assert cutoff - START_NS >= 16 * 10**9  # most of the traffic
    health, edges = run.store.final_rows_between(0)
    assert_exact(_truth(traces), health, edges, before_ns=cutoff)
    assert _sample(run, "otel_insights_late_spans_total", what="span") == 0


def test_an_unkeyed_backlog_consumed_one_partition_after_another_is_exact() -> None:
    """A 40 s backlog: each input partition's whole share is one batch, re-keyed in turn, so
    each re-key partition sees event time run through the backlog once per input partition."""
    traces = _traces(seed=42, seconds=40)
    run = _run()
    records = _unkeyed(run, traces)
    for p in range(PARTITIONS):
        run.feed([r for r in records if r.partition == p])
    result = run.finish()
    assert_exact(_truth(traces), result.health, result.edges)
    for what in ("span", "edge"):
        assert _sample(run, "otel_insights_late_spans_total", what=what) == 0
    assert not any("unknown" in (e["client"], e["server"]) for e in result.edges)


def test_rekeyed_records_replayed_by_a_new_owner_of_their_input_partition_count_once() -> None:
    """The owner of the input partitions produced re-keyed records, then died before its
    offset commit: the next owner replays them from the committed offsets, and the re-key
    partitions must skip what they already applied."""
    traces = _traces(seed=43, seconds=20)
    run = _run()
    records = _unkeyed(run, traces)
    cut, replay_from = 2 * len(records) // 3, len(records) // 3
    for i in range(0, cut, 30):
        run.feed(records[i:min(i + 30, cut)])
    for p in range(PARTITIONS):  # the input partitions change hands; the re-key ones do not
        run.stage1.revoke(("spans", p))
    for i in range(replay_from, len(records), 30):
        run.feed(records[i:i + 30])
    result = run.finish()
    assert_exact(_truth(traces), result.health, result.edges)
    assert _sample(run, "otel_insights_rekey_replays_skipped_total") > 0


def test_a_replay_into_a_rekey_partition_that_changed_hands_counts_once() -> None:
    """Input partition 0 re-keys a late record, then its traffic stops; its re-key
    partitions apply the record as a correction and, as the other partitions' traffic moves
    on, commit past it, while partition 0's own commit lags (its owner is about to die). The
    owner dies and the rebalance moves the re-key partitions too: the new owner of partition
    0 replays the record, and the new owners of the re-key partitions, which resume after it,
    must know from the origins stored with their commit that it was applied already."""
    first = _traces(seed=44, seconds=12)
    late = _traces(seed=45, seconds=2, start_ns=START_NS + 4 * 10**9)
    then = _traces(seed=46, seconds=10, start_ns=START_NS + 12 * 10**9)
    run = _run()
    _feed_live(run, _unkeyed(run, first))
    run.held.add(("spans", 0))
    late_record = _unkeyed(run, late, per_record=len(late), partitions=[0])[0]
    run.feed([late_record])
    run.advance(2.0)  # partition 0 goes quiet, and idle: the others' traffic moves event time
    assert _sample(run, "otel_insights_late_spans_total", what="span", action="corrected") > 0
    rekey = [("otel-insights-rekeyed", q) for q in range(PARTITIONS)]
    late_copies = {tp: len(run.log[tp]) for tp in rekey}  # upper bound of their offsets
    _feed_live(run, _unkeyed(run, then, partitions=[1, 2]))
    assert all(run.committed[tp] >= late_copies[tp] for tp in rekey), (run.committed, late_copies)
    assert run.committed[("spans", 0)] == late_record.offset

    skipped = _sample(run, "otel_insights_rekey_replays_skipped_total")
    run.held.clear()
    run.restart([*rekey, ("spans", 0)])
    result = run.finish()
    assert_exact(_truth(first + late + then), result.health, result.edges)
    assert _sample(run, "otel_insights_rekey_replays_skipped_total") > skipped


# Dimensions the shop traffic has (on some spans, not others), and a record header.
DIMENSIONS = "[peer.service, db.system, messaging.system, kafka.header.tenant]"


def _dims_run(store: MemoryStore | None = None) -> LocalRun:
    text = CONFIG.replace("servicegraph: {store: {ttl: 1s, max_items: 100000}}",
                          f"servicegraph: {{store: {{ttl: 1s, max_items: 100000}}, dimensions: {DIMENSIONS}}}")
    text = text.replace("group_id: g,", "group_id: g, header_extraction: {extract_headers: true, headers: [tenant]},")
    return LocalRun(parse_config(text, environ={}), partitions=PARTITIONS, store=store, wall_clock=lambda: NOW_S)


def _tenant(i: int) -> tuple[tuple[str, bytes], ...]:
    """The header of the record holding trace i: one tenant per five traces, some with none."""
    group = i // 5
    return () if group % 3 == 2 else (("tenant", b"acme" if group % 3 else b"globex"),)


def _edge_rows(edges: list[dict]) -> list[tuple]:
    def ms(v: float) -> str:  # NaN (a side not measured) equal to NaN
        return repr(v)

    return sorted((r["client"], r["server"], r["connection_type"], r["window_start"],
                   tuple(sorted(r["dimensions"].items())), r["requests"], r["failed"],
                   ms(r["server_p50_ms"]), ms(r["client_p99_ms"])) for r in edges)


def _series_counts(run: LocalRun) -> dict[tuple, float]:
    """Every traces_service_graph_* count (requests, failures, histogram buckets) by labels;
    sums left out: float additions in another order may differ in the last bit."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for m in run.metrics.registry.collect() for s in m.samples
            if s.name.startswith("traces_service_graph_") and not s.name.endswith("_sum")}


def test_unkeyed_input_with_dimensions_gives_the_rows_and_series_of_keyed_input() -> None:
    """Re-keyed spans travel as columns (rekey_codec): the dimension values, record headers
    included, must travel with them, also when a new owner replays re-keyed records."""
    traces = _traces(seed=47, seconds=20)
    keyed_run = _dims_run()
    keyed = [replace(r, headers=_tenant(i)) for i, r in enumerate(_keyed(keyed_run, traces))]
    keyed_run.feed(keyed)
    expected = keyed_run.finish()
    labelled = {tuple(sorted(r["dimensions"])) for r in expected.edges}
    assert {("client_db.system",), ("client_peer.service",),
            ("client_messaging.system", "server_messaging.system"),
            ("client_kafka.header.tenant", "server_kafka.header.tenant")} <= labelled
    assert {r["dimensions"].get("client_kafka.header.tenant") for r in expected.edges} == {None, "acme", "globex"}

    run = _dims_run()
    records = [replace(r, headers=_tenant(5 * i)) for i, r in enumerate(_unkeyed(run, traces))]
    cut, replay_from = 2 * len(records) // 3, len(records) // 3
    for i in range(0, cut, 30):
        run.feed(records[i:min(i + 30, cut)])
    for p in range(PARTITIONS):  # a new owner of the input partitions replays a third
        run.stage1.revoke(("spans", p))
    for i in range(replay_from, len(records), 30):
        run.feed(records[i:i + 30])
    result = run.finish()
    assert _sample(run, "otel_insights_rekeyed_records_total") > len(records)
    assert _sample(run, "otel_insights_rekey_replays_skipped_total") > 0
    assert _edge_rows(result.edges) == _edge_rows(expected.edges)
    assert _series_counts(run) == _series_counts(keyed_run)


class Crash(Exception):
    pass


class CrashingStore(MemoryStore):
    """Dies at the n-th call of one store method, after (``after=True``) or before it runs."""

    def __init__(self, method: str, n: int, after: bool) -> None:
        super().__init__()
        self.method, self.n, self.after, self.calls = method, n, after, 0

    def arm(self) -> None:
        setattr(self, self.method, self._wrap(getattr(self, self.method)))

    def _wrap(self, fn):  # type: ignore[no-untyped-def]
        def call(*args):  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.calls == self.n and not self.after:
                raise Crash(self.method)
            out = fn(*args)
            if self.calls == self.n:
                raise Crash(self.method)
            return out
        return call

    def disarm(self) -> None:
        for name in ("insert_health_partials", "insert_edge_partials", "save_watermarks"):
            self.__dict__.pop(name, None)


def _crash_at_announce(run: LocalRun, n: int) -> None:
    """Stage 1 dies when it is about to announce keys to stage 2 for the n-th time."""
    send = run.outbox.partials
    calls = 0

    async def partials(msgs):  # type: ignore[no-untyped-def]
        nonlocal calls
        if any(not isinstance(m, Watermark) for m in msgs):
            calls += 1
            if calls == n:
                raise Crash("announce")
        await send(msgs)

    run.outbox.partials = partials  # type: ignore[method-assign]


@pytest.mark.parametrize(("method", "n", "after"), [
    ("insert_edge_partials", 3, True),   # partials written, keys not yet announced
    ("announce", 4, False),              # the same, from the outbox's side
    ("save_watermarks", 4, False),       # keys announced, watermark not yet saved
    ("save_watermarks", 6, True),        # watermark saved, not yet advertised or committed
])
def test_a_crash_inside_the_hand_over_to_stage_2_loses_no_final_row(method: str, n: int, after: bool) -> None:
    # One input partition: with several, another partition usually announces the same
    # entity's window, which hides a key the crashed one never announced.
    traces = _traces(seed=44, seconds=24)
    store = CrashingStore(method, n, after)
    first = _run(store, partitions=1)
    records = _keyed(first, traces)
    if method == "announce":
        _crash_at_announce(first, n)
    else:
        store.arm()
    crashed_at = None
    for i in range(0, len(records), 60):
        try:
            first.feed(records[i:i + 60])
        except Crash:
            crashed_at = i
            break
    assert crashed_at is not None, "the crash point was never reached"
    store.disarm()
    # What survives: the store, the committed offsets, the partials records stage 2 had
    # not committed, and what stage 1 had already sent (acked by Kafka) when it died.
    committed = dict(first.safe_offsets)
    survivors = first.uncommitted_partials() + first.sent_partials()
    second = _run(store, partitions=1)
    second.redeliver(survivors)
    second.feed([r for r in records if r.offset >= committed.get((r.topic, r.partition), 0)])
    result = second.finish()
    assert_exact(_truth(traces), result.health, result.edges)


def _shifted(trace, by_ns: int) -> bytes:  # type: ignore[no-untyped-def]
    data = TracesData()
    data.CopyFrom(trace.data)
    for rs in data.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                span.start_time_unix_nano = max(0, span.start_time_unix_nano + by_ns)
                span.end_time_unix_nano = max(0, span.end_time_unix_nano + by_ns)
    return data.SerializeToString()


def test_spans_from_a_year_ahead_and_from_1970_are_rejected_and_move_no_watermark() -> None:
    good = _traces(seed=45, seconds=20)
    bad = _traces(seed=46, seconds=1, rate=5)
    year_ns = 365 * 86400 * 10**9
    store = MemoryStore()
    run = _run(store)
    head = _keyed(run, good[:200])
    future = run.record(_shifted(bad[0], year_ns), 0, bad[0].trace_id.hex().encode())
    ancient = run.record(_shifted(bad[1], -bad[1].end_ns + 10**9), 1, bad[1].trace_id.hex().encode())
    tail = _keyed(run, good[200:])
    records = head + [future, ancient] + tail
    run.feed(records[: len(records) // 2])
    run.advance(0.5)
    assert _sample(run, "otel_insights_late_spans_total", what="span") == 0  # nothing closed early
    assert _sample(run, "otel_insights_rejected_spans_total", reason="future") == bad[0].span_count > 0
    assert _sample(run, "otel_insights_rejected_spans_total", reason="too_old") == bad[1].span_count > 0
    # A restart from the committed offsets, then the rest of the traffic: still exact.
    committed = dict(run.safe_offsets)
    survivors = run.uncommitted_partials()
    second = _run(store)
    second.redeliver(survivors)
    second.feed([r for r in records if r.offset >= committed.get((r.topic, r.partition), 0)])
    result = second.finish()
    assert_exact(_truth(good), result.health, result.edges)


# -- late spans correct their windows ------------------------------------------------------


def _late_split(traces: list, late_by_ns: int, every: int = 7) -> tuple[list, list]:
    """Every ``every``-th trace that ended at least ``late_by_ns`` before the last is held
    back (a collector retrying a failed export): (on time, late)."""
    last_end = max(tr.end_ns for tr in traces)
    late = [tr for i, tr in enumerate(traces) if i % every == 3 and tr.end_ns <= last_end - late_by_ns]
    held = {id(tr) for tr in late}
    return [tr for tr in traces if id(tr) not in held], late


def _final_versions(store: MemoryStore) -> dict:
    return {**{("h", *k): r["version"] for k, r in store.health_final.items()},
            **{("e", *k): r["version"] for k, r in store.edges_final.items()}}


def test_spans_twice_the_lateness_late_re_finalise_their_windows_exactly() -> None:
    traces = _traces(seed=47, seconds=24)
    on_time, late = _late_split(traces, 2 * LATENESS_NS + WINDOW_NS)
    assert len(late) > 10
    store = MemoryStore()
    run = _run(store)
    run.advance(2.5)  # the unused re-key partitions go idle; the input ones wake with data
    records = _keyed(run, on_time)
    for i in range(0, len(records), 60):
        run.feed(records[i:i + 60])
    before = _final_versions(store)
    late_windows = {tr.end_ns // WINDOW_NS * WINDOW_NS // 1_000_000 for tr in late}
    assert any(k[0] == "h" and k[2] in late_windows for k in before), "their windows were final"
    run.feed(_keyed(run, late))
    result = run.finish()
    assert_exact(_truth(traces), result.health, result.edges)
    assert _sample(run, "otel_insights_late_spans_total", action="corrected") > 0
    assert _sample(run, "otel_insights_late_spans_total", action="dropped") == 0
    after = _final_versions(store)
    renewed = [k for k, v in before.items() if k[0] == "h" and k[2] in late_windows and after[k] > v]
    assert renewed, "the corrected windows have new final versions"


def test_late_spans_beyond_the_correction_horizon_are_dropped_and_counted() -> None:
    config = parse_config(CONFIG.replace("max_future_skew: 5m", "max_future_skew: 5m, "
                                         "correction_horizon: 4s"), environ={})
    traces = _traces(seed=48, seconds=24)
    on_time, late = _late_split(traces, 10 * 10**9)  # at least 10 s late: past the 4 s
    run = LocalRun(config, partitions=PARTITIONS, wall_clock=lambda: NOW_S)
    records = _keyed(run, on_time)
    for i in range(0, len(records), 60):
        run.feed(records[i:i + 60])
    run.feed(_keyed(run, late))
    result = run.finish()
    assert_exact(_truth(on_time), result.health, result.edges)
    assert _sample(run, "otel_insights_late_spans_total", what="span", action="dropped") > 0
    assert _sample(run, "otel_insights_late_spans_total", action="corrected") == 0


class CorrectionCrashStore(MemoryStore):
    """Dies at the first insert of correction rows into ``table``, before or after it lands."""

    def __init__(self, table: str, after: bool) -> None:
        super().__init__()
        self.table, self.after, self.armed = table, after, True

    def _maybe_crash(self, rows, insert) -> None:  # type: ignore[no-untyped-def]
        hit = self.armed and any(r["correction"] for r in rows)
        if hit and not self.after:
            self.armed = False
            raise Crash("before " + self.table)
        insert(rows)
        if hit:
            self.armed = False
            raise Crash("after " + self.table)

    def insert_health_partials(self, rows) -> None:  # type: ignore[no-untyped-def]
        if self.table == "health":
            self._maybe_crash(rows, super().insert_health_partials)
        else:
            super().insert_health_partials(rows)

    def insert_edge_partials(self, rows) -> None:  # type: ignore[no-untyped-def]
        if self.table == "edges":
            self._maybe_crash(rows, super().insert_edge_partials)
        else:
            super().insert_edge_partials(rows)


@pytest.mark.parametrize(("table", "after"), [
    ("health", False),  # killed before the correction is written
    ("health", True),   # its health rows written, its edge rows not
    ("edges", True),    # all written, nothing announced or committed
])
def test_a_crash_while_storing_a_correction_neither_loses_nor_doubles_it(table: str, after: bool) -> None:
    traces = _traces(seed=49, seconds=24)
    on_time, late = _late_split(traces, 2 * LATENESS_NS + WINDOW_NS, every=5)
    store = CorrectionCrashStore(table, after)
    first = _run(store, partitions=1)
    records = _keyed(first, on_time) + _keyed(first, late)
    crashed = False
    for i in range(0, len(records), 40):
        try:
            first.feed(records[i:i + 40])
        except Crash:
            crashed = True
            break
    assert crashed, "no correction was stored"
    committed = dict(first.safe_offsets)
    survivors = first.uncommitted_partials() + first.sent_partials()
    second = _run(store, partitions=1)
    second.redeliver(survivors)
    second.feed([r for r in records if r.offset >= committed.get((r.topic, r.partition), 0)])
    result = second.finish()
    assert_exact(_truth(traces), result.health, result.edges)
    # The restart replayed late spans: those the crashed run had stored are skipped.
    if after:
        assert _sample(second, "otel_insights_late_spans_total", action="replayed") > 0
