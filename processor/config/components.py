"""Frozen pydantic models for every component type, with the collector's key names and defaults."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    model_validator,
)

from processor.config.base import Frozen, NonEmptyStr
from processor.config.duration import Duration
from processor.config.kafka import (
    HeaderExtraction,
    KafkaAuth,
    KafkaTLS,
    client_options,
    sarama_keys,
)
from processor.errors import ConfigError

log = logging.getLogger("otel_insights.config")
Encoding = Literal["otlp_proto", "otlp_json"]
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def split_host_port(endpoint: str) -> tuple[str, int]:
    """'127.0.0.1:4317' -> ('127.0.0.1', 4317); '[::]:4317' -> ('::', 4317)."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid endpoint {endpoint!r} (use host:port, e.g. 127.0.0.1:4317)")
    return host.strip("[]"), int(port)


def _check_host_port(endpoint: str) -> str:
    split_host_port(endpoint)
    return endpoint


def _split_brokers(value: object) -> object:
    """Accept a list or a comma-separated string; `${env:KAFKA_BROKERS}` often holds 'a:9092,b:9092'."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return value  # let pydantic report the type error
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def _check_identifier(name: str) -> str:
    # Interpolated into DDL, so it must be a plain identifier.
    if name and not _IDENTIFIER_RE.fullmatch(name):
        raise ValueError(f"invalid name {name!r} (letters, digits and _ only)")
    return name


HostPort = Annotated[str, AfterValidator(_check_host_port)]
Brokers = Annotated[tuple[str, ...], BeforeValidator(_split_brokers)]
Identifier = Annotated[str, AfterValidator(_check_identifier)]
Positive = Annotated[int, Field(gt=0)]
Attributes = tuple[NonEmptyStr, ...]


def _positive(value: Duration) -> Duration:
    if value.ns <= 0:
        raise ValueError("must be greater than 0")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


# --- receivers -------------------------------------------------------------------------


def _not_empty(items: tuple[object, ...]) -> tuple[object, ...]:
    # An AfterValidator, not min_length: a bad item then reports once, not also "empty".
    if not items:
        raise ValueError("must not be empty")
    return items


def _check_topic(name: str) -> str:
    if name.startswith("^"):
        raise ValueError(f"regex topics ({name!r}) are not supported: list the topics")
    return name


class KafkaTraces(Frozen):
    """`traces`: the topics to read (kafkareceiver's `topics`; `topic` is its deprecated
    spelling, accepted as one topic) and their encoding."""

    topics: Annotated[tuple[Annotated[NonEmptyStr, AfterValidator(_check_topic)], ...],
                      AfterValidator(_not_empty)] = ("otlp_spans",)
    encoding: Encoding = "otlp_proto"

    @model_validator(mode="before")
    @classmethod
    def _deprecated_topic(cls, data: object) -> object:
        if isinstance(data, dict) and "topic" in data:
            if "topics" in data:
                raise ValueError("set topics (topic is its deprecated spelling), not both")
            log.warning("receivers.kafka.traces.topic is deprecated (as in the collector since "
                        "v0.142.0): write traces.topics: [%s]", data["topic"])
            data = {**data, "topics": [data["topic"]]}
            del data["topic"]
        return data

    @model_validator(mode="after")
    def _distinct(self) -> KafkaTraces:
        if len(set(self.topics)) != len(self.topics):
            raise ValueError("topics: a topic is listed twice")
        return self


class KafkaReceiver(Frozen):
    """Consumes OTLP traces that collectors' kafka exporters write."""

    brokers: Brokers = Field(default=("127.0.0.1:9092",), min_length=1)
    group_id: NonEmptyStr = "otel-insights"
    client_id: NonEmptyStr = "otel-insights"
    # The collector's default; only matters for a consumer group with no committed offset,
    # and only for the input topics (internal topics are always read from their start).
    initial_offset: Literal["earliest", "latest"] = "latest"
    session_timeout: PositiveDuration = Duration.parse("10s")
    heartbeat_interval: PositiveDuration = Duration.parse("3s")
    tls: KafkaTLS | None = None
    auth: KafkaAuth = KafkaAuth()
    header_extraction: HeaderExtraction = HeaderExtraction()
    traces: KafkaTraces = KafkaTraces()
    partitions: Positive = 3  # used only when the pipeline creates topics itself
    max_batch_records: Positive = 500
    max_batch_wait: PositiveDuration = Duration.parse("200ms")
    # A record larger than this once its payload compression is undone goes to the DLQ
    # (reason too_large), having been decompressed no further: a compression bomb costs this.
    max_record_bytes: Positive = 16 * 1024 * 1024
    # auto: re-key through rekey_topic when records are not keyed by a 32-char hex trace id.
    rekey: Literal["auto", "always", "never"] = "auto"
    rekey_topic: NonEmptyStr = "otel-insights-rekeyed"
    partials_topic: NonEmptyStr = "otel-insights-partials"

    @model_validator(mode="before")
    @classmethod
    def _sarama_keys(cls, data: object) -> object:
        return sarama_keys(data)

    @model_validator(mode="after")
    def _consistent(self) -> KafkaReceiver:
        if self.heartbeat_interval >= self.session_timeout:
            raise ValueError("heartbeat_interval must be shorter than session_timeout")
        clash = {self.rekey_topic, self.partials_topic} & set(self.traces.topics)
        if clash:
            raise ValueError(f"traces.topics: {sorted(clash)} is an internal topic of the pipeline")
        return self

    def client_options(self) -> dict[str, Any]:
        """Security options (tls, auth.sasl) for every aiokafka client of the pipeline."""
        return client_options(self.tls, self.auth)


