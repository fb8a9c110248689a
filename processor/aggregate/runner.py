"""LocalRun: stages 1 and 2 in one process without Kafka, over the same library calls as `run`.

Records are fed per input partition; what stage 1 sends is delivered to stage 2 at once
(keys and watermarks in the order sent), re-keyed records come back to stage 1 on the
re-key topic, and stage 1's clock only moves when the caller says so (`advance`), so idle
partitions and late data are deterministic (row versions and stage 2's close-lag metric
still read the wall clock). One stage-2 instance receives every partials message in the
order sent; in `run` keys and watermarks travel on different partitions. The store is a
`MemoryStore` unless one is given (a chdb `Store` runs the same). For tests, golden cases
and trying a config on a file of traces:

    run = LocalRun(config)
    run.feed(records)            # Records of any input partitions
    run.advance(11.0)            # 11 s of wall time: quiet partitions go idle
    run.restart([tp])            # tp's owner died: replay it from its committed offset
    result = run.finish()        # every partition idle: every window final
    result.health, result.edges  # final rows as stage 2 wrote them
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from processor.aggregate import messages
from processor.aggregate.messages import PartialsMessage, source_name
from processor.aggregate.rekey import RekeyRecord
from processor.aggregate.stage1 import Partition, Record, Stage1, input_partitions
from processor.aggregate.stage2 import Stage2
from processor.config import Config
from processor.storage.window_store import MemoryStore, Row, WindowStore
from processor.telemetry import Metrics, service_graph_series


async def direct(fn: Any, *args: Any) -> Any:
    """Run a store call in place (the runner has no ClickHouse thread)."""
    return fn(*args)


class ListOutbox:
    """Stage 1's outbox as lists (dead letters are kept for the caller)."""

    def __init__(self) -> None:
        self.pending_partials: list[PartialsMessage] = []
        self.pending_rekeyed: list[RekeyRecord] = []
        self.dead_letters: list[tuple[Record, str]] = []

    async def partials(self, messages: Sequence[PartialsMessage]) -> None:
        self.pending_partials.extend(messages)

    async def rekey(self, records: Sequence[RekeyRecord]) -> None:
        self.pending_rekeyed.extend(records)

    async def dead_letter(self, record: Record, error: str, reason: str = "decode") -> None:
        self.dead_letters.append((record, error))


@dataclass
class RunResult:
    health: list[Row]  # final service windows, by (window_start, service)
    edges: list[Row]  # final edge windows, by (window_start, client, server, connection_type)
    dead_letters: list[tuple[Record, str]]
    metrics: Metrics  # the self metrics and traces_service_graph_* series of the run
    safe_offsets: dict[Partition, int]  # what `run` would have committed last, per partition


