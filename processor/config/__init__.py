"""Collector-style YAML configuration: load, expand `${env:...}`, validate into frozen models.

    config = load_config("config/local.yaml")
    config.windows.size.ns, config.kafka.brokers, config.clickhouse.backend

Durations ("500ms", "60s", "720h", or int seconds) become `Duration` values once, at load;
read `.ns` (int), `.ms` (int) or `.seconds` (float). Every problem is reported at once as a
ConfigError with one `key.path: message` line each.
"""

from processor.config.components import (
    ClickHouseExporter,
    Encoding,
    GrpcProtocol,
    HealthConfig,
    HttpProtocol,
    KafkaExporter,
    KafkaReceiver,
    KafkaTraces,
    OtlpProtocols,
    OtlpReceiver,
    PrometheusExporter,
    ServiceGraphConfig,
    StoreConfig,
    WindowsConfig,
    split_host_port,
)
from processor.config.duration import Duration
from processor.config.loader import load_config, parse_config
from processor.config.model import Config, Pipeline, Service

__all__ = [
    "ClickHouseExporter",
    "Config",
    "Duration",
    "Encoding",
    "GrpcProtocol",
    "HealthConfig",
    "HttpProtocol",
    "KafkaExporter",
    "KafkaReceiver",
    "KafkaTraces",
    "OtlpProtocols",
    "OtlpReceiver",
    "Pipeline",
    "PrometheusExporter",
    "Service",
    "ServiceGraphConfig",
    "StoreConfig",
    "WindowsConfig",
    "load_config",
    "parse_config",
    "split_host_port",
]