def _enabled_if_null(value: object) -> object:
    # Collector style: `grpc:` with no value enables the protocol with its defaults.
    return {} if value is None else value


class GrpcProtocol(Frozen):
    endpoint: HostPort = "127.0.0.1:4317"

    @property
    def host_port(self) -> tuple[str, int]:
        return split_host_port(self.endpoint)


class HttpProtocol(Frozen):
    endpoint: HostPort = "127.0.0.1:4318"

    @property
    def host_port(self) -> tuple[str, int]:
        return split_host_port(self.endpoint)


class OtlpProtocols(Frozen):
    """An omitted protocol is disabled; `grpc: {}` or `grpc:` enables it on its default port."""

    grpc: Annotated[GrpcProtocol | None, BeforeValidator(_enabled_if_null)] = None
    http: Annotated[HttpProtocol | None, BeforeValidator(_enabled_if_null)] = None

    @model_validator(mode="after")
    def _at_least_one(self) -> OtlpProtocols:
        if self.grpc is None and self.http is None:
            raise ValueError("enable at least one of grpc, http")
        return self


class Backoff(Frozen):
    """Reconnect delays: doubling from initial_interval up to max_interval (the collector's names)."""

    initial_interval: PositiveDuration = Duration.parse("200ms")
    max_interval: PositiveDuration = Duration.parse("5s")

    @model_validator(mode="after")
    def _ordered(self) -> Backoff:
        if self.max_interval < self.initial_interval:
            raise ValueError("max_interval must be >= initial_interval")
        return self


class RetryOnFailure(Backoff):
    """`exporters.clickhouse.retry_on_failure` (the collector's exporterhelper names).

    Only transient failures are retried (unreachable, timed out, overloaded, too many
    parts; see processor.storage.retry), waiting initial_interval, doubling up to
    max_interval, for at most max_elapsed_time. A rejected statement is never retried.
    Either way the worker then stops with one line: nothing past the failure is committed,
    so the restart replays it.
    """

    enabled: bool = True
    initial_interval: PositiveDuration = Duration.parse("1s")
    max_interval: PositiveDuration = Duration.parse("30s")
    max_elapsed_time: PositiveDuration = Duration.parse("5m")


