"""Stage 1's own Kafka consumer: batched reads, the partition lifecycle, and offset commits.

faust's per-record stream cost most of the end-to-end rate, and its rebalance handling
seeks kept partitions back to their committed offset, which re-applied records a worker
had already counted. Stage 1 therefore reads the input and re-key topics itself with
aiokafka's `getmany` (one batch per partition, decoded in one call) in the consumer group
`receivers.kafka.group_id`, and decides on every rebalance what happens to each partition:

- kept (assigned before and after, nobody else committed in between): its state stays and
  the fetch position goes back to the next record it has not applied;
- revoked: its safe offset is committed, then its state is dropped;
- newly assigned: its state is rebuilt from the stored watermark by replaying from the
  committed offset (exactly what a restart does).

Offsets are committed only up to each partition's safe offset (see PartitionAggregator),
a re-key partition's only once what it applied before that offset is stored (see
processor.aggregate.rekey).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from processor.aggregate.stage1 import Partition, Record, Stage1
from processor.config.components import KafkaReceiver
from processor.errors import StorageError
from processor.storage.window_store import IoCall
from processor.telemetry import Metrics

log = logging.getLogger("otel_insights.intake")
TICK_S = 1.0  # idle detection and watermark re-advertising
COMMIT_INTERVAL_S = 1.0


class Intake(ConsumerRebalanceListener):
    """Runs stage 1 over its own consumer until `stop`; `failed` is set on an internal error."""

    def __init__(self, kafka: KafkaReceiver, stage1: Stage1, metrics: Metrics,
                 busy: Callable[[str], Any], on_error: Callable[[BaseException], None],
                 store_once: IoCall) -> None:
        """``store_once``: one attempt at a store call. Commits never wait out a ClickHouse
        outage (nor hold a rebalance up): what they cannot store stays uncommitted."""
        self.kafka = kafka
        self.stage1 = stage1
        self.store_once = store_once
        self.metrics = metrics
        self.busy = busy
        self.on_error = on_error
        self.lock = asyncio.Lock()  # the loop and the rebalance callbacks change stage 1's state
        self.consumer: AIOKafkaConsumer | None = None
        self.topics = [*kafka.traces.topics] + ([kafka.rekey_topic] if kafka.rekey != "never" else [])
        self._safe: dict[Partition, int] = {}  # latest safe offset per owned partition
        self._committed: dict[Partition, int] = {}  # what this worker last committed
        self._epoch = 0  # bumped on every assignment: safe offsets from before it are stale
        self._stopping = False
        self.assigned: set[Partition] = set()
        self.joined = False  # a group rebalance gave this member its share (maybe none): /readyz

    def _new_consumer(self) -> AIOKafkaConsumer:
        k = self.kafka
        return AIOKafkaConsumer(
            bootstrap_servers=list(k.brokers), group_id=k.group_id, client_id=k.client_id,
            enable_auto_commit=False, auto_offset_reset=k.initial_offset,
            max_poll_records=k.max_batch_records,
            # Records are small (one trace each): fetch many per round trip.
            fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024,
            session_timeout_ms=k.session_timeout.ms, heartbeat_interval_ms=k.heartbeat_interval.ms,
            rebalance_timeout_ms=max(10_000, k.session_timeout.ms), **k.client_options())

    async def run(self) -> None:
        consumer = self.consumer = self._new_consumer()
        consumer.subscribe(self.topics, listener=self)
        await consumer.start()
        wait_ms = int(self.kafka.max_batch_wait.seconds * 1000)
        next_tick = next_commit = time.monotonic()
        try:
            while not self._stopping:
                batches = await consumer.getmany(timeout_ms=wait_ms, max_records=self.kafka.max_batch_records)
                async with self.lock:
                    epoch = self._epoch
                    with self.busy("stage1"):
                        records = [_record(tp, m) for tp, msgs in batches.items()
                                   if (tp.topic, tp.partition) in self.assigned for m in msgs]
                        if records:
                            self._update(epoch, await self.stage1.process(records))
                        if time.monotonic() >= next_tick:
                            next_tick = time.monotonic() + TICK_S
                            backlog = await self._lag_and_backlog()
                            self._update(epoch, await self.stage1.tick(self.assigned, backlog))
                if time.monotonic() >= next_commit:
                    next_commit = time.monotonic() + COMMIT_INTERVAL_S
                    await self._commit(self._due())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.on_error(exc)
        finally:
            await self._close(consumer)

    async def stop(self) -> None:
        self._stopping = True

    async def _close(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await self._commit(self._due(), hand_over=True)
        finally:
            await consumer.stop()

    def _update(self, epoch: int, safe: dict[Partition, int]) -> None:
        if epoch != self._epoch:  # computed before a rebalance: the partition may be another's now
            return
        for tp, offset in safe.items():
            if tp in self.assigned and offset >= 0:
                self._safe[tp] = offset

    def _due(self, only: Iterable[Partition] | None = None) -> dict[Partition, int]:
        tps = self._safe if only is None else [tp for tp in only if tp in self._safe]
        return {tp: self._safe[tp] for tp in tps if self._safe[tp] > self._committed.get(tp, -1)}

    async def _commit(self, offsets: dict[Partition, int], hand_over: bool = False) -> None:
        """Commit safe offsets; a failed commit only means a longer replay, which is exact.
        What the re-key partitions among them applied is stored first (Stage1.store_origins)."""
        if not offsets or self.consumer is None:
            return
        try:
            offsets = await self.stage1.store_origins(offsets, self.store_once, hand_over)
        except StorageError as exc:  # exact all the same: those partitions replay a little more
            log.info("re-key offsets not committed this time (%s)", exc)
            offsets = {tp: o for tp, o in offsets.items() if tp[0] != self.kafka.rekey_topic}
        if not offsets:
            return
        try:
            await self.consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "")
                                        for (t, p), o in offsets.items()})
        except KafkaError as exc:
            log.info("offset commit deferred (%s): the next one covers it", type(exc).__name__)
            return
        self._committed.update(offsets)

    # -- rebalances (aiokafka calls these around every group rebalance) -----------------

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.lock:
            self._epoch += 1
            # Hand over with as little replay as possible; state is kept until the new
            # assignment says which partitions stay here.
            await self._commit(self._due((tp.topic, tp.partition) for tp in revoked), hand_over=True)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self.lock:
            self._epoch += 1
            new = {(tp.topic, tp.partition) for tp in assigned}
            consumer = self.consumer
            assert consumer is not None
            for tp in sorted(set(self.stage1.aggregators) | set(self._safe)):
                agg = self.stage1.aggregators.get(tp)
                keep = tp in new and agg is not None and agg.next_offset >= 0
                if keep:
                    # Someone else committed meanwhile (this worker was out of the group for a
                    # while): the stored watermark may have moved too; rebuild from it.
                    keep = await consumer.committed(TopicPartition(*tp)) == self._committed.get(tp)
                if keep and agg is not None:
                    consumer.seek(TopicPartition(*tp), agg.next_offset)
                else:
                    self.stage1.revoke(tp)
                    self._safe.pop(tp, None)
                    self._committed.pop(tp, None)
            await self._internal_from_start(consumer, new)
            self.assigned = new
            self.joined = True
            log.info("stage 1 assignment: %s", ", ".join(f"{t}[{p}]" for t, p in sorted(new)) or "none")

    async def _internal_from_start(self, consumer: AIOKafkaConsumer, new: set[Partition]) -> None:
        """initial_offset is for the input topics, as the collector's receiver: a re-key
        partition with no committed offset is read from its start, or whatever was re-keyed
        onto it before this group first read it would be skipped."""
        for tp in sorted(new):
            if tp[0] == self.kafka.rekey_topic and tp not in self.stage1.aggregators:
                if await consumer.committed(TopicPartition(*tp)) is None:
                    await consumer.seek_to_beginning(TopicPartition(*tp))

    async def _lag_and_backlog(self) -> set[Partition]:
        """Set each partition's consumer lag; return those with records still to process.

        Backlog: the log end is past what stage 1 has processed (the aggregator's next
        offset; before its first record, the fetch position). Such a partition is never
        called idle, however long since its last record.
        """
        consumer = self.consumer
        assert consumer is not None
        backlog: set[Partition] = set()
        for key in self.assigned:
            tp = TopicPartition(*key)
            try:
                end = consumer.highwater(tp)
                pos = await asyncio.wait_for(consumer.position(tp), 0.2)
            except Exception:  # not fetched yet: unknown is no backlog, and no metric
                continue
            if end is None:
                continue
            if pos is not None:
                self.metrics.set("otel_insights_consumer_lag_records", max(0, end - pos),
                                 topic=key[0], partition=str(key[1]))
            agg = self.stage1.aggregators.get(key)
            done = agg.next_offset if agg is not None and agg.next_offset >= 0 else pos
            if done is not None and end > done:
                backlog.add(key)
        return backlog


def _record(tp: TopicPartition, m: Any) -> Record:
    return Record(tp.topic, tp.partition, m.offset, m.key, m.value or b"",
                  tuple(m.headers or ()))
