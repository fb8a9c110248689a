"""The gateway's Kafka producer: connects in the background, produces keyed records with acks=all."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from processor.ingest.exceptions import KafkaUnavailable, RecordTooLarge

log = logging.getLogger(__name__)

_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)


def _refusal(err: BaseException) -> Exception:
    if isinstance(err, _TOO_LARGE):
        return RecordTooLarge(f"a trace is too large for a Kafka record: {err}")
    return KafkaUnavailable(f"Kafka did not acknowledge the records: {err!r}")


class KafkaSink:
    """An AIOKafkaProducer that is (re)started in the background until Kafka answers.

    The gateway must come up while Kafka is down so it can tell clients to retry (503)
    instead of refusing connections; `ready` is False until the producer has started.
    """

    def __init__(self, brokers: list[str], *, compression: str | None, request_timeout_ms: int,
                 linger_ms: int, enable_idempotence: bool, max_record_bytes: int,
                 reconnect_backoff_s: tuple[float, float],
                 security: Mapping[str, Any] | None = None) -> None:
        self.brokers = list(brokers)
        self.compression = compression
        self.request_timeout_ms = request_timeout_ms
        self.linger_ms = linger_ms
        self.enable_idempotence = enable_idempotence
        self.max_record_bytes = max_record_bytes
        self.reconnect_backoff_s = reconnect_backoff_s
        self.security = dict(security or {})  # tls / sasl options of receivers.kafka
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self._producer is not None

    async def wait_ready(self, timeout_s: float | None = None) -> bool:
        """True once the producer has started; False if `timeout_s` passed first."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    def start(self) -> None:
        if self._connector is None:
            self._connector = asyncio.create_task(self._connect(), name="gateway-kafka-connect")

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.brokers,
            client_id="otel-insights-gateway",
            acks="all",  # a client is told "ok" only for data on every in-sync replica
            compression_type=self.compression,
            linger_ms=self.linger_ms,
            request_timeout_ms=self.request_timeout_ms,
            max_request_size=self.max_record_bytes,
            enable_idempotence=self.enable_idempotence,
            **self.security,
        )

    async def _connect(self) -> None:
        delay, max_delay = self.reconnect_backoff_s
        while True:
            producer = self._new_producer()
            try:
                await producer.start()
            except asyncio.CancelledError:
                await producer.stop()  # gateway stopped while Kafka was still unreachable
                raise
            except Exception as e:  # any start failure means "not yet": keep retrying
                log.warning("Kafka %s not reachable (%s); retrying in %.1fs",
                            ",".join(self.brokers), e, delay)
                await producer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
                continue
            log.info("connected to Kafka %s", ",".join(self.brokers))
            self._producer = producer
            self._ready.set()
            return

    async def send(self, topic: str, records: list[tuple[bytes, bytes]]) -> None:
        """Produces (key, value) records and returns once Kafka acknowledged all of them.

        Raises KafkaUnavailable (transient) or RecordTooLarge (permanent). Records sent
        before a failure may still land: delivery is at-least-once, like any OTLP retry.
        """
        producer = self._producer
        if producer is None:
            raise KafkaUnavailable(f"not connected to Kafka {','.join(self.brokers)} yet")
        futures: list[asyncio.Future[object]] = []
        first_error: BaseException | None = None
        try:
            for key, value in records:
                futures.append(await producer.send(topic, value, key=key))
        except KafkaError as e:
            first_error = e
        # Wait for every enqueued record even after a failure so the caller's count of
        # requests awaiting acks stays true.
        results = await asyncio.gather(*futures, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if first_error is not None:
            errors.insert(0, first_error)
        if errors:
            raise _refusal(errors[0])

    async def stop(self) -> None:
        """Stops reconnecting, flushes what is buffered and closes the producer."""
        if self._connector is not None:
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
            self._connector = None
        producer, self._producer = self._producer, None
        self._ready.clear()
        if producer is not None:
            await producer.stop()
