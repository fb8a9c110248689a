"""OTLP/HTTP receiver: POST /v1/traces (protobuf or JSON, optionally gzip) on aiohttp."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from processor.errors import DecodeError, OtelInsightsError
from processor.ingest.exceptions import (
    BufferFull,
    ExportRefused,
    KafkaUnavailable,
    RequestTooLarge,
    UnsupportedMediaType,
    outcome_of,
)
from processor.ingest.export import Exporter
from processor.otlp.parse_json import parse_otlp_json

log = logging.getLogger(__name__)

PATH = "/v1/traces"
PROTOBUF, JSON = "application/x-protobuf", "application/json"
# aiohttp decodes these Content-Encodings itself; anything else would reach the decoder
# as compressed bytes, so it is refused up front.
_ENCODINGS = frozenset({"", "identity", "gzip", "deflate"})
# (HTTP status, google.rpc.Code) per refusal; OTLP/HTTP clients retry 429/502/503/504.
_STATUS: list[tuple[type[Exception], int, int]] = [
    (DecodeError, 400, 3),  # INVALID_ARGUMENT
    (RequestTooLarge, 413, 8),  # RESOURCE_EXHAUSTED
    (UnsupportedMediaType, 415, 3),
    (BufferFull, 429, 8),
    (KafkaUnavailable, 503, 14),  # UNAVAILABLE
    (ExportRefused, 400, 3),  # RecordTooLarge and any other permanent refusal
]


def _status_of(err: Exception) -> tuple[int, int]:
    for kind, http_status, rpc_code in _STATUS:
        if isinstance(err, kind):
            return http_status, rpc_code
    return 500, 13  # INTERNAL


async def _read_body(request: web.Request, limit: int, encoded: bool) -> bytes:
    """Reads the (already content-decoded) body, refusing more than `limit` decoded bytes.

    Reading in chunks bounds memory for compressed bodies that inflate far beyond their
    Content-Length.
    """
    if not encoded and request.content_length is not None and request.content_length > limit:
        raise RequestTooLarge(f"request of {request.content_length} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(f"request body exceeds {limit} bytes")
            chunks.append(chunk)
    except (HttpProcessingError, RequestPayloadError) as e:  # e.g. a corrupt gzip stream
        raise DecodeError(f"cannot read request body: {e}") from None
    return b"".join(chunks)


class _TracesHandler:
    def __init__(self, gateway: Exporter) -> None:
        self.gateway = gateway

    def _reply(self, content_type: str, err: Exception | None) -> web.Response:
        if err is None:
            body = b"{}" if content_type == JSON else ExportTraceServiceResponse().SerializeToString()
            return web.Response(body=body, content_type=content_type)
        http_status, rpc_code = _status_of(err)
        if http_status == 500:
            log.error("OTLP/HTTP export failed", exc_info=err)
        status = Status(code=rpc_code, message=str(err))
        body = (json_format.MessageToJson(status).encode() if content_type == JSON
                else status.SerializeToString())
        headers = {}
        if isinstance(err, (BufferFull, KafkaUnavailable)):
            headers["Retry-After"] = str(self.gateway.retry_after_s)
        return web.Response(status=http_status, body=body, content_type=content_type,
                            headers=headers)

    async def __call__(self, request: web.Request) -> web.Response:
        content_type = request.content_type
        decode: Callable[[bytes], TracesData]
        if content_type == PROTOBUF:
            protocol, decode = "http/protobuf", TracesData.FromString
        elif content_type == JSON:
            protocol, decode = "http/json", parse_otlp_json
        else:
            self.gateway.stats.request("http", "unsupported")
            raise web.HTTPUnsupportedMediaType(
                text=f"Content-Type must be {PROTOBUF} or {JSON}, not {content_type!r}")
        err: Exception | None = None
        try:
            encoding = request.headers.get("Content-Encoding", "").strip().lower()
            if encoding not in _ENCODINGS:
                raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported")
            body = await _read_body(request, self.gateway.max_request_size,
                                   encoded=encoding not in ("", "identity"))
            await self.gateway.handle(body, decode)
        except Exception as e:
            err = e
        self.gateway.stats.request(protocol, outcome_of(err))
        return self._reply(content_type, err)


async def start_http(gateway: Exporter, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Starts the HTTP server on the running loop; returns its runner and the bound port."""
    # client_max_size is left at aiohttp's default: _read_body enforces max_request_size.
    app = web.Application()
    app.router.add_post(PATH, _TracesHandler(gateway))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=gateway.shutdown_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise OtelInsightsError(f"cannot listen for OTLP/HTTP on {host}:{port}: {e}") from None
    bound = runner.addresses[0][1]
    return runner, int(bound)
