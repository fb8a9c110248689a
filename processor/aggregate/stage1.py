"""Stage 1: input records -> decode -> pair -> window per input partition -> partials and keys.

Transport-free: records come in as `Record`s and everything stage 1 sends goes through an
`Outbox` (the faust agent's topics in `run`, lists in the Kafka-free runner); store calls
run through `io` (the ClickHouse thread with retries in `run`, a direct call in the runner).
What it returns is the offset below which each partition's records may be committed.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from processor import failpoints
from processor.aggregate import rekey_codec
from processor.aggregate.admission import EventTimeBounds, correction_horizon_ns
from processor.aggregate.messages import PartialsMessage, Watermark
from processor.aggregate.partition import NS_PER_MS, Emission, PartitionAggregator
from processor.aggregate.rekey import (
    Origin,
    Origins,
    Progress,
    RekeyRecord,
    origin_headers,
    progress_markers,
    read_origin,
    read_progress,
)
from processor.config import Config
from processor.config.components import KafkaReceiver
from processor.errors import DecodeError, RecordTooLarge
from processor.graph import EdgeIds
from processor.graph.labels import EdgeLabels
from processor.otlp.batch import SpanBatch, StringTable
from processor.otlp.compression import decompress_record
from processor.otlp.decode import SpanDecoder
from processor.storage.window_store import IoCall, WindowStore
from processor.telemetry import Metrics

log = logging.getLogger("otel_insights.stage1")
_TRACE_KEY = re.compile(rb"^[0-9a-f]{32}$")
# Decompressed input held at once before it is decoded (at least max_record_bytes).
DECODE_BUDGET_BYTES = 32 * 1024 * 1024
# The string table is compacted once it holds this many strings, or twice what the last
# compaction kept, whichever is more (what state still refers to bounds the rest).
COMPACT_STRINGS_AT = 200_000
Partition = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class Record:
    """One input record as stage 1 needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class Outbox(Protocol):
    """Where stage 1's messages go."""

    async def partials(self, messages: Sequence[PartialsMessage]) -> None:
        """Keys to the entity's partials partition; watermarks to every partials partition."""

    async def rekey(self, records: Sequence[RekeyRecord]) -> None:
        """Records for the re-key topic, in order (see processor.aggregate.rekey)."""

    async def dead_letter(self, record: Record, error: str, reason: str = "decode") -> None:
        """The record's original bytes with the error, for the dead-letter topic; ``reason``
        is decode (not OTLP) or too_large (over receivers.kafka.max_record_bytes)."""


def input_partitions(kafka: KafkaReceiver, partitions: Mapping[str, int]) -> list[Partition]:
    """Every partition stage 1 reads, given each topic's partition count: the input topic's,
    and the re-key topic's unless re-keying is off. Stage 2 must hear from each of them."""
    topics = [*kafka.traces.topics] + ([kafka.rekey_topic] if kafka.rekey != "never" else [])
    return [(t, p) for t in topics for p in range(partitions[t])]


def origin_numbers(kafka: KafkaReceiver, partitions: Mapping[str, int]) -> dict[Partition, int]:
    """Each input partition's number as a re-key origin: its topic's partitions counted
    after those of the topics listed before it (one topic: the partition number)."""
    out: dict[Partition, int] = {}
    for topic in kafka.traces.topics:
        for p in range(partitions[topic]):
            out[(topic, p)] = len(out)
    return out


def needs_rekey(kafka: KafkaReceiver, topic: str, key: bytes | None) -> bool:
    """Whether a record must go through the re-key topic before it can be paired."""
    if topic not in kafka.traces.topics or kafka.rekey == "never":
        return False
    return kafka.rekey == "always" or key is None or not _TRACE_KEY.match(key)