class GatewayProducer(Frozen):
    """`receivers.otlp.producer`: the gateway's Kafka producer (acks=all, always)."""

    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "gzip"
    timeout: PositiveDuration = Duration.parse("30s")  # per produce request; a client waits at most 3x
    linger: Duration = Duration.parse("5ms")
    idempotent: bool = False
    reconnect: Backoff = Backoff()  # while Kafka is unreachable at start


class OtlpReceiver(Frozen):
    """The OTLP gateway: accepts OTLP from SDKs and writes it, keyed by trace id, to Kafka."""

    protocols: OtlpProtocols
    max_request_size: Positive = 4 * 1024 * 1024  # bytes
    max_buffered_requests: Positive = 1000
    # Empty = inherit receivers.kafka.traces.topic / .encoding; resolved at load.
    topic: str = ""
    encoding: Encoding | Literal[""] = ""
    retry_after: PositiveDuration = Duration.parse("5s")  # what refused clients are told to wait
    shutdown_timeout: Duration = Duration.parse("30s")  # for in-flight requests at stop
    producer: GatewayProducer = GatewayProducer()


# --- processors ------------------------------------------------------------------------


class StoreConfig(Frozen):
    ttl: PositiveDuration = Duration.parse("2s")  # of event time, like the connector's store.ttl
    max_items: Positive = 1000


# servicegraphconnector's default latency_histogram_buckets.
LATENCY_BUCKETS = tuple(Duration.parse(b) for b in (
    "2ms", "4ms", "6ms", "8ms", "10ms", "50ms", "100ms", "200ms", "400ms", "800ms", "1s",
    "1400ms", "2s", "5s", "10s", "15s"))


def label_name(attribute: str) -> str:
    """A Prometheus label name for an attribute, as the collector's prometheus exporter
    writes it: every character outside [a-zA-Z0-9_] becomes '_'."""
    return re.sub(r"[^A-Za-z0-9_]", "_", attribute)


class ServiceGraphConfig(Frozen):
    """`processors.servicegraph`: the servicegraph connector's keys and meaning."""

    store: StoreConfig = StoreConfig()
    # First present value names a virtual node (an expired client's server); empty: no
    # virtual-node edges at all, as the connector (expired spans are only counted).
    virtual_node_peer_attributes: Attributes = ("peer.service", "db.name", "db.system")
    # Adds the label virtual_node="client"|"server" to virtual-node edges' series.
    virtual_node_extra_label: bool = False
    # A CLIENT (or PRODUCER) span with one of these (resource first, then span attributes,
    # key by key) is a database call; the first present value names the database node.
    database_name_attributes: Attributes = Field(default=("db.name",), min_length=1)
    # Extra edge labels: client_<attribute> from the client span, server_<attribute> from
    # the server span (resource attributes first, then span attributes).
    dimensions: Attributes = ()
    # A traces_service_graph_* series not updated for this long is dropped, as the
    # connector's metrics_expiration does (0 keeps series forever, the connector's default;
    # ours bounds memory when edges come and go).
    metrics_expiration: Duration = Duration.parse("5m")
    # At most this many series at once; an edge past it is counted in the overflow series
    # (every label `otel.metric.overflow`). 0: no limit.
    metrics_cardinality_limit: Annotated[int, Field(ge=0)] = 10_000
    latency_histogram_buckets: Annotated[tuple[PositiveDuration, ...],
                                         AfterValidator(_not_empty)] = LATENCY_BUCKETS

    @model_validator(mode="after")
    def _check(self) -> ServiceGraphConfig:
        b = [d.ns for d in self.latency_histogram_buckets]
        if any(x >= y for x, y in zip(b, b[1:], strict=False)):
            raise ValueError("latency_histogram_buckets must be strictly increasing")
        labels = [label_name(d) for d in self.dimensions]
        if len(set(labels)) != len(labels):
            raise ValueError(f"dimensions {list(self.dimensions)} repeat a label name once "
                             "written as Prometheus labels ([^A-Za-z0-9_] become '_')")
        return self

    @property
    def bucket_bounds_s(self) -> tuple[float, ...]:
        return tuple(d.ns / 1e9 for d in self.latency_histogram_buckets)


