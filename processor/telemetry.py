"""Self metrics and collector-compatible service-graph series, declared once.

`METRICS` is the single declaration: it builds the prometheus-client objects and the
README's metrics table (a test checks both agree). The `traces_service_graph_*` series are
served by a custom collector fed with numpy bucket counts per edge batch, because
prometheus-client's Histogram only observes one value per Python call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from processor.config.components import ServiceGraphConfig
from processor.windows.cardinality import OVERFLOW

# servicegraphconnector's default latency histogram buckets (seconds).
SERVICE_GRAPH_BUCKETS_S = (0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0,
                           1.4, 2.0, 5.0, 10.0, 15.0)
EDGE_LABELS = ("client", "server", "connection_type")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    component: str = "pipeline"  # the process part that serves it: pipeline | gateway
    buckets: tuple[float, ...] = ()  # histograms only (seconds)


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("otel_insights_records_total", "counter", "Kafka records consumed", ("topic",)),
    MetricSpec("otel_insights_spans_total", "counter", "Spans decoded"),
    MetricSpec("otel_insights_dlq_records_total", "counter", "Records sent to the dead-letter topic", ("reason",)),
    MetricSpec("otel_insights_rekeyed_records_total", "counter", "Input records re-keyed by trace id through the internal topic"),
    MetricSpec("otel_insights_unpaired_spans_total", "counter", "Spans that expired from the pairing store without a partner", ("kind",)),
    MetricSpec("otel_insights_expired_edges_total", "counter", "Edges completed by expiry as virtual nodes", ("kind",)),
    MetricSpec("otel_insights_evicted_spans_total", "counter", "Spans evicted early because store.max_items was reached"),
    MetricSpec("otel_insights_cardinality_overflow_total", "counter", "Contributions counted under the otel.metric.overflow entity because a cardinality limit was reached: span (a service's calls) and edge (processors.windows.cardinality_limit, per window and input partition), series (processors.servicegraph.metrics_cardinality_limit)", ("what",)),
    MetricSpec("otel_insights_rejected_spans_total", "counter", "Spans rejected because they end too far ahead of the wall clock or too long ago", ("reason",)),
    MetricSpec("otel_insights_rekey_replays_skipped_total", "counter", "Re-keyed records whose spans were skipped, wholly or in part, because their origin records were already applied (a replay)"),
    MetricSpec("otel_insights_late_spans_total", "counter", "Spans and edges that arrived after their window closed: corrected (window re-finalised), replayed (already applied) or dropped", ("what", "action")),
    MetricSpec("otel_insights_pairing_store_items", "gauge", "Spans waiting in the pairing store", ("partition",)),
    MetricSpec("otel_insights_window_close_lag_seconds", "gauge", "Wall time minus the end of the newest window finalised"),
    MetricSpec("otel_insights_windows_finalized_total", "counter", "Final rows written", ("table",)),
    MetricSpec("otel_insights_clickhouse_errors_total", "counter", "Failed ClickHouse calls by operation (read, write) and outcome: retried (transient, within exporters.clickhouse.retry_on_failure) or failed (rejected, or retries used up: the worker stops; for the query API, the client gets the error)", ("operation", "outcome")),
    MetricSpec("otel_insights_anomalies_total", "counter", "Anomalous entity windows detected", ("severity", "entity_type")),
    MetricSpec("otel_insights_anomaly_judged_window_seconds", "gauge", "Start of the newest window the detectors have judged (epoch seconds)"),
    MetricSpec("otel_insights_anomaly_corrected_windows_total", "counter", "Windows re-finalised by late spans after the detectors judged them (their verdicts are not re-run)"),
    MetricSpec("otel_insights_anomaly_models", "gauge", "Per-entity autoencoder models in use"),
    MetricSpec("otel_insights_anomaly_model_trainings_total", "counter", "Scheduled autoencoder trainings", ("outcome",)),
    MetricSpec("otel_insights_feedback_total", "counter", "Feedback given on insights in the web UI, by verdict (helpful, false_alarm)", ("verdict",)),
    MetricSpec("otel_insights_ui_subscribers", "gauge", "Browsers listening to the web UI's live updates"),
    MetricSpec("otel_insights_training_excluded_windows_total", "counter", "Entity windows kept out of autoencoder training, by reason: anomaly (flagged) or false_alarm (feedback on its incident)", ("reason",)),
    MetricSpec("otel_insights_dashboards_total", "counter", "Dashboard spec versions published on the specs topic, by kind (incident, service, overview) and generator (rules or model)", ("kind", "generator")),
    MetricSpec("otel_insights_dashboard_errors_total", "counter", "Dashboard specs not published because they failed their checks (logged)"),
    MetricSpec("otel_insights_insights_total", "counter", "Insight versions published on the insights topic, by narrator (template or model) and change (opened, updated, escalated, resolved)", ("narrator", "change")),
    MetricSpec("otel_insights_insight_errors_total", "counter", "Incidents whose insight could not be built (logged; tried again on its next anomaly)"),
    MetricSpec("otel_insights_insights_open", "gauge", "Incidents whose insight is open"),
    MetricSpec("otel_insights_insight_publish_lag_seconds", "histogram", "Wall time from an incident window's end to the insight version that includes it being published", (), "pipeline", (1, 2, 5, 10, 20, 30, 60, 120, 300, 600)),
    MetricSpec("otel_insights_llm_requests_total", "counter", "Model requests by model and outcome (ok, error, timeout)", ("model", "outcome")),
    MetricSpec("otel_insights_llm_request_seconds", "histogram", "Model request latency", ("model",), "pipeline", (0.25, 0.5, 1, 2, 5, 10, 20, 40, 80)),
    MetricSpec("otel_insights_llm_tokens_total", "counter", "Model tokens by kind (prompt, completion)", ("model", "kind")),
    MetricSpec("otel_insights_llm_cost_usd_total", "counter", "Model spend in USD, from litellm's cost tracking", ("model",)),
    MetricSpec("otel_insights_llm_budget_remaining_usd", "gauge", "What is left of today's (UTC) narrator budget"),
    MetricSpec("otel_insights_llm_fallbacks_total", "counter", "Times a task moved past a model: failed (to the next model, the template or the rules), budget (spent), ungrounded (a narrative, template after a failed repair), invalid_spec (a dashboard, rules after a failed repair)", ("reason",)),
    MetricSpec("otel_insights_llm_grounding_total", "counter", "Model narratives by grounding outcome: grounded, repaired (after one repair), failed", ("outcome",)),
    MetricSpec("otel_insights_llm_cache_hits_total", "counter", "Narratives served from the cache (equal facts, no model call)"),
    MetricSpec("otel_insights_notifications_total", "counter", "Insight notifications by receiver and outcome (sent, failed after retries or refused, dropped from a full queue)", ("notifier", "outcome")),
    MetricSpec("otel_insights_stage_busy_seconds_total", "counter", "Wall time spent in each processing step (stage1, stage2, detection; insights: stage 3 with its awaits); detection_io: ClickHouse time of detection's store calls", ("step",)),
    MetricSpec("otel_insights_consumer_lag_records", "gauge", "Input records not yet consumed", ("topic", "partition")),
    MetricSpec("otel_insights_gateway_requests_total", "counter", "OTLP export requests by protocol (grpc, http/protobuf, http/json) and outcome", ("protocol", "outcome"), "gateway"),
    MetricSpec("otel_insights_gateway_spans_total", "counter", "Spans in requests acknowledged to clients", (), "gateway"),
    MetricSpec("otel_insights_gateway_records_total", "counter", "Kafka records acknowledged (one per trace)", (), "gateway"),
    MetricSpec("otel_insights_gateway_received_bytes_total", "counter", "Request bytes received (after HTTP content decoding)", (), "gateway"),
    MetricSpec("otel_insights_gateway_produced_bytes_total", "counter", "Record value bytes acknowledged by Kafka (before Kafka compression)", (), "gateway"),
    MetricSpec("traces_service_graph_request_total", "counter", "Requests between two nodes (servicegraph connector compatible)", EDGE_LABELS),
    MetricSpec("traces_service_graph_request_failed_total", "counter", "Failed requests between two nodes", EDGE_LABELS),
    MetricSpec("traces_service_graph_request_server_seconds", "histogram", "Server-side request duration", EDGE_LABELS),
    MetricSpec("traces_service_graph_request_client_seconds", "histogram", "Client-side request duration", EDGE_LABELS),
)


class ServiceGraphSeries:
    """Accumulates the connector-compatible series from edge batches, vectorised.

    A series is keyed by its label values, in the order of ``label_names`` (any number of
    them). Bounded two ways: a series not updated for ``expiration_s`` is dropped (the
    connector's `metrics_expiration`; 0 keeps series forever), and at most ``max_series``
    live at once (0: no limit); an edge that would add one more is counted in the overflow
    series instead, whose every label is `otel.metric.overflow` (the SDK's cardinality
    limit does the same with its `otel.metric.overflow` attribute).
    """

    def __init__(self, label_names: tuple[str, ...] = EDGE_LABELS, expiration_s: float = 0.0, max_series: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label_names = label_names
        self.expiration_s = expiration_s
        self.max_series = max_series
        self.clock = clock
        self.overflow = tuple(OVERFLOW for _ in label_names)
        # per series: [requests, failed, srv buckets(17) , srv sum, srv count, cli buckets, cli sum, cli count]
        self._edges: dict[tuple[str, ...], np.ndarray] = {}
        self._seen: dict[tuple[str, ...], float] = {}  # when each series was last updated
        self._next_expiry = 0.0

    _NB = len(SERVICE_GRAPH_BUCKETS_S) + 1

    def __len__(self) -> int:
        return len(self._edges)

    def observe(self, labels: Sequence[tuple[str, ...]], inverse: np.ndarray, failed: np.ndarray,
                server_s: np.ndarray, client_s: np.ndarray) -> int:
        """Add one batch: `labels[inverse[i]]` is edge i's label set. Returns how many edges
        went to the overflow series."""
        nb = self._NB
        width = 2 + 2 * (nb + 2)
        n = len(labels)
        acc = np.zeros((n, width))
        np.add.at(acc[:, 0], inverse, 1)
        np.add.at(acc[:, 1], inverse, failed.astype(np.float64))
        for col, vals in ((2, server_s), (2 + nb + 2, client_s)):
            has = ~np.isnan(vals)
            b = np.searchsorted(SERVICE_GRAPH_BUCKETS_S, vals[has], side="left")
            np.add.at(acc, (inverse[has], col + b), 1)
            np.add.at(acc[:, col + nb], inverse[has], vals[has])
            np.add.at(acc[:, col + nb + 1], inverse[has], 1)
        now = self.clock()
        if now >= self._next_expiry:
            self.expire(now)
        folded = 0
        for i, lab in enumerate(labels):
            cur = self._edges.get(lab)
            if cur is None and self.max_series and len(self._edges) >= self.max_series:
                folded += int(acc[i, 0])
                lab = self.overflow
                cur = self._edges.get(lab)
            self._edges[lab] = acc[i] if cur is None else cur + acc[i]
            self._seen[lab] = now
        return folded

    def expire(self, now: float | None = None) -> None:
        """Drop the series not updated within expiration_s."""
        if not self.expiration_s:
            return
        now = self.clock() if now is None else now
        cutoff = now - self.expiration_s
        for lab in [lab for lab, t in self._seen.items() if t < cutoff]:
            del self._edges[lab], self._seen[lab]
        self._next_expiry = now + min(1.0, self.expiration_s / 10)

    def collect(self) -> Iterator[Metric]:
        self.expire()
        nb = self._NB
        spec = {m.name: m for m in METRICS}
        names = self.label_names
        req = CounterMetricFamily("traces_service_graph_request",
                                  spec["traces_service_graph_request_total"].help, labels=names)
        fail = CounterMetricFamily("traces_service_graph_request_failed",
                                   spec["traces_service_graph_request_failed_total"].help, labels=names)
        hists = [HistogramMetricFamily(n, spec[n].help, labels=names)
                 for n in ("traces_service_graph_request_server_seconds",
                           "traces_service_graph_request_client_seconds")]
        for lab, a in list(self._edges.items()):
            req.add_metric(lab, a[0])
            fail.add_metric(lab, a[1])
            for h, col in zip(hists, (2, 2 + nb + 2), strict=True):
                cum = np.cumsum(a[col:col + nb])
                buckets = [(str(b), float(c)) for b, c in zip(SERVICE_GRAPH_BUCKETS_S, cum[:-1], strict=True)]
                buckets.append(("+Inf", float(cum[-1])))
                h.add_metric(lab, buckets, float(a[col + nb]))
        yield req
        yield fail
        yield from hists


def service_graph_series(cfg: ServiceGraphConfig, clock: Callable[[], float] = time.monotonic
                         ) -> ServiceGraphSeries:
    """The series as `processors.servicegraph` bounds them."""
    return ServiceGraphSeries(expiration_s=cfg.metrics_expiration.seconds,
                              max_series=cfg.metrics_cardinality_limit, clock=clock)


class Metrics:
    """The metric objects of one process part (`component` of METRICS) on one registry.

    A worker that also runs the gateway has two, one per component, on the same registry.
    """

    def __init__(self, registry: CollectorRegistry | None = None, component: str = "pipeline",
                 service_graph: ServiceGraphSeries | None = None) -> None:
        """``service_graph``: the series' bounds (processors.servicegraph); default unbounded."""
        self.registry = registry or CollectorRegistry()
        self.m: dict[str, Counter | Gauge | Histogram] = {}
        for spec in METRICS:
            if spec.component != component or spec.name.startswith("traces_service_graph_"):
                continue
            if spec.kind == "histogram":
                self.m[spec.name] = Histogram(spec.name, spec.help, spec.labels, registry=self.registry,
                                              buckets=spec.buckets)
                continue
            cls = Counter if spec.kind == "counter" else Gauge
            # prometheus-client appends _total itself.
            name = spec.name[:-6] if spec.kind == "counter" else spec.name
            self.m[spec.name] = cls(name, spec.help, spec.labels, registry=self.registry)
        self.service_graph = ServiceGraphSeries() if service_graph is None else service_graph
        if component == "pipeline":
            self.registry.register(self.service_graph)  # type: ignore[arg-type]

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        if amount:
            metric = self.m[name]
            (metric.labels(**labels) if labels else metric).inc(amount)  # type: ignore[union-attr]

    def observe(self, name: str, value: float, **labels: str) -> None:
        metric = self.m[name]
        (metric.labels(**labels) if labels else metric).observe(value)  # type: ignore[union-attr]

    def set(self, name: str, value: float, **labels: str) -> None:
        metric = self.m[name]
        (metric.labels(**labels) if labels else metric).set(value)  # type: ignore[union-attr]


class Namespaced:
    """What /metrics serves: every metric of ``registry``, named `<namespace>_<name>` (the
    collector's prometheus exporter `namespace`); unchanged when the namespace is empty."""

    def __init__(self, registry: CollectorRegistry, namespace: str = "") -> None:
        self.registry = registry
        self.prefix = f"{namespace}_" if namespace else ""

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            if not self.prefix:
                yield family
                continue
            out = Metric(self.prefix + family.name, family.documentation, family.type, family.unit)
            out.samples = [s._replace(name=self.prefix + s.name) for s in family.samples]
            yield out


def metrics_table() -> str:
    """The README's metrics table, generated from METRICS."""
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for s in METRICS:
        lines.append(f"| `{s.name}` | {s.kind} | {', '.join(s.labels) or '-'} | {s.help} |")
    return "\n".join(lines)
