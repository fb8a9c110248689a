"""Stage 1's outbox on faust topics: partials keys and watermarks, re-keyed records, dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from processor.aggregate import messages
from processor.aggregate.messages import PartialsMessage, Watermark
from processor.aggregate.rekey import RekeyRecord
from processor.aggregate.stage1 import Record


class KafkaOutbox:
    """Sends every message of a call, then waits for all acknowledgements (acks=all)."""

    def __init__(self, partials: Any, partials_count: int, rekey: Any, dlq: Any) -> None:
        self.partials_topic = partials
        self.partials_count = partials_count
        self.rekey_topic = rekey
        self.dlq = dlq

    async def partials(self, msgs: Sequence[PartialsMessage]) -> None:
        futs = []
        for msg in msgs:
            value = messages.encode(msg)
            if isinstance(msg, Watermark):  # every stage-2 worker tracks every source
                for p in range(self.partials_count):
                    futs.append(await self.partials_topic.send(key=None, value=value, partition=p))
            else:
                futs.append(await self.partials_topic.send(key=messages.message_key(msg), value=value))
        for f in futs:
            await f

    async def rekey(self, records: Sequence[RekeyRecord]) -> None:
        # Awaited before anything later is sent: a progress marker must follow the records it covers.
        futs = [await self.rekey_topic.send(key=r.key, value=r.value, headers=list(r.headers),
                                            partition=r.partition) for r in records]
        for f in futs:
            await f

    async def dead_letter(self, record: Record, error: str, reason: str = "decode") -> None:
        headers = [("otel-insights-error", error.encode()[:1000]),
                   ("otel-insights-reason", reason.encode()),
                   ("otel-insights-topic", record.topic.encode()),
                   ("otel-insights-partition", str(record.partition).encode()),
                   ("otel-insights-offset", str(record.offset).encode())]
        fut = await self.dlq.send(key=record.key, value=record.value, headers=headers)
        await fut


class DeadLetterProducer:
    """The dead-letter topic on brokers of its own (`kafka/dlq.brokers`): an aiokafka producer
    with the faust topic's `send` shape, started on first use and stopped with the worker."""

    def __init__(self, brokers: Sequence[str], topic: str, client_id: str) -> None:
        self.brokers = list(brokers)
        self.topic = topic
        self.client_id = client_id
        self._producer: Any = None

    async def send(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> Any:
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=self.brokers, client_id=self.client_id,
                                        acks="all")
            await producer.start()
            self._producer = producer
        return await self._producer.send(self.topic, value=value, key=key, headers=headers)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