class HealthConfig(Frozen):
    """The one health definition used by the UI, the topics and Grafana."""

    min_requests: Positive = 10  # below this a window is insufficient_data
    error_rate_degraded: float = Field(default=0.01, gt=0, le=1)
    error_rate_critical: float = Field(default=0.05, gt=0, le=1)
    latency_degraded_ratio: float = Field(default=1.5, gt=1)  # p95 / baseline p95
    latency_critical_ratio: float = Field(default=3.0, gt=1)
    baseline_windows: Positive = 30

    @model_validator(mode="after")
    def _ordered(self) -> HealthConfig:
        if self.error_rate_critical < self.error_rate_degraded:
            raise ValueError("error_rate_critical must be >= error_rate_degraded")
        if self.latency_critical_ratio < self.latency_degraded_ratio:
            raise ValueError("latency_critical_ratio must be >= latency_degraded_ratio")
        return self


class WindowsConfig(Frozen):
    size: PositiveDuration = Duration.parse("60s")
    allowed_lateness: Duration = Duration.parse("30s")  # 0 is allowed: close on the watermark
    idle_timeout: PositiveDuration = Duration.parse("10s")
    # A span or edge for a window that already closed: "correct" adds it to the window's
    # partials as a correction row and re-finalises the window (a new version of its final
    # row); "drop" counts it and discards it. Corrections reach back at most
    # `correction_horizon` of event time behind the partition's watermark (and never past
    # exporters.clickhouse.ttl, whose rows are gone); older late data is counted and dropped.
    late_spans: Literal["correct", "drop"] = "correct"
    correction_horizon: PositiveDuration = Duration.parse("1h")
    # Event time is bounded by the wall clock: a span ending further ahead (a skewed clock,
    # a bad SDK) or longer ago is rejected and counted, so it cannot close every window or
    # open one in 1970. The age bound is also capped at exporters.clickhouse.ttl when set.
    max_future_skew: PositiveDuration = Duration.parse("5m")
    max_span_age: PositiveDuration = Duration.parse("720h")
    # Per window and input partition, at most this many services and this many edges get
    # rows of their own; the rest are counted under `otel.metric.overflow` (like the SDK's
    # cardinality limit), so a flood of made-up names cannot exhaust memory.
    cardinality_limit: Positive = 2000
    health: HealthConfig = HealthConfig()


# --- exporters -------------------------------------------------------------------------


def _check_clickhouse_endpoint(endpoint: str) -> str:
    hint = "(use chdb://<path> or http(s)://host:port)"
    if endpoint.startswith("chdb://"):
        if not endpoint[len("chdb://") :]:
            raise ValueError(f"chdb endpoint {endpoint!r} has no path {hint}")
        return endpoint
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid endpoint {endpoint!r} {hint}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"invalid port in endpoint {endpoint!r} {hint}") from None
    return endpoint


class ClickHouseExporter(Frozen):
    """`chdb:///abs/path` or `chdb://rel/path` (relative to the working directory) = embedded."""

    endpoint: Annotated[str, AfterValidator(_check_clickhouse_endpoint)]
    database: Annotated[Identifier, Field(min_length=1)] = "otel_insights"
    ttl: Duration = Duration.parse("720h")  # 0 = keep forever
    create_schema: bool = True
    cluster_name: Identifier = ""
    username: str = "default"
    password: str = Field(default="", repr=False)
    async_insert: bool = False
    timeout: PositiveDuration = Duration.parse("10s")
    retry_on_failure: RetryOnFailure = RetryOnFailure()

    @property
    def backend(self) -> Literal["chdb", "http"]:
        return "chdb" if self.endpoint.startswith("chdb://") else "http"

    @property
    def chdb_path(self) -> str:
        """Directory for the embedded engine: 'chdb:///tmp/x' -> '/tmp/x', 'chdb://./x' -> './x'."""
        if self.backend != "chdb":
            raise ConfigError(f"exporters.clickhouse.endpoint {self.endpoint!r} is not chdb://")
        return self.endpoint[len("chdb://") :]