class LocalRun:
    """One worker owning every input partition, one stage-2 instance, no broker."""

    def __init__(self, config: Config, partitions: int | None = None,
                 store: WindowStore | None = None, wall_clock: Callable[[], float] = time.time) -> None:
        if config.kafka is None:
            raise ValueError("the traces pipeline has no kafka receiver")
        self.config = config
        kafka = config.kafka
        self.partitions = partitions or kafka.partitions
        self.store = store if store is not None else MemoryStore()
        self.now = 0.0  # the runner's monotonic clock, in seconds
        self.metrics = Metrics(service_graph=service_graph_series(config.servicegraph, lambda: self.now))
        self.outbox = ListOutbox()
        counts = {**{t: self.partitions for t in kafka.traces.topics}, kafka.rekey_topic: self.partitions}
        self.stage1 = Stage1(config, self.store, direct, self.outbox, self.metrics, counts,
                             clock=lambda: self.now, wall_clock=wall_clock)
        self.sources = input_partitions(kafka, counts)
        self.stage2 = Stage2(config.windows, [source_name(t, p) for t, p in self.sources],
                             self.store, direct, self.metrics)
        self.log: dict[Partition, list[Record]] = {}  # every record of every partition, by offset
        self.partials_log: list[bytes] = []  # every partials record; its index is its offset
        self.safe_offsets: dict[Partition, int] = {}
        self.committed: dict[Partition, int] = {}  # what `run` would have committed
        self.held: set[Partition] = set()  # partitions whose commits are held back
        asyncio.run(self._tick())  # the worker's first timer tick: every partition is assigned

    def record(self, value: bytes, partition: int = 0, key: bytes | None = None,
               topic: str | None = None, headers: tuple[tuple[str, bytes], ...] = ()) -> Record:
        """The next record of an input partition (offsets count up per partition)."""
        assert self.config.kafka is not None
        tp = (topic or self.config.kafka.traces.topics[0], partition)
        log = self.log.setdefault(tp, [])
        log.append(Record(tp[0], tp[1], len(log), key, value, headers))
        return log[-1]

    def rekeyed_record(self, r: RekeyRecord) -> Record:
        """A re-key topic record as Kafka would store it, on the partition it names."""
        assert self.config.kafka is not None
        return self.record(r.value, r.partition, r.key, self.config.kafka.rekey_topic, r.headers)

    def feed(self, records: Iterable[Record]) -> None:
        """Process records (one stage-1 batch), then deliver what that sent."""
        asyncio.run(self._feed(list(records)))

    def advance(self, seconds: float) -> None:
        """Let `seconds` of wall time pass with no records, then run both stages' timers."""
        self.now += seconds
        asyncio.run(self._tick())

    def restart(self, partitions: Sequence[Partition], batch: int = 30) -> None:
        """Their owner died: a new one replays each, in the order given, from its committed
        offset to the end of what it holds (re-keyed records it sends meanwhile arrive as
        they would live)."""
        for tp in partitions:
            self.stage1.revoke(tp)
            self.safe_offsets.pop(tp, None)
        for tp in partitions:
            log, i = self.log.get(tp, []), self.committed.get(tp, 0)
            while i < len(log):
                self.feed(log[i:i + batch])
                i += batch

    def finish(self) -> RunResult:
        """End of input: every partition idle, every window final; the final rows."""
        self.advance(self.config.windows.idle_timeout.seconds)
        health, edges = self.store.final_rows_between(0)
        return RunResult(health, edges, list(self.outbox.dead_letters), self.metrics,
                         dict(self.safe_offsets))

    async def _feed(self, records: list[Record]) -> None:
        await self._process(records)
        await self._deliver()
        await self._commit()

    async def _process(self, records: list[Record]) -> None:
        self.safe_offsets.update(await self.stage1.process(records))

    async def _tick(self) -> None:
        self.safe_offsets.update(await self.stage1.tick(self.sources))
        await self._deliver()
        await self._commit()

    async def _commit(self) -> None:
        """As `run` commits: safe offsets that moved, re-key origins stored first."""
        due = {tp: off for tp, off in self.safe_offsets.items()
               if tp not in self.held and off >= 0 and off > self.committed.get(tp, -1)}
        self.committed.update(await self.stage1.store_origins(due))

    async def _deliver(self) -> None:
        """Stage 1's messages to stage 2; re-keyed records back to stage 1, until none are left."""
        assert self.config.kafka is not None
        while self.outbox.pending_partials or self.outbox.pending_rekeyed:
            rekeyed, self.outbox.pending_rekeyed = self.outbox.pending_rekeyed, []
            if rekeyed:
                await self._process([self.rekeyed_record(r) for r in rekeyed])
            sent, self.outbox.pending_partials = self.outbox.pending_partials, []
            await self._to_stage2([messages.encode(msg) for msg in sent])

    async def _to_stage2(self, values: list[bytes]) -> None:
        for value in values:
            self.stage2.receive(len(self.partials_log), value)
            self.partials_log.append(value)
        await self.stage2.finalize_ready()

    def uncommitted_partials(self) -> list[bytes]:
        """The partials records Kafka would deliver again after a crash now: from the lowest
        offset whose key still waits for its final row."""
        low = self.stage2.finalizer.min_pending_offset()
        return [] if low is None else self.partials_log[low:]

    def sent_partials(self) -> list[bytes]:
        """Partials records stage 1 sent but the runner has not delivered yet (what Kafka
        holds for stage 2 when stage 1 dies in the middle of a batch)."""
        return [messages.encode(msg) for msg in self.outbox.pending_partials]

    def redeliver(self, values: list[bytes]) -> None:
        """Partials records a crashed run left uncommitted, delivered to this run's stage 2."""
        asyncio.run(self._to_stage2(values))


def run_records(config: Config, records: Iterable[Record], partitions: int | None = None) -> RunResult:
    """Feed `records` in one batch and finish: the final rows of a whole input."""
    run = LocalRun(config, partitions)
    run.feed(records)
    return run.finish()
