"""Gateway self-telemetry: plain counters for tests and the CLI, mirrored to prometheus_client."""

from __future__ import annotations

from collections import Counter as _Tally
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter

# Declared once so the README metrics table and the exporter cannot drift apart.
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "otel_insights_gateway_requests_total": (
        "OTLP export requests by protocol (grpc, http/protobuf, http/json) and outcome",
        ("protocol", "outcome"),
    ),
    "otel_insights_gateway_spans_total": ("Spans in requests acknowledged to clients", ()),
    "otel_insights_gateway_records_total": ("Kafka records acknowledged (one per trace)", ()),
    "otel_insights_gateway_received_bytes_total": (
        "Request bytes received (after HTTP content decoding)", ()),
    "otel_insights_gateway_produced_bytes_total": (
        "Record value bytes acknowledged by Kafka (before Kafka compression)", ()),
}


@dataclass
class GatewayStats:
    """Counters since start; `requests` is keyed by (protocol, outcome), outcome "ok" on success.

    Every increment also goes to the prometheus Counters on `registry` (a private registry
    when None, so several gateways can live in one process).
    """

    registry: CollectorRegistry | None = None
    requests: _Tally[tuple[str, str]] = field(default_factory=_Tally)
    spans: int = 0
    records: int = 0
    received_bytes: int = 0
    produced_bytes: int = 0

    def __post_init__(self) -> None:
        if self.registry is None:
            self.registry = CollectorRegistry()
        self._prom = {
            name: Counter(name, doc, labels, registry=self.registry)
            for name, (doc, labels) in METRICS.items()
        }

    def request(self, protocol: str, outcome: str) -> None:
        self.requests[(protocol, outcome)] += 1
        self._prom["otel_insights_gateway_requests_total"].labels(protocol, outcome).inc()

    def received(self, n_bytes: int) -> None:
        self.received_bytes += n_bytes
        self._prom["otel_insights_gateway_received_bytes_total"].inc(n_bytes)

    def produced(self, spans: int, records: int, n_bytes: int) -> None:
        self.spans += spans
        self.records += records
        self.produced_bytes += n_bytes
        self._prom["otel_insights_gateway_spans_total"].inc(spans)
        self._prom["otel_insights_gateway_records_total"].inc(records)
        self._prom["otel_insights_gateway_produced_bytes_total"].inc(n_bytes)

    def count(self, outcome: str, protocol: str | None = None) -> int:
        """Requests with `outcome`, over all protocols unless one is given."""
        return sum(n for (p, o), n in self.requests.items()
                   if o == outcome and (protocol is None or p == protocol))
