"""The Gateway: lifecycle of the receivers and the Kafka sink, and the per-request export path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError as ProtoDecodeError
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from prometheus_client import CollectorRegistry

from processor.config.components import OtlpReceiver
from processor.errors import ConfigError, DecodeError
from processor.ingest.exceptions import BufferFull, KafkaUnavailable
from processor.ingest.grpc_receiver import start_grpc
from processor.ingest.http_receiver import start_http
from processor.ingest.sink import KafkaSink
from processor.ingest.stats import GatewayStats
from processor.otlp.encode import split_by_trace
from processor.otlp.registry import encode, get_codec

log = logging.getLogger(__name__)

TRACE_ID_BYTES = 16


def span_count(traces: TracesData) -> int:
    return sum(len(ss.spans) for rs in traces.resource_spans for ss in rs.scope_spans)


class Gateway:
    """Receives OTLP traces over gRPC and HTTP and writes one Kafka record per trace.

    Each record is keyed by the 32-char lowercase hex trace id, so a trace always lands on
    one partition, and holds that trace's spans (resource/scope grouping kept) in
    `encoding`. A request succeeds only after Kafka acknowledged all its records (acks=all).

    `max_buffered_requests` bounds requests waiting for Kafka acks; beyond it clients get
    429 / RESOURCE_EXHAUSTED. While Kafka is unreachable they get 503 / UNAVAILABLE, and
    the producer keeps reconnecting in the background.

    `cfg` is `receivers.otlp` with its topic and encoding resolved (`Config.otlp`); port 0
    in an endpoint picks a free port.
    """

    def __init__(self, cfg: OtlpReceiver, brokers: Sequence[str],
                 registry: CollectorRegistry | None = None,
                 security: Mapping[str, Any] | None = None) -> None:
        """``security``: aiokafka's tls/sasl options (KafkaReceiver.client_options)."""
        if not cfg.topic or not cfg.encoding:
            raise ConfigError("receivers.otlp: topic and encoding must be set (Config.otlp resolves them)")
        get_codec(cfg.encoding)  # ConfigError naming the valid encodings
        self.cfg = cfg
        self.brokers = list(brokers)
        self.topic = cfg.topic
        self.encoding = cfg.encoding
        self.max_request_size = cfg.max_request_size
        self.max_buffered_requests = cfg.max_buffered_requests
        # Retry-After and RetryInfo take whole seconds.
        self.retry_after_s = max(1, round(cfg.retry_after.seconds))
        self.shutdown_timeout_s = cfg.shutdown_timeout.seconds
        protos = cfg.protocols
        self._grpc_addr = protos.grpc.host_port if protos.grpc else None
        self._http_addr = protos.http.host_port if protos.http else None
        self.stats = GatewayStats(registry)
        producer = cfg.producer
        self.request_timeout_ms = producer.timeout.ms
        # A JSON record can be a few times its protobuf request; Kafka's own limit
        # (message.max.bytes) still applies and is reported as RecordTooLarge.
        self._sink = KafkaSink(
            self.brokers, compression=None if producer.compression == "none" else producer.compression,
            request_timeout_ms=self.request_timeout_ms, linger_ms=producer.linger.ms,
            enable_idempotence=producer.idempotent,
            max_record_bytes=max(1 << 20, 4 * cfg.max_request_size),
            reconnect_backoff_s=(producer.reconnect.initial_interval.seconds,
                                 producer.reconnect.max_interval.seconds),
            security=security)
        self._buffered = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._grpc_server: grpc.aio.Server | None = None
        self._http_runner: web.AppRunner | None = None
        self._grpc_port: int | None = None
        self._http_port: int | None = None

    # -- introspection ---------------------------------------------------------------

    @property
    def grpc_port(self) -> int | None:
        """The bound OTLP/gRPC port (None when disabled or not started)."""
        return self._grpc_port

    @property
    def http_port(self) -> int | None:
        """The bound OTLP/HTTP port (None when disabled or not started)."""
        return self._http_port

    @property
    def kafka_ready(self) -> bool:
        return self._sink.ready

    @property
    def buffered_requests(self) -> int:
        """Requests currently waiting for Kafka acknowledgements."""
        return self._buffered

    async def wait_for_kafka(self, timeout_s: float | None = None) -> bool:
        """True once the producer is connected; False if `timeout_s` passed first."""
        return await self._sink.wait_ready(timeout_s)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Binds the receivers and starts connecting to Kafka (without waiting for it)."""
        self._closing = False
        self._sink.start()
        try:
            if self._grpc_addr is not None:
                self._grpc_server, self._grpc_port = await start_grpc(self, *self._grpc_addr)
            if self._http_addr is not None:
                self._http_runner, self._http_port = await start_http(self, *self._http_addr)
        except BaseException:
            await self.stop()
            raise
        log.info("OTLP gateway listening (grpc port %s, http port %s) -> topic %s",
                 self._grpc_port, self._http_port, self.topic)

    async def stop(self) -> None:
        """Stops accepting, lets in-flight requests finish producing, then stops the producer."""
        self._closing = True
        if self._grpc_server is not None:
            await self._grpc_server.stop(self.shutdown_timeout_s)
            self._grpc_server = None
        if self._http_runner is not None:
            await self._http_runner.cleanup()
            self._http_runner = None
        try:
            await asyncio.wait_for(self._idle.wait(), self.shutdown_timeout_s)
        except asyncio.TimeoutError:
            log.warning("%d requests still waiting for Kafka at shutdown", self._buffered)
        await self._sink.stop()

    # -- the export path -------------------------------------------------------------

    async def handle(self, body: bytes, decode: Callable[[bytes], TracesData]) -> int:
        """Decodes one request body and exports it; returns the number of spans.

        Raises DecodeError for an undecodable body, or an ExportRefused subclass; the
        receiver maps either to its protocol's status.
        """
        self.stats.received(len(body))
        try:
            traces = decode(body)
        except ProtoDecodeError as e:
            raise DecodeError(f"request is not a valid OTLP protobuf message: {e}") from None
        return await self.export(traces)

    async def export(self, traces: TracesData) -> int:
        """Produces one record per trace and returns once Kafka acknowledged them all."""
        spans = span_count(traces)
        if spans == 0:
            return 0  # nothing to make durable
        if self._closing:
            raise KafkaUnavailable("gateway is shutting down")
        if not self._sink.ready:
            raise KafkaUnavailable(
                f"Kafka {','.join(self.brokers)} is not reachable yet; retry later")
        if self._buffered >= self.max_buffered_requests:
            raise BufferFull(f"{self._buffered} requests already wait for Kafka; retry later")
        records: list[tuple[bytes, bytes]] = []
        for trace_id, trace in split_by_trace(traces).items():
            if len(trace_id) != TRACE_ID_BYTES:
                raise DecodeError(f"trace id {trace_id.hex()!r} is not {TRACE_ID_BYTES} bytes")
            records.append((trace_id.hex().encode("ascii"), encode(trace, self.encoding)))
        self._buffered += 1
        self._idle.clear()
        # aiokafka bounds metadata waits and delivery by request_timeout_ms each; this is a
        # backstop so a client never waits forever on a wedged producer.
        deadline_s = 3 * self.request_timeout_ms / 1000 + 1
        try:
            await asyncio.wait_for(self._sink.send(self.topic, records), deadline_s)
        except asyncio.TimeoutError:
            raise KafkaUnavailable(f"Kafka did not acknowledge within {deadline_s:.0f}s") from None
        finally:
            self._buffered -= 1
            if self._buffered == 0:
                self._idle.set()
        self.stats.produced(spans, len(records), sum(len(v) for _, v in records))
        return spans


async def run_gateway(gateway: Gateway, stop_event: asyncio.Event) -> None:
    """Runs `gateway` until `stop_event` is set, then stops it gracefully."""
    await gateway.start()
    try:
        await stop_event.wait()
    finally:
        await gateway.stop()
