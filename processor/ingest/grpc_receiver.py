"""OTLP/gRPC receiver: TraceService/Export on grpc.aio, mapping refusals to OTLP status codes."""

from __future__ import annotations

import logging

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from processor.errors import DecodeError, OtelInsightsError
from processor.ingest.exceptions import (
    BufferFull,
    ExportRefused,
    KafkaUnavailable,
    RequestTooLarge,
    outcome_of,
)
from processor.ingest.export import Exporter

log = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
PROTOCOL = "grpc"
_OK = ExportTraceServiceResponse().SerializeToString()
# OTLP clients retry RESOURCE_EXHAUSTED only when the status carries RetryInfo, and the
# OTel SDKs read it from this trailer.
_RETRY_INFO_KEY = "google.rpc.retryinfo-bin"


def _code(err: Exception) -> grpc.StatusCode:
    if isinstance(err, KafkaUnavailable):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(err, (BufferFull, RequestTooLarge)):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(err, (DecodeError, ExportRefused)):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


class _TraceService:
    def __init__(self, gateway: Exporter) -> None:
        self.gateway = gateway
        retry = RetryInfo(retry_delay=Duration(seconds=gateway.retry_after_s))
        self._retry_trailer = ((_RETRY_INFO_KEY, retry.SerializeToString()),)

    async def export(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        # The request arrives as raw bytes (no deserializer registered) so that an
        # undecodable payload is INVALID_ARGUMENT, not grpc's generic INTERNAL.
        try:
            await self.gateway.handle(request, TracesData.FromString)
        except Exception as err:
            self.gateway.stats.request(PROTOCOL, outcome_of(err))
            code = _code(err)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("OTLP/gRPC export failed")
            retryable = isinstance(err, (KafkaUnavailable, BufferFull))
            await context.abort(code, str(err),
                                trailing_metadata=self._retry_trailer if retryable else ())
        self.gateway.stats.request(PROTOCOL, "ok")
        return _OK


async def start_grpc(gateway: Exporter, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Starts the gRPC server on the running loop; returns it and the bound port."""
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", gateway.max_request_size),
    ])
    service = _TraceService(gateway)
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Export": grpc.unary_unary_rpc_method_handler(service.export),
    })
    server.add_generic_rpc_handlers((handler,))
    try:
        bound = server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    except RuntimeError as e:
        raise OtelInsightsError(f"cannot listen for OTLP/gRPC on {host}:{port}: {e}") from None
    if bound == 0:
        raise OtelInsightsError(f"cannot listen for OTLP/gRPC on {host}:{port}")
    await server.start()
    return server, bound
