"""Gateway self-telemetry: plain counters for tests and the CLI, mirrored to its declared metrics."""

from __future__ import annotations

from collections import Counter as _Tally
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from processor.telemetry import Metrics


@dataclass
class GatewayStats:
    """Counters since start; `requests` is keyed by (protocol, outcome), outcome "ok" on success.

    Every increment also goes to the gateway's metrics (`processor.telemetry.METRICS`) on
    `registry` (a private registry when None, so several gateways can live in one process).
    """

    registry: CollectorRegistry | None = None
    requests: _Tally[tuple[str, str]] = field(default_factory=_Tally)
    spans: int = 0
    records: int = 0
    received_bytes: int = 0
    produced_bytes: int = 0

    def __post_init__(self) -> None:
        self._metrics = Metrics(self.registry, component="gateway")
        self.registry = self._metrics.registry

    def request(self, protocol: str, outcome: str) -> None:
        self.requests[(protocol, outcome)] += 1
        self._metrics.inc("otel_insights_gateway_requests_total", protocol=protocol, outcome=outcome)

    def received(self, n_bytes: int) -> None:
        self.received_bytes += n_bytes
        self._metrics.inc("otel_insights_gateway_received_bytes_total", n_bytes)

    def produced(self, spans: int, records: int, n_bytes: int) -> None:
        self.spans += spans
        self.records += records
        self.produced_bytes += n_bytes
        self._metrics.inc("otel_insights_gateway_spans_total", spans)
        self._metrics.inc("otel_insights_gateway_records_total", records)
        self._metrics.inc("otel_insights_gateway_produced_bytes_total", n_bytes)

    def count(self, outcome: str, protocol: str | None = None) -> int:
        """Requests with `outcome`, over all protocols unless one is given."""
        return sum(n for (p, o), n in self.requests.items()
                   if o == outcome and (protocol is None or p == protocol))