class Stage1:
    """The aggregators of the input partitions this worker owns, and what they emit."""

    def __init__(self, config: Config, store: WindowStore, io: IoCall, outbox: Outbox,
                 metrics: Metrics, partitions: Mapping[str, int], strings: StringTable | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        """``partitions``: each topic's partition count (every input partition is an origin
        of every re-key partition). ``clock`` times idleness; ``wall_clock`` bounds event time."""
        if config.kafka is None:
            raise ValueError("the traces pipeline has no kafka receiver")
        self.kafka = config.kafka
        self.origin_of = origin_numbers(self.kafka, partitions)
        self.input_count = len(self.origin_of)
        self.rekey_count = partitions.get(self.kafka.rekey_topic, 0) if self.kafka.rekey != "never" else 0
        self.bounds = EventTimeBounds(config)
        self.horizon_ns = correction_horizon_ns(config)
        self.wall_clock = wall_clock
        self.origins: dict[int, Origins] = {}  # per re-key partition
        self.servicegraph = config.servicegraph
        self.windows = config.windows
        self.store = store
        self.io = io
        self.outbox = outbox
        self.metrics = metrics
        self.strings = strings or StringTable()
        self.clock = clock
        self.decoder = SpanDecoder(self.strings, self.servicegraph,
                                   self.kafka.header_extraction.active)
        self.edge_ids = EdgeIds(len(self.servicegraph.dimensions))
        self.labels = EdgeLabels(self.servicegraph, self.strings, self.edge_ids)
        metrics.service_graph.configure(self.servicegraph.bucket_bounds_s)
        self._compact_at = COMPACT_STRINGS_AT
        self.aggregators: dict[Partition, PartitionAggregator] = {}
        self.idle: set[Partition] = set()
        self._advertised: dict[Partition, tuple[int, bool]] = {}
        self._warned_rekey = False

    async def aggregator(self, topic: str, partition: int) -> PartitionAggregator:
        """The partition's aggregator, created with its stored watermark on first use."""
        agg = self.aggregators.get((topic, partition))
        if agg is None:
            marks = await self.io(self.store.load_watermarks, self.kafka.group_id, topic)
            closed_ms = int(marks.get(partition, 0))
            applied: dict[int, tuple[int, int]] = {}
            if closed_ms and self.windows.late_spans == "correct":
                since_ms = closed_ms - self.horizon_ns // NS_PER_MS - self.windows.size.ms
                got = await self.io(self.store.load_applied, topic, partition, since_ms, closed_ms)
                applied = {ws * NS_PER_MS: through for ws, through in got.items()}
            agg = PartitionAggregator(topic, partition, self.strings, self.servicegraph,
                                      self.windows, closed_until_ns=closed_ms * NS_PER_MS,
                                      applied=applied, horizon_ns=self.horizon_ns,
                                      clock=self.clock, edge_ids=self.edge_ids)
            self.aggregators[(topic, partition)] = agg
        return agg

    async def process(self, records: Sequence[Record]) -> dict[Partition, int]:
        """Add a batch of records (any partitions); returns each partition's safe offset."""
        by_tp: dict[Partition, list[Record]] = defaultdict(list)
        for rec in records:
            by_tp[(rec.topic, rec.partition)].append(rec)
        safe: dict[Partition, int] = {}
        for (topic, partition), recs in by_tp.items():
            agg = await self.aggregator(topic, partition)
            if topic == self.kafka.rekey_topic and self.rekey_count:
                spans, data = await self._from_origins(partition, recs)
                rekeyed = 0
            else:
                spans, rekeyed = await self._decode(recs, agg)
                data = len(recs)
            if data:
                self.idle.discard((topic, partition))
                self.metrics.inc("otel_insights_records_total", data, topic=topic)
                self.metrics.inc("otel_insights_spans_total", len(spans))
            agg.add(spans, next_offset=recs[-1].offset + 1, active=bool(data))
            self._observe(agg)
            await self.emit(agg, agg.flush_closed(), idle=(topic, partition) in self.idle)
            if rekeyed:  # after the re-keyed records: their origin's progress, to every re-key partition
                await self.outbox.rekey(progress_markers(
                    Progress(self.origin_of[(topic, partition)], agg.max_end_ns, False),
                    self.rekey_count))
            safe[(topic, partition)] = agg.safe_offset()
        self.compact_strings()
        return safe

    def compact_strings(self, force: bool = False) -> int:
        """Bound the string table: every distinct name, attribute value and address ever
        decoded is interned, so forget the ones no state refers to any more. Returns how
        many strings it keeps."""
        if not force and len(self.strings) < self._compact_at:
            return len(self.strings)
        aggs = list(self.aggregators.values())
        for agg in aggs:  # completed edges hold codes: into the series first
            self._observe_edges(agg)
        live = [agg.codes() for agg in aggs]
        held = [agg.edge_ids_held() for agg in aggs]
        remap = self.decoder.compact_strings(np.concatenate(live) if live else np.empty(0, np.int64))
        remap_edges = self.edge_ids.compact(np.concatenate(held) if held else np.empty(0, np.int64), remap)
        self.labels.forget()  # cached by edge id, and ids changed
        for agg in aggs:
            agg.remap_codes(remap, remap_edges)
        self._compact_at = max(COMPACT_STRINGS_AT, 2 * len(self.strings))
        return len(self.strings)

    async def _from_origins(self, partition: int, recs: list[Record]) -> tuple[SpanBatch, int]:
        """A re-key partition's records: markers update its origins and the event-time cap;
        spans of input records already applied (a replay) are skipped. Returns the new spans
        and how many data records there were."""
        origins = self.origins.get(partition)
        if origins is None:
            origins = self.origins[partition] = await self._resume_origins(partition, recs[0].offset)
        parts: list[SpanBatch] = []
        data = 0
        for rec in recs:
            mark = read_progress(rec.headers)
            if mark is not None:
                origins.on_progress(mark)
                continue
            data += 1
            origin = read_origin(rec.headers)
            try:
                if origin is None:
                    raise DecodeError("re-key record without its origin header")
                spans, origin_offsets = rekey_codec.decode(rec.value, self.strings,
                                                           self.servicegraph.dimensions)
            except DecodeError as exc:
                await self._dead_letter(rec, str(exc))
                continue
            new = origins.new_spans(origin.partition, origin_offsets, rec.offset)
            if not new.all():
                self.metrics.inc("otel_insights_rekey_replays_skipped_total")
                spans = spans.take(new)
            parts.append(spans.with_offset(rec.offset))
        self.aggregators[(self.kafka.rekey_topic, partition)].cap(origins.cap_ns())
        return SpanBatch.concat(parts), data

    async def _resume_origins(self, partition: int, offset: int) -> Origins:
        """A re-key partition read from ``offset`` on: what was applied before it, as stored
        with the last commit at or before it (nothing before the partition's first record)."""
        got = await self.io(self.store.load_origins, self.kafka.group_id,
                            self.kafka.rekey_topic, partition, offset)
        if got is not None:
            log.info("re-key partition %d resumes at offset %d knowing what it applied of %d "
                     "input partitions (stored at offset %d)", partition, offset, len(got[1]), got[0])
        elif offset > 0:
            log.warning("re-key partition %d resumes at offset %d with nothing stored for it "
                        "(committed by an older version or over 14 days ago): an input "
                        "partition replayed into it now may count twice", partition, offset)
        return Origins.resumed(self.input_count, offset, None if got is None else got[1])

    async def store_origins(self, offsets: Mapping[Partition, int], io: IoCall | None = None,
                            hand_over: bool = False) -> dict[Partition, int]:
        """Before offsets are committed: store what each re-key partition among them applied
        before its offset, so its next owner resumes knowing it. Returns the offsets that
        may be committed: a re-key partition whose state is unknown there, or whose commit
        may wait (Origins.to_store), is left out. ``io``: how to call the store (default:
        stage 1's); ``hand_over``: the partitions are about to leave this worker."""
        rekey = self.kafka.rekey_topic
        if not self.rekey_count:
            return dict(offsets)
        ok = {tp: off for tp, off in offsets.items() if tp[0] != rekey}
        todo: dict[int, tuple[int, dict[int, int], Origins]] = {}
        now = self.clock()
        for (topic, partition), off in offsets.items():
            origins = self.origins.get(partition) if topic == rekey else None
            applied = origins.to_store(off, now, hand_over) if origins is not None else None
            if origins is not None and applied is not None:
                todo[partition] = (off, applied, origins)
        if todo:
            await (io or self.io)(self.store.save_origins, self.kafka.group_id, rekey,
                                  {p: (off, applied) for p, (off, applied, _) in todo.items()})
            failpoints.reach("stage1.origins_stored")
            for p, (off, _, origins) in todo.items():
                origins.settle(off, now)
                ok[(rekey, p)] = off
        return ok

    async def _decode(self, recs: list[Record], agg: PartitionAggregator) -> tuple[SpanBatch, int]:
        """Decode a partition's records; bad ones go to the DLQ, unkeyed ones on to the
        re-key topic. Returns the admitted spans to aggregate here and how many records
        were re-keyed.

        Decompressed payloads are decoded (or re-keyed) as soon as they add up to
        DECODE_BUDGET_BYTES, so a batch of large records never sits in memory decompressed
        at once: what a batch holds is bounded by the budget plus one record
        (`max_record_bytes`).
        """
        limit = self.kafka.max_record_bytes
        budget = max(DECODE_BUDGET_BYTES, limit)
        keyed: list[tuple[Record, bytes]] = []
        unkeyed: list[tuple[Record, bytes]] = []
        batches: list[SpanBatch] = []
        held = n_rekeyed = 0
        for rec in recs:
            try:
                payload = decompress_record(rec.value, max_bytes=limit)
            except RecordTooLarge as exc:
                await self._dead_letter(rec, str(exc), "too_large")
                continue
            except DecodeError as exc:
                await self._dead_letter(rec, str(exc))
                continue
            (unkeyed if needs_rekey(self.kafka, rec.topic, rec.key) else keyed).append((rec, payload))
            held += len(payload)
            if held >= budget:
                n_rekeyed += await self._rekey(unkeyed, agg)
                batches.append(await self._decode_keyed(keyed))
                held = 0
        n_rekeyed += await self._rekey(unkeyed, agg)
        batches.append(await self._decode_keyed(keyed))
        return self._admit(SpanBatch.concat([b for b in batches if len(b)])), n_rekeyed

    async def _decode_keyed(self, held: list[tuple[Record, bytes]]) -> SpanBatch:
        """Decode what is held in one call (undecodable records to the DLQ); the list is emptied."""
        if not held:
            return SpanBatch.empty()
        decoded = self.decoder.decode_records([p for _, p in held], self.kafka.traces.encoding,
                                              [r.offset for r, _ in held],
                                              headers=[r.headers for r, _ in held])
        for i, error in decoded.errors:
            await self._dead_letter(held[i][0], str(error))
        held.clear()
        return decoded.batch

    def _admit(self, spans: SpanBatch) -> SpanBatch:
        # As the connector: spans of a resource without service.name take no part.
        named = spans.service != 0
        if not named.all():
            self.metrics.inc("otel_insights_rejected_spans_total", int((~named).sum()),
                             reason="no_service_name")
            spans = spans.take(named)
        got = self.bounds.admit(spans, self.wall_clock())
        if got.future:
            self.metrics.inc("otel_insights_rejected_spans_total", got.future, reason="future")
        if got.too_old:
            self.metrics.inc("otel_insights_rejected_spans_total", got.too_old, reason="too_old")
        return got.spans

    async def _rekey(self, held: list[tuple[Record, bytes]], agg: PartitionAggregator) -> int:
        """Send unkeyed records' spans to the re-key partitions their traces hash to, as
        compact span records naming their origin (see processor.aggregate.rekey_codec); the
        partition's own watermark moves with the spans' end times. Returns records re-keyed;
        the list is emptied."""
        if not held:
            return 0
        recs = [r for r, _ in held]
        payloads = [p for _, p in held]
        held.clear()
        if not self._warned_rekey:
            log.warning("input records are not keyed by trace id: re-keying through topic %r "
                        "(doubles broker traffic; set partition_traces_by_id on the collector)",
                        self.kafka.rekey_topic)
            self._warned_rekey = True
        # Decoded here, headers extracted and all: the spans' columns (dimensions included)
        # travel to the re-key partition, which never sees the original record.
        decoded = self.decoder.decode_records(payloads, self.kafka.traces.encoding,
                                              [r.offset for r in recs],
                                              headers=[r.headers for r in recs])
        for i, error in decoded.errors:
            await self._dead_letter(recs[i], str(error))
        spans = self._admit(decoded.batch)
        if len(spans):
            agg.observe(int(spans.end_ns.max()))
        origin = self.origin_of[(recs[0].topic, recs[0].partition)]
        dims = self.servicegraph.dimensions
        out = [RekeyRecord(None, rekey_codec.encode(piece, self.strings, dims),
                           (*origin_headers(Origin(origin, int(piece.offset[-1]), dest)),
                            (rekey_codec.FORMAT_HEADER, rekey_codec.FORMAT)), dest)
               for dest, part in rekey_codec.split(spans, self.rekey_count)
               for piece in rekey_codec.chunks(part)]
        if out:
            await self.outbox.rekey(out)
        n = len(recs) - len(decoded.errors)
        self.metrics.inc("otel_insights_rekeyed_records_total", n)
        failpoints.reach("stage1.rekeyed")
        return n

    async def _dead_letter(self, rec: Record, error: str, reason: str = "decode") -> None:
        await self.outbox.dead_letter(rec, error, reason)
        self.metrics.inc("otel_insights_dlq_records_total", reason=reason)
        log.warning("record %s[%d]@%d -> DLQ (%s): %s", rec.topic, rec.partition, rec.offset,
                    reason, error)

    def _observe(self, agg: PartitionAggregator) -> None:
        """The partition's counts and completed edges since the last call, into the metrics."""
        self._observe_edges(agg)
        st = agg.take_stats()
        source = agg.source
        m = self.metrics
        for (what, action), n in st.late.items():
            m.inc("otel_insights_late_spans_total", n, what=what, action=action)
        for kind, n in st.pairing.expired.items():
            m.inc("otel_insights_unpaired_spans_total", n, kind=kind)
        m.inc("otel_insights_expired_edges_total", st.pairing.virtual_peer, kind="client")
        m.inc("otel_insights_expired_edges_total", st.pairing.virtual_user, kind="user")
        m.inc("otel_insights_evicted_spans_total", st.pairing.evicted)
        for what, n in st.overflow.items():
            m.inc("otel_insights_cardinality_overflow_total", n, what=what)
        m.set("otel_insights_pairing_store_items", st.waiting_spans, partition=source)

    def _observe_edges(self, agg: PartitionAggregator) -> None:
        """The edges the partition completed since the last call, into the service-graph series."""
        for done in agg.take_completed():
            folded = self.metrics.service_graph.observe(self.labels.of(done.edges, done.ids), done.edges)
            self.metrics.inc("otel_insights_cardinality_overflow_total", folded, what="series")

    async def emit(self, agg: PartitionAggregator, em: Emission, idle: bool = False) -> None:
        """Persist an emission, tell stage 2 which keys changed, save and advertise the watermark.

        In that order: a stage-2 worker never reads a key's partials before they exist, and
        the stored watermark (which makes a restart drop replayed spans of emitted windows)
        moves only once stage 2 has the keys. Killed anywhere before that, the restart
        replays the spans, rewrites the same partial rows and announces their keys again.
        """
        tp = (agg.topic, agg.partition)
        if em:
            if em.health:
                await self.io(self.store.insert_health_partials, em.health)
            if em.edges:
                await self.io(self.store.insert_edge_partials, em.edges)
            failpoints.reach("stage1.partials_written")
            await self.outbox.partials([*em.health_keys(), *em.edge_keys()])
            failpoints.reach("stage1.keys_announced")
            await self._save_watermark(agg, em.watermark_ms)
            failpoints.reach("stage1.watermark_saved")
        elif em.watermark_ms and self._advertised.get(tp, (0, idle))[0] != em.watermark_ms:
            await self._save_watermark(agg, em.watermark_ms)
        if self._advertised.get(tp) != (em.watermark_ms, idle):
            await self.advertise(agg, idle)

    async def _save_watermark(self, agg: PartitionAggregator, watermark_ms: int) -> None:
        await self.io(self.store.save_watermarks, self.kafka.group_id, agg.topic,
                      {agg.partition: watermark_ms})

    async def advertise(self, agg: PartitionAggregator, idle: bool) -> None:
        """Tell every stage-2 worker how far this partition has emitted, and whether it is idle."""
        self._advertised[(agg.topic, agg.partition)] = (agg.watermark_ms, idle)
        await self.outbox.partials([Watermark(agg.source, agg.watermark_ms, idle)])

    def revoke(self, tp: Partition) -> None:
        """Forget a partition this worker no longer owns; its new owner replays what was not committed."""
        self.aggregators.pop(tp, None)
        self._advertised.pop(tp, None)
        self.idle.discard(tp)
        if tp[0] == self.kafka.rekey_topic:
            self.origins.pop(tp[1], None)

    async def tick(self, assigned: Collection[Partition], backlog: Collection[Partition] = ()
                   ) -> dict[Partition, int]:
        """Timer: create state for newly assigned partitions, flush idle ones, re-advertise.

        ``backlog``: partitions with records still to process. Such a partition is never
        idle, however long since its last record: a sibling in the same stream can starve
        it for longer than idle_timeout, and an idle flag then would let stage 2 finalise
        (and detection judge) windows without its data.

        Returns the safe offsets of the partitions an idle flush moved.
        """
        for tp in list(self.aggregators):
            if tp not in assigned:
                self.revoke(tp)
        safe: dict[Partition, int] = {}
        markers: list[RekeyRecord] = []
        idle_s = self.windows.idle_timeout.seconds
        for topic, partition in sorted(assigned):
            tp = (topic, partition)
            agg = await self.aggregator(topic, partition)
            if tp not in backlog and agg.quiet_for() >= idle_s:
                if tp not in self.idle:
                    self.idle.add(tp)
                    await self.emit(agg, agg.flush_idle(), idle=True)
                    self._observe(agg)  # edges the flush completed count like any other
                    safe[tp] = agg.safe_offset()
                else:
                    await self.advertise(agg, idle=True)
            else:
                self.idle.discard(tp)
                await self.advertise(agg, idle=False)
            if agg.windows.corrections:
                await self.emit(agg, agg.flush_corrections(), idle=tp in self.idle)
                safe[tp] = agg.safe_offset()
            if tp in self.origin_of and self.rekey_count:
                markers += progress_markers(Progress(self.origin_of[tp], agg.max_end_ns,
                                                     tp in self.idle), self.rekey_count)
        if markers:  # every origin is heard every tick, also one with nothing to re-key
            await self.outbox.rekey(markers)
        return safe