class HttpAuth(Frozen):
    """Bearer-token auth of an HTTP surface that serves data (the query API; the web UI
    reuses it). The token itself never sits in the config: it is read from the environment
    variable named here at start, which must then be set."""

    bearer_token_env: Annotated[str, Field(pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$")] = ""  # empty: no auth


class QueryApi(Frozen):
    """`exporters.prometheus.api`: the named-query API (`/api/query/<name>`) on the same port.
    `otel-insights query` goes through it when the store is an embedded chdb."""

    enabled: bool = True
    auth: HttpAuth = HttpAuth()


class PrometheusExporter(Frozen):
    """`/metrics` and `/healthz` (always open), and the query API, on `endpoint`."""

    endpoint: HostPort = "127.0.0.1:9464"
    # Prefixes every metric name, `<namespace>_`, as the collector's prometheus exporter does.
    namespace: Annotated[str, Field(pattern=r"^([a-zA-Z_][a-zA-Z0-9_]*)?$")] = ""
    api: QueryApi = QueryApi()

    @property
    def host_port(self) -> tuple[str, int]:
        return split_host_port(self.endpoint)


class KafkaExporter(Frozen):
    """Used as the dead-letter topic (`kafka/dlq`): original bytes plus error headers."""

    brokers: Brokers = ()  # empty = the kafka receiver's brokers; resolved at load
    topic: NonEmptyStr = "otel-insights-dlq"


class AutoencoderConfig(Frozen):
    """`processors.anomaly.autoencoder`: per-entity models trained from ClickHouse history."""

    retrain_interval: PositiveDuration = Duration.parse("6h")  # also how stale a stored model may be at start
    training_window: PositiveDuration = Duration.parse("48h")  # newest final windows it trains on
    # History an entity needs before it gets a model: a whole day, so the model has seen the
    # daily cycle (one trained on a morning calls the afternoon peak an anomaly).
    min_history: PositiveDuration = Duration.parse("24h")
    hidden: tuple[Positive, ...] = Field(default=(8, 3), min_length=1)  # encoder widths (mirrored decoder)
    epochs: Positive = 60


class DetectorTuning(Frozen):
    """`processors.anomaly.tuning`: the detectors' inner knobs. The defaults were tuned on
    `evaluate faults` seeds 11 and 16 (the reported figures use seed 1); change them only
    with that evaluation at hand."""

    # Members scoring at least this are listed as factors (never above `threshold`).
    info: float = Field(default=0.3, ge=0, le=1)
    robust_windows: Annotated[int, Field(ge=3)] = 60  # rolling median/MAD window
    ewma_alpha: float = Field(default=0.05, gt=0, le=1)
    seasonal_lags: tuple[Positive, ...] = Field(default=(1, 7), min_length=1)  # in periods (days)
    seasonal_period_windows: Positive | None = None  # None: windows per day
    seasonal_grace_windows: Annotated[int, Field(ge=0)] = 60  # after the first reference
    traffic_direction: Literal["down", "up", "both"] = "down"  # "both" also flags surges
    adapt_after_windows: Positive = 30  # a shift flagged this long becomes the new normal
    # A score in [threshold, severity_critical) alarms only if its metric's previous window
    # scored at least this (0: single windows alarm); a critical score alarms at once.
    confirm_level: float = Field(default=0.3, ge=0, le=1)
    latency_min_scale: float = Field(default=0.05, ge=0)  # latency is scored in log space: ~5%
    rate_min_relative_scale: float = Field(default=0.05, ge=0)
    volume_history_windows: Positive = 30  # baseline volume (median) for the traffic guard
    error_windows: Positive = 60
    error_ratio_unit: float = Field(default=0.003, gt=0)  # an error-ratio rise of this is 1 sigma
    error_span_windows: Positive = 3  # errors are also tested summed over the last 2..span windows
    rate_span_windows: Annotated[int, Field(ge=0)] = 3  # and traffic drops (0 or 1: off) ...
    rate_drop_unit: float = Field(default=0.1, gt=0)  # ... this relative drop as 1 sigma of effect
    min_tail_requests: float = Field(default=1.0, gt=0)  # quantile q scored when n * (1 - q) >= this
    forget_after_windows: Positive = 1440  # state of an entity absent this long is dropped


DAY_MS = 86_400_000


class AnomalyConfig(Frozen):
    """`processors.anomaly`: detection on final windows (runs when listed in the pipeline)."""

    detectors: tuple[Literal["robust", "ewma", "seasonal", "autoencoder"], ...] = Field(
        default=("robust", "ewma", "seasonal"), min_length=1)
    threshold: float = Field(default=0.5, gt=0, lt=1)  # ensemble score that makes an anomaly
    severity_warning: float = Field(default=0.5, gt=0, lt=1)
    severity_critical: float = Field(default=0.8, gt=0, lt=1)
    min_requests: Positive = 20  # fewer calls in a window: latency/error metrics are not scored
    # Traffic is watched once the usual volume reaches this. On the square-root scale Poisson
    # noise is the same size at 10 as at 1,000 requests; at 20, a service sitting at 19-20
    # calls a minute lost 80% of them for 9 windows unseen (evaluate faults, seed 1, 2+2 days).
    min_baseline_requests: Positive = 10
    grace_windows: Positive = 10  # windows an entity must have before it can alarm
    incident_gap_windows: Positive = 2  # consecutive anomalous windows within this gap: one incident
    history: Duration = Duration.parse("24h")  # final windows replayed from ClickHouse at start
    topic: NonEmptyStr = "otel-insights-anomalies"
    # A window in which nothing arrived at all, once every input partition is idle past it,
    # is judged as zero traffic for every tracked entity: a total outage leaves only silence.
    judge_empty_windows: bool = True
    autoencoder: AutoencoderConfig = AutoencoderConfig()  # used when detectors lists autoencoder
    tuning: DetectorTuning = DetectorTuning()

    @model_validator(mode="after")
    def _ordered(self) -> AnomalyConfig:
        if self.severity_critical < self.severity_warning:
            raise ValueError("severity_critical must be >= severity_warning")
        if self.tuning.confirm_level and not self.info <= self.tuning.confirm_level <= self.threshold:
            raise ValueError("tuning.confirm_level must be 0 or between tuning.info and threshold")
        return self

    @property
    def info(self) -> float:
        """The factor level: tuning.info, but never above the threshold."""
        return min(self.tuning.info, self.threshold)

    def severity(self, score: float) -> str | None:
        """critical, warning or info by score; None below the info level."""
        if score >= self.severity_critical:
            return "critical"
        if score >= self.severity_warning:
            return "warning"
        return "info" if score >= self.info else None

    def period_windows(self, window_ms: int) -> int:
        """Windows per seasonal period: tuning.seasonal_period_windows, else a day of them."""
        return self.tuning.seasonal_period_windows or max(1, DAY_MS // window_ms)


class ModelEntry(Frozen):
    """One model of `processors.narrator.models`: a litellm model string and how to reach it."""

    name: Identifier = Field(min_length=1)  # what routes call it
    model: NonEmptyStr  # litellm's provider/model, e.g. anthropic/claude-sonnet-4-5, ollama_chat/llama3.1
    api_key: SecretStr = SecretStr("")  # from ${env:...}; a hosted model without one is skipped
    api_base: str = ""  # a local model (ollama, vLLM) without one is skipped
    rpm: int = Field(default=0, ge=0)  # requests per minute at most (0: no limit)
    # Prices for models litellm has none for (local ones: 0), USD per token.
    input_cost_per_token: float | None = Field(default=None, ge=0)
    output_cost_per_token: float | None = Field(default=None, ge=0)


class NotifyRetry(Backoff):
    """Retries of a notification: connection errors, 429 and 5xx, with capped backoff."""

    initial_interval: PositiveDuration = Duration.parse("1s")
    max_interval: PositiveDuration = Duration.parse("30s")
    max_attempts: Positive = 5


class NotifierConfig(Frozen):
    """One entry of `processors.narrator.notifications`: where insights page people."""

    type: Literal["webhook", "slack", "pagerduty"]  # webhook: Alertmanager's payload
    name: str = ""  # in metrics and logs (default: the type)
    url: SecretStr = SecretStr("")  # webhook and slack; empty: off. pagerduty: the Events API v2 endpoint
    routing_key: SecretStr = SecretStr("")  # pagerduty's integration key; empty: off
    # which changes notify (not `on`: YAML reads that key as true)
    events: tuple[Literal["opened", "updated", "escalated", "resolved"], ...] = ("opened", "escalated", "resolved")
    timeout: PositiveDuration = Duration.parse("10s")
    retry: NotifyRetry = NotifyRetry()


class NarratorConfig(Frozen):
    """`processors.narrator`: stage 3, one grounded insight per incident on `topic` (runs when
    listed in the pipeline after `anomaly`). With no usable model the template narrates."""

    topic: NonEmptyStr = "enriched-insights"
    models: tuple[ModelEntry, ...] = ()
    # Task -> model names, tried in order (the fallbacks), then the template.
    routes: dict[Literal["narrative", "dashboard"], tuple[NonEmptyStr, ...]] = {}
    timeout: PositiveDuration = Duration.parse("20s")  # per request
    retries: int = Field(default=1, ge=0, le=5)  # per model, before the next one
    daily_budget_usd: float = Field(default=5.0, ge=0)  # spent: the template narrates until 00:00 UTC
    cache_size: Positive = 1000  # narratives kept by facts digest: equal facts are not re-asked
    max_tokens: Positive = 1500
    notifications: tuple[NotifierConfig, ...] = ()
    # A running incident is re-narrated at most this often (a rise in severity and the end
    # are published at once).
    cooldown: PositiveDuration = Duration.parse("5m")
    # Incidents that began this long ago are still picked up at start (open ones resumed,
    # ones that never got an insight published). Insights of older incidents are left as they are.
    history: PositiveDuration = Duration.parse("24h")

    @model_validator(mode="after")
    def _known_models(self) -> NarratorConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("models: two entries have the same name")
        for task, route in self.routes.items():
            unknown = [n for n in route if n not in names]
            if unknown:
                raise ValueError(f"routes.{task}: {unknown} not in models (known: {names})")
        return self


class DashboardsConfig(Frozen):
    """`processors.dashboards`: generated dashboard specs on `topic`, stored in the `dashboards`
    table: one per incident, updated with its insight (when the narrator runs), and per
    service or the overview on demand (`otel-insights dashboards generate`)."""

    topic: NonEmptyStr = "dashboard-specs"
    audience: Literal["sre", "developer", "manager"] = "sre"  # the reader incident dashboards are for
    # rules: deterministic; model: the narrator's `dashboard` route lays them out, checked like
    # any spec, with one repair, and the rules whenever a model cannot.
    generator: Literal["rules", "model"] = "rules"


RECEIVERS: dict[str, type[Frozen]] = {"kafka": KafkaReceiver, "otlp": OtlpReceiver}
PROCESSORS: dict[str, type[Frozen]] = {
    "servicegraph": ServiceGraphConfig, "windows": WindowsConfig, "anomaly": AnomalyConfig,
    "narrator": NarratorConfig, "dashboards": DashboardsConfig,
}
EXPORTERS: dict[str, type[Frozen]] = {
    "clickhouse": ClickHouseExporter,
    "prometheus": PrometheusExporter,
    "kafka": KafkaExporter,
}
