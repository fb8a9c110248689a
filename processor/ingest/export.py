"""What the OTLP receivers need of the gateway: the export path and its limits (a Protocol)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from processor.ingest.stats import GatewayStats


class Exporter(Protocol):
    stats: GatewayStats
    max_request_size: int
    retry_after_s: int  # whole seconds, for Retry-After and RetryInfo
    shutdown_timeout_s: float

    async def handle(self, body: bytes, decode: Callable[[bytes], TracesData]) -> int:
        """Decode one request body and export it; returns the number of spans."""
        ...
