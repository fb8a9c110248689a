"""Config loading: the documented example, shipped configs, env expansion, error lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor.config import (
    ClickHouseExporter,
    Config,
    Duration,
    KafkaExporter,
    load_config,
    parse_config,
)
from processor.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

EXAMPLE = """
receivers:
  kafka:
    brokers: ["127.0.0.1:9092"]
    group_id: otel-insights
    initial_offset: earliest          # or latest
    traces: {topics: [otlp_spans], encoding: otlp_proto}   # or otlp_json
  otlp:
    protocols: {grpc: {endpoint: "127.0.0.1:4317"}, http: {endpoint: "127.0.0.1:4318"}}
processors:
  servicegraph:
    store: {ttl: 2s, max_items: 10000}
    virtual_node_peer_attributes: [peer.service, db.name, db.system]
  windows: {size: 60s, allowed_lateness: 30s, idle_timeout: 10s}
exporters:
  clickhouse: {endpoint: "chdb:///path/to/dir", database: otel_insights, ttl: 720h, create_schema: true}
  prometheus: {endpoint: "127.0.0.1:9464"}
service:
  pipelines:
    traces: {receivers: [kafka], processors: [servicegraph, windows], exporters: [clickhouse, prometheus]}
"""

MINIMAL = """
receivers: {kafka: {}}
exporters: {prometheus: {}}
service: {pipelines: {traces: {receivers: [kafka], exporters: [prometheus]}}}
"""

S = 1_000_000_000


def errors_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, environ=environ or {})
    return str(info.value).splitlines()


def test_documented_example_validates_with_every_value() -> None:
    config = parse_config(EXAMPLE, environ={})

    kafka = config.kafka
    assert kafka is not None
    assert kafka.brokers == ("127.0.0.1:9092",)
    assert kafka.group_id == "otel-insights"
    assert kafka.initial_offset == "earliest"
    assert (kafka.traces.topics, kafka.traces.encoding) == (("otlp_spans",), "otlp_proto")

    otlp = config.otlp  # defined but not in the pipeline: the gateway still finds it
    assert otlp is not None and otlp.protocols.grpc and otlp.protocols.http
    assert otlp.protocols.grpc.host_port == ("127.0.0.1", 4317)
    assert otlp.protocols.http.host_port == ("127.0.0.1", 4318)
    assert (otlp.topic, otlp.encoding) == ("otlp_spans", "otlp_proto")  # inherited

    graph = config.servicegraph
    assert graph.store.ttl.ns == 2 * S
    assert graph.store.max_items == 10000
    assert graph.virtual_node_peer_attributes == ("peer.service", "db.name", "db.system")

    windows = config.windows
    assert (windows.size.ns, windows.allowed_lateness.ns, windows.idle_timeout.ns) == (
        60 * S,
        30 * S,
        10 * S,
    )

    clickhouse = config.clickhouse
    assert clickhouse is not None
    assert clickhouse.backend == "chdb" and clickhouse.chdb_path == "/path/to/dir"
    assert clickhouse.database == "otel_insights"
    assert clickhouse.ttl.ns == 720 * 3600 * S
    assert clickhouse.create_schema is True

    assert config.prometheus is not None and config.prometheus.host_port == ("127.0.0.1", 9464)
    pipeline = config.service.pipelines.traces
    assert pipeline.receivers == ("kafka",)
    assert pipeline.processors == ("servicegraph", "windows")
    assert pipeline.exporters == ("clickhouse", "prometheus")
    # No kafka exporter defined: the DLQ falls back to the receiver's brokers.
    assert config.dlq == KafkaExporter(brokers=("127.0.0.1:9092",), topic="otel-insights-dlq")


def test_defaults_fill_every_optional_key() -> None:
    config = parse_config(MINIMAL, environ={})
    kafka = config.kafka
    assert kafka is not None
    assert (kafka.client_id, kafka.partitions, kafka.max_batch_records) == ("otel-insights", 3, 500)
    assert kafka.max_batch_wait.ns == 200_000_000 and kafka.max_batch_wait.ms == 200
    assert (kafka.rekey, kafka.rekey_topic, kafka.partials_topic) == (
        "auto",
        "otel-insights-rekeyed",
        "otel-insights-partials",
    )
    assert config.servicegraph.store.max_items == 1000
    assert config.servicegraph.database_name_attributes == ("db.name",)
    health = config.windows.health
    assert (health.min_requests, health.baseline_windows) == (10, 30)
    assert (health.error_rate_degraded, health.error_rate_critical) == (0.01, 0.05)
    assert (health.latency_degraded_ratio, health.latency_critical_ratio) == (1.5, 3.0)
    assert config.windows.late_spans == "correct"
    assert config.windows.correction_horizon.seconds == 3600
    assert config.clickhouse is None and config.otlp is None
    assert config.service.telemetry.logs.level == "info"


@pytest.mark.parametrize("name", ["local.yaml", "production.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    config = load_config(REPO / "config" / name, environ={})
    assert config.kafka is not None and config.otlp is not None and config.clickhouse is not None
    assert config.dlq.topic == "otel-insights-dlq"
    assert config.dlq.brokers == config.kafka.brokers  # inherited at load


def test_the_packaged_default_is_config_local_yaml() -> None:
    # `demo` reads the copy inside the package; config/local.yaml is what users read.
    from importlib import resources

    packaged = resources.files("processor.config").joinpath("local.yaml").read_bytes()
    assert packaged == (REPO / "config" / "local.yaml").read_bytes()


def test_local_config_uses_short_windows_and_embedded_clickhouse() -> None:
    config = load_config(REPO / "config" / "local.yaml", environ={})
    assert config.windows.size == Duration(10 * S)
    assert config.kafka is not None and config.kafka.brokers == ("127.0.0.1:19092",)
    assert config.clickhouse is not None and config.clickhouse.backend == "chdb"
    assert config.clickhouse.chdb_path == "./.otel-insights/chdb"

    moved = load_config(REPO / "config" / "local.yaml", environ={"OTEL_INSIGHTS_DATA": "/d"})
    assert moved.clickhouse is not None and moved.clickhouse.chdb_path == "/d"


def test_production_config_reads_environment() -> None:
    environ = {
        "KAFKA_BROKERS": "k1:9092, k2:9092",
        "CLICKHOUSE_ENDPOINT": "https://ch.example:8443",
        "CLICKHOUSE_PASSWORD": "s3cret",
    }
    config = load_config(REPO / "config" / "production.yaml", environ=environ)
    assert config.kafka is not None and config.kafka.brokers == ("k1:9092", "k2:9092")
    assert config.dlq.brokers == ("k1:9092", "k2:9092")
    clickhouse = config.clickhouse
    assert clickhouse is not None and clickhouse.backend == "http"
    assert clickhouse.endpoint == "https://ch.example:8443"
    assert clickhouse.password == "s3cret" and "s3cret" not in repr(clickhouse)
    assert config.windows.size.ns == 60 * S


def test_env_expansion_default_escape_and_missing() -> None:
    text = MINIMAL.replace(
        "kafka: {}",
        'kafka: {group_id: "${env:GROUP}", client_id: "${env:CID:-fallback}",'
        ' rekey_topic: "lit-$${env:GROUP}"}',
    )
    config = parse_config(text, environ={"GROUP": "g1"})
    assert config.kafka is not None
    assert config.kafka.group_id == "g1"
    assert config.kafka.client_id == "fallback"
    assert config.kafka.rekey_topic == "lit-${env:GROUP}"

    lines = errors_of(text, environ={})
    assert len(lines) == 1
    assert lines[0].startswith("receivers.kafka.group_id: environment variable GROUP is not set")


def test_env_value_cannot_inject_structure() -> None:
    text = MINIMAL.replace("kafka: {}", 'kafka: {group_id: "${env:G}"}')
    config = parse_config(text, environ={"G": "x\nbogus: 1"})
    assert config.kafka is not None and config.kafka.group_id == "x\nbogus: 1"


def test_env_values_are_coerced_like_yaml_scalars() -> None:
    text = MINIMAL.replace(
        "kafka: {}", 'kafka: {partitions: "${env:P:-6}", max_batch_wait: "${env:W:-2}"}'
    )
    config = parse_config(text, environ={})
    assert config.kafka is not None
    assert config.kafka.partitions == 6 and config.kafka.max_batch_wait.ns == 2 * S


def test_unsupported_substitution_is_an_error() -> None:
    text = MINIMAL.replace("kafka: {}", 'kafka: {group_id: "${GROUP}"}')
    lines = errors_of(text)
    assert len(lines) == 1 and lines[0].startswith("receivers.kafka.group_id: unsupported")


def test_unknown_key_names_full_path() -> None:
    text = MINIMAL.replace("kafka: {}", "kafka: {traces: {topic: t, colour: blue}}")
    assert errors_of(text) == ["receivers.kafka.traces.colour: unknown key"]


def test_every_bad_value_is_reported_on_its_own_line() -> None:
    text = (
        MINIMAL.replace("kafka: {}", "kafka: {initial_offset: middle, partitions: 0, bogus: 1}")
        + "processors: {windows: {size: 0s, late_spans: keep, health: {latency_critical_ratio: 1}}}\n"
    )
    lines = errors_of(text)
    assert len(lines) == 6, lines
    paths = [line.split(":", 1)[0] for line in lines]
    assert set(paths) == {
        "receivers.kafka.initial_offset",
        "receivers.kafka.partitions",
        "receivers.kafka.bogus",
        "processors.windows.size",
        "processors.windows.late_spans",
        "processors.windows.health.latency_critical_ratio",
    }
    assert "processors.windows.size: must be greater than 0" in lines
    assert any("'middle'" in line for line in lines)


def test_bad_duration_message() -> None:
    text = MINIMAL + "processors: {windows: {size: abc}}\n"
    assert errors_of(text) == [
        "processors.windows.size: invalid duration 'abc' (use e.g. 60s, 500ms, 2m)"
    ]


@pytest.mark.parametrize(
    ("value", "ns"),
    [
        ("500ms", 500_000_000),
        ("2s", 2 * S),
        ("1m", 60 * S),
        ("1m30s", 90 * S),
        ("1.5s", 1_500_000_000),
        ("720h", 720 * 3600 * S),
        ("250us", 250_000),
        ("7ns", 7),
        (45, 45 * S),
        ("45", 45 * S),
        (0, 0),
    ],
)
def test_duration_parsing(value: object, ns: int) -> None:
    assert Duration.parse(value).ns == ns


@pytest.mark.parametrize("value", ["abc", "-1s", "1d", "1.5", True, 2.5, "", "s", "5 s"])
def test_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        Duration.parse(value)


def test_duration_string_round_trip() -> None:
    for text in ("500ms", "2s", "1m30s", "720h", "0s", "1h1ms"):
        assert str(Duration.parse(text)) == text
    assert Duration.parse("90s") == Duration.parse("1m30s")


def test_undefined_pipeline_component_is_reported_with_bad_values() -> None:
    text = MINIMAL.replace("exporters: [prometheus]", "exporters: [prometheus, clickhouse]")
    text = text.replace("kafka: {}", "kafka: {partitions: -1}")
    lines = errors_of(text)
    assert (
        "service.pipelines.traces.exporters[1]: 'clickhouse' is not defined under exporters"
        in lines
    )
    assert any(line.startswith("receivers.kafka.partitions:") for line in lines)
    assert len(lines) == 2


def test_component_ids_with_names() -> None:
    text = MINIMAL.replace(
        "exporters: {prometheus: {}}",
        "exporters: {prometheus: {}, kafka/dlq: {topic: dead}, clickhouse/archive: {endpoint: 'http://ch:8123'}}",
    )
    config = parse_config(text, environ={})
    assert isinstance(config.exporters["kafka/dlq"], KafkaExporter)
    assert isinstance(config.exporters["clickhouse/archive"], ClickHouseExporter)
    assert config.dlq.topic == "dead" and config.dlq.brokers == ("127.0.0.1:9092",)
    assert config.clickhouse is None  # defined but not in the pipeline


def test_unknown_component_type_and_bad_id() -> None:
    text = MINIMAL.replace("kafka: {}", "kafka: {}, zipkin/x: {}, 'otlp/': {}")
    lines = errors_of(text)
    assert "receivers.zipkin/x: unknown receiver type 'zipkin' (supported: kafka, otlp)" in lines
    assert any(line.startswith("receivers.otlp/: invalid component id") for line in lines)
    assert len(lines) == 2


@pytest.mark.parametrize(
    ("endpoint", "backend", "path"),
    [
        ("chdb:///tmp/x", "chdb", "/tmp/x"),
        ("chdb://./data/x", "chdb", "./data/x"),
        ("chdb://data", "chdb", "data"),
        ("http://clickhouse:8123", "http", None),
        ("https://ch.example.com:8443", "http", None),
    ],
)
def test_clickhouse_endpoints(endpoint: str, backend: str, path: str | None) -> None:
    exporter = ClickHouseExporter(endpoint=endpoint)
    assert exporter.backend == backend
    if path is None:
        with pytest.raises(ConfigError):
            _ = exporter.chdb_path
    else:
        assert exporter.chdb_path == path


@pytest.mark.parametrize(
    "endpoint", ["chdb://", "mysql://x", "http://", "http://h:99999", "/tmp/x"]
)
def test_bad_clickhouse_endpoints(endpoint: str) -> None:
    text = MINIMAL.replace(
        "exporters: {prometheus: {}}",
        f"exporters: {{prometheus: {{}}, clickhouse: {{endpoint: '{endpoint}'}}}}",
    )
    lines = errors_of(text)
    assert len(lines) == 1 and lines[0].startswith("exporters.clickhouse.endpoint: ")


def test_otlp_protocols() -> None:
    text = MINIMAL.replace(
        "kafka: {}", "kafka: {traces: {encoding: otlp_json}}, otlp: {protocols: {grpc: }}"
    )
    config = parse_config(text, environ={})
    otlp = config.otlp
    assert otlp is not None and otlp.protocols.http is None
    assert otlp.protocols.grpc is not None and otlp.protocols.grpc.endpoint == "127.0.0.1:4317"
    assert otlp.encoding == "otlp_json"  # inherited from the kafka receiver
    assert otlp.max_request_size == 4194304

    none = MINIMAL.replace("kafka: {}", "kafka: {}, otlp: {protocols: {}}")
    assert errors_of(none) == ["receivers.otlp.protocols: enable at least one of grpc, http"]


def test_yaml_syntax_error_has_line_number() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("receivers:\n  kafka: {brokers: [a\n", source="cfg.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cfg.yaml:3:")


def test_duplicate_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^x\.yaml:3:\d+: invalid YAML: duplicate key 'kafka'"):
        parse_config("receivers:\n  kafka: {}\n  kafka: {}\n", source="x.yaml")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_config_is_frozen() -> None:
    config = parse_config(MINIMAL, environ={})
    with pytest.raises(ValueError):
        config.windows.size = Duration(1)  # type: ignore[misc]
    assert isinstance(Config.model_validate(config.model_dump()), Config)  # dump round-trips


def test_production_config_shows_every_key() -> None:
    """config/production.yaml is the reference of the keys: each component model's every
    field (nested ones too) is written out in it."""
    import typing

    import yaml
    from pydantic import BaseModel

    from processor.config.components import EXPORTERS, PROCESSORS, RECEIVERS

    raw = yaml.safe_load((REPO / "config" / "production.yaml").read_text())

    def model_of(annotation: object) -> type[BaseModel] | None:
        for arg in (annotation, *typing.get_args(annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
        return None

    def missing(model: type[BaseModel], section: dict, path: str) -> list[str]:
        out = []
        for field, info in model.model_fields.items():
            if field not in section:
                out.append(f"{path}.{field}")
                continue
            nested = model_of(info.annotation)
            if nested is not None and isinstance(section[field], dict):
                out += missing(nested, section[field], f"{path}.{field}")
        return out

    gaps = []
    for kind, registry in (("receivers", RECEIVERS), ("processors", PROCESSORS),
                           ("exporters", EXPORTERS)):
        for cid, section in raw[kind].items():
            gaps += missing(registry[cid.split("/")[0]], section or {}, f"{kind}.{cid}")
    assert gaps == []
