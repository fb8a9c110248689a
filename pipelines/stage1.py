"""Stage 1 agent body: decode -> pair -> window per input partition; partials to ClickHouse."""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict, deque
from collections.abc import Collection
from typing import Any

import numpy as np

from pipelines.runtime import Runtime
from processor.aggregate.partition import Emission, PartitionAggregator
from processor.errors import DecodeError
from processor.graph import CONN_NAMES, EdgeBatch
from processor.otlp.batch import SpanBatch
from processor.otlp.compression import decompress_record
from processor.windows.accumulator import pack_edge, unpack_edge

log = logging.getLogger("otel_insights.stage1")
_TRACE_KEY = re.compile(rb"^[0-9a-f]{32}$")


class Stage1:
    """Wiring for stage 1; the topics are faust Topic objects created by the app."""

    def __init__(self, rt: Runtime, dlq: Any, rekey: Any, partials: Any, partials_count: int) -> None:
        self.rt = rt
        self.dlq = dlq
        self.rekey = rekey
        self.partials = partials
        self.partials_count = partials_count
        self.input_topic = rt.kafka.traces.topic
        self.encoding = rt.kafka.traces.encoding
        self.held: dict[tuple[str, int], deque[Any]] = defaultdict(deque)
        self._warned_rekey = False
        self._advertised: dict[tuple[str, int], tuple[int, bool]] = {}

    def needs_rekey(self, topic: str, key: bytes | None) -> bool:
        mode = self.rt.kafka.rekey
        if topic != self.input_topic or mode == "never":
            return False
        return mode == "always" or key is None or not _TRACE_KEY.match(key)

    async def process(self, events: list[Any]) -> None:
        by_tp: dict[tuple[str, int], list[Any]] = defaultdict(list)
        for ev in events:
            ev.message.incref()  # released by `_ack_safe` once the results are durable
            by_tp[(ev.message.topic, ev.message.partition)].append(ev)
        for (topic, partition), evs in by_tp.items():
            agg = await self.rt.aggregator(topic, partition)
            self.rt.idle.discard((topic, partition))
            self.held[(topic, partition)].extend(evs)
            spans = await self._decode(evs, topic)
            self.rt.telemetry.inc("otel_insights_records_total", len(evs), topic=topic)
            self.rt.telemetry.inc("otel_insights_spans_total", len(spans))
            before = agg.windows.stats.late_spans, agg.windows.stats.late_edges
            edges = agg.add(spans, next_offset=evs[-1].message.offset + 1)
            self._observe(agg, before)
            self._observe_edges(edges)
            await self.emit(agg, agg.flush_closed())
            self._ack_safe(agg)

    async def _decode(self, evs: list[Any], topic: str) -> SpanBatch:
        """Decode a partition's records in one call; bad ones go to the DLQ, others re-key."""
        payloads: list[bytes] = []
        offsets: list[int] = []
        kept: list[Any] = []
        for ev in evs:
            msg = ev.message
            value = msg.value if isinstance(msg.value, bytes) else bytes(msg.value or b"")
            try:
                payload = decompress_record(value)
                if self.needs_rekey(topic, msg.key):
                    await self._rekey(payload)
                    continue
            except DecodeError as exc:
                await self._dead_letter(msg, value, str(exc))
                continue
            payloads.append(payload)
            offsets.append(msg.offset)
            kept.append(ev)
        if not payloads:
            return SpanBatch.empty()
        decoded = self.rt.decoder.decode_records(payloads, self.encoding, offsets)
        for i, error in decoded.errors:
            msg = kept[i].message
            await self._dead_letter(msg, msg.value, str(error))
        return decoded.batch

    async def _rekey(self, payload: bytes) -> None:
        from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

        from processor.ingest.otlp_json import parse_otlp_json
        from processor.otlp.encode import encode, split_by_trace

        if not self._warned_rekey:
            log.warning("input records are not keyed by trace id: re-keying through topic %r "
                        "(doubles broker traffic; set partition_traces_by_id on the collector)",
                        self.rt.kafka.rekey_topic)
            self._warned_rekey = True
        try:
            if self.encoding == "otlp_json":
                data = parse_otlp_json(payload)
            else:
                data = TracesData.FromString(payload)
        except Exception as exc:
            raise DecodeError(f"cannot re-key record: {exc}") from exc
        futs = []
        for trace_id, part in split_by_trace(data).items():
            futs.append(await self.rekey.send(key=trace_id.hex().encode(), value=encode(part, self.encoding)))
        for f in futs:
            await f
        self.rt.telemetry.inc("otel_insights_rekeyed_records_total")

    async def _dead_letter(self, msg: Any, value: bytes, error: str) -> None:
        headers = [("otel-insights-error", error.encode()[:1000]),
                   ("otel-insights-topic", str(msg.topic).encode()),
                   ("otel-insights-partition", str(msg.partition).encode()),
                   ("otel-insights-offset", str(msg.offset).encode())]
        fut = await self.dlq.send(key=msg.key, value=value, headers=headers)
        await fut
        self.rt.telemetry.inc("otel_insights_dlq_records_total", reason="decode")
        log.warning("record %s[%d]@%d -> DLQ: %s", msg.topic, msg.partition, msg.offset, error)

    def _observe(self, agg: PartitionAggregator, late_before: tuple[int, int]) -> None:
        t = self.rt.telemetry
        ws = agg.windows.stats
        t.inc("otel_insights_late_spans_total", ws.late_spans - late_before[0], what="span")
        t.inc("otel_insights_late_spans_total", ws.late_edges - late_before[1], what="edge")
        st = agg.store.take_stats()
        for kind, n in st.expired.items():
            t.inc("otel_insights_unpaired_spans_total", n, kind=kind)
        t.inc("otel_insights_expired_edges_total", st.virtual_peer, kind="client")
        t.inc("otel_insights_expired_edges_total", st.virtual_user, kind="user")
        t.inc("otel_insights_evicted_spans_total", st.evicted)
        t.set("otel_insights_pairing_store_items", len(agg.store), partition=f"{agg.topic}/{agg.partition}")

    def _observe_edges(self, e: EdgeBatch) -> None:
        if not len(e):
            return
        ids = pack_edge(e.client, e.server, e.conn)
        uniq, inverse = np.unique(ids, return_inverse=True)
        names = self.rt.strings.strings
        labels = []
        for eid in uniq.tolist():
            c, s, conn = unpack_edge(eid)
            labels.append((names[c], names[s], CONN_NAMES[conn]))
        self.rt.telemetry.service_graph.observe(labels, inverse, e.failed, e.server_ms / 1000.0,
                                                e.client_ms / 1000.0)

    async def emit(self, agg: PartitionAggregator, em: Emission, idle: bool = False) -> None:
        """Persist an emission, tell stage 2 which keys changed, then advertise the watermark."""
        if em.health or em.edges:
            await self.rt.persist(agg, em)
            futs = []
            for service, ws in em.health_keys():
                futs.append(await self.partials.send(
                    key=service.encode(), value=json.dumps({"t": "h", "k": [service, ws]}).encode()))
            for c, s, conn, ws in em.edge_keys():
                futs.append(await self.partials.send(
                    key=f"{c}\x1f{s}".encode(), value=json.dumps({"t": "e", "k": [c, s, conn, ws]}).encode()))
            for f in futs:
                await f
        elif em.watermark_ms and self._advertised.get((agg.topic, agg.partition), (0, idle))[0] != em.watermark_ms:
            await self.rt.io_call(self.rt.store.save_watermarks, self.rt.kafka.group_id,
                                  agg.topic, {agg.partition: em.watermark_ms})
        if self._advertised.get((agg.topic, agg.partition)) != (em.watermark_ms, idle):
            await self.broadcast_watermark(agg, idle)

    async def broadcast_watermark(self, agg: PartitionAggregator, idle: bool) -> None:
        wm_ms = agg.windows.closed_until_ns // 1_000_000
        self._advertised[(agg.topic, agg.partition)] = (wm_ms, idle)
        body = json.dumps({"t": "w", "s": self.rt.source_name(agg.topic, agg.partition),
                           "wm": wm_ms, "idle": idle}).encode()
        futs = [await self.partials.send(key=None, value=body, partition=p)
                for p in range(self.partials_count)]
        for f in futs:
            await f

    def _ack_safe(self, agg: PartitionAggregator) -> None:
        safe = agg.safe_offset()
        q = self.held[(agg.topic, agg.partition)]
        while q and q[0].message.offset < safe:
            q.popleft().ack()

    async def tick(self, assigned: set[tuple[str, int]], backlog: Collection[tuple[str, int]] = ()) -> None:
        """Timer: create state for newly assigned partitions, flush idle ones, re-advertise.

        ``backlog``: partitions with records still to process. Such a partition is never
        idle, however long since its last record: a sibling in the same stream can starve
        it for longer than idle_timeout, and an idle flag then would let stage 2 finalise
        (and detection judge) windows without its data.
        """
        for tp in list(self.rt.aggregators):
            if tp not in assigned:
                # Revoked: whatever was not acked is replayed by the new owner.
                self.rt.aggregators.pop(tp, None)
                self.held.pop(tp, None)
                self._advertised.pop(tp, None)
        for topic, partition in sorted(assigned):
            agg = await self.rt.aggregator(topic, partition)
            if (topic, partition) not in backlog and self.rt.is_idle(agg):
                if (topic, partition) not in self.rt.idle:
                    self.rt.idle.add((topic, partition))
                    await self.emit(agg, agg.flush_idle(), idle=True)
                    self._ack_safe(agg)
                else:
                    await self.broadcast_watermark(agg, idle=True)
            else:
                self.rt.idle.discard((topic, partition))
                await self.broadcast_watermark(agg, idle=False)
