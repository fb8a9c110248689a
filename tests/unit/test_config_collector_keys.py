"""The collector's own keys: a kafkareceiver block and a servicegraph connector block as users
paste them, what they become, and one error line per mistake."""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest

from pipelines.intake import Intake
from processor.config import parse_config
from processor.config.components import LATENCY_BUCKETS, label_name
from processor.config.kafka import KafkaAuth, KafkaSASL, KafkaTLS, client_options
from processor.errors import ConfigError

BASE = """
receivers:
  kafka: {kafka}
processors:
  servicegraph: {servicegraph}
exporters: {{prometheus: {{}}}}
service: {{pipelines: {{traces: {{receivers: [kafka], processors: [servicegraph], exporters: [prometheus]}}}}}}
"""


def config(kafka: str = "{}", servicegraph: str = "{}"):  # type: ignore[no-untyped-def]
    return parse_config(BASE.format(kafka=kafka, servicegraph=servicegraph), environ={})


def errors(kafka: str = "{}", servicegraph: str = "{}") -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(kafka, servicegraph)
    return str(info.value).splitlines()


# --- receivers.kafka -------------------------------------------------------------------


def test_a_collector_kafka_receiver_block_pastes_as_is() -> None:
    c = config("""
    brokers: [k1:9093, k2:9093]
    group_id: otel
    initial_offset: earliest
    session_timeout: 30s
    heartbeat_interval: 5s
    tls: {ca_file: /etc/kafka/ca.pem, insecure_skip_verify: false, server_name_override: kafka}
    auth: {sasl: {mechanism: SCRAM-SHA-512, username: otel, password: s3cret, version: 1}}
    header_extraction: {extract_headers: true, headers: [tenant, region]}
    traces: {topics: [spans-a, spans-b], encoding: otlp_json}
    """)
    kafka = c.kafka
    assert kafka is not None
    assert kafka.traces.topics == ("spans-a", "spans-b")
    assert (kafka.session_timeout.ms, kafka.heartbeat_interval.ms) == (30_000, 5_000)
    assert kafka.header_extraction.active == ("tenant", "region")
    assert kafka.auth.sasl is not None and kafka.auth.sasl.mechanism == "SCRAM-SHA-512"
    assert "s3cret" not in repr(kafka)  # a password never shows in logs or errors


def test_defaults_are_the_receivers() -> None:
    kafka = config().kafka
    assert kafka is not None
    assert (kafka.initial_offset, kafka.session_timeout.ms, kafka.heartbeat_interval.ms) == (
        "latest", 10_000, 3_000)
    assert kafka.traces.topics == ("otlp_spans",)
    assert (kafka.tls, kafka.auth.sasl, kafka.header_extraction.active) == (None, None, ())


def test_the_deprecated_singular_topic_is_one_topic(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "otel_insights.config"):
        kafka = config("{traces: {topic: spans}}").kafka
    assert kafka is not None and kafka.traces.topics == ("spans",)
    assert "traces.topic is deprecated" in caplog.text and "topics: [spans]" in caplog.text


@pytest.mark.parametrize(("kafka", "line"), [
    ("{traces: {topic: a, topics: [b]}}",
     "receivers.kafka.traces: set topics (topic is its deprecated spelling), not both"),
    ("{traces: {topics: ['^otlp.*']}}",
     "receivers.kafka.traces.topics[0]: regex topics ('^otlp.*') are not supported: list the topics"),
    ("{traces: {topics: [a, a]}}", "receivers.kafka.traces: topics: a topic is listed twice"),
    ("{traces: {topics: []}}", "receivers.kafka.traces.topics: must not be empty"),
    ("{session_timeout: 3s}",
     "receivers.kafka: heartbeat_interval must be shorter than session_timeout"),
    ("{traces: {topics: [otel-insights-partials]}}",
     "receivers.kafka: traces.topics: ['otel-insights-partials'] is an internal topic of the pipeline"),
    ("{auth: {sasl: {mechanism: PLAIN, username: u}}}", "receivers.kafka.auth.sasl.password: missing required key"),
    ("{auth: {sasl: {mechanism: AWS_MSK_IAM_OAUTHBEARER, username: u, password: p}}}",
     "receivers.kafka.auth.sasl.mechanism: input should be 'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512' "
     "(got 'AWS_MSK_IAM_OAUTHBEARER')"),
    ("{auth: {kerberos: {}}}", "receivers.kafka.auth.kerberos: unknown key"),
    ("{tls: {cert_file: c.pem}}",
     "receivers.kafka.tls: cert_file and key_file go together (a client certificate and its key)"),
    ("{tls: {min_version: '1.3', max_version: '1.2'}}", "receivers.kafka.tls: max_version must be >= min_version"),
])
def test_mistakes_are_one_line_naming_the_key(kafka: str, line: str) -> None:
    assert errors(kafka) == [line]


def test_protocol_version_is_accepted_and_said_to_be_unused(caplog: pytest.LogCaptureFixture) -> None:
    """Sarama needed the broker's protocol version; our client asks each broker (ApiVersions
    on every connection), so the key changes nothing, and loading says so once."""
    with caplog.at_level(logging.WARNING, "otel_insights.config"):
        pasted = config("{brokers: [k1:9092], protocol_version: 0.10.2}")
    said = [r.getMessage() for r in caplog.records if "protocol_version" in r.getMessage()]
    assert said == ["receivers.kafka.protocol_version is not used: the Kafka client asks each broker "
                    "which protocol versions it speaks (ApiVersions) and uses those"]
    assert pasted.model_dump() == config("{brokers: [k1:9092]}").model_dump()


def test_sarama_keys_that_would_not_do_what_they_say_are_refused_with_why() -> None:
    lines = errors("{autocommit: {enable: true, interval: 1s}, message_marking: {after: true}, "
                   "default_fetch_size: 1048576, max_fetch_wait: 250ms, protocol_version: 2.1.0}")
    assert [line.split(": not supported, remove it: ")[0] for line in lines] == [
        "receivers.kafka.autocommit", "receivers.kafka.message_marking",
        "receivers.kafka.default_fetch_size", "receivers.kafka.max_fetch_wait"]
    assert "committed only once what their records produced is stored" in lines[0]
    assert "max_batch_records and max_batch_wait" in lines[2]


def test_client_options_per_security_setting() -> None:
    sasl = KafkaSASL(mechanism="SCRAM-SHA-256", username="u", password="p")  # type: ignore[arg-type]
    plain = client_options(None, KafkaAuth())
    assert plain == {"security_protocol": "PLAINTEXT", "ssl_context": None}
    tls_only = client_options(KafkaTLS(), KafkaAuth())
    assert tls_only["security_protocol"] == "SSL" and isinstance(tls_only["ssl_context"], ssl.SSLContext)
    sasl_plain = client_options(None, KafkaAuth(sasl=sasl))
    assert (sasl_plain["security_protocol"], sasl_plain["sasl_mechanism"],
            sasl_plain["sasl_plain_username"], sasl_plain["sasl_plain_password"]) == (
        "SASL_PLAINTEXT", "SCRAM-SHA-256", "u", "p")
    assert client_options(KafkaTLS(), KafkaAuth(sasl=sasl))["security_protocol"] == "SASL_SSL"
    # The collector's rule: insecure without a CA means no TLS at all.
    assert client_options(KafkaTLS(insecure=True), KafkaAuth())["security_protocol"] == "PLAINTEXT"
    # The deprecated auth.tls is used when the top-level tls is unset, and loses to it.
    assert client_options(None, KafkaAuth(tls=KafkaTLS()))["security_protocol"] == "SSL"
    ctx = client_options(KafkaTLS(insecure_skip_verify=True), KafkaAuth(tls=KafkaTLS()))["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_NONE
    assert KafkaTLS(min_version="1.3").context().minimum_version == ssl.TLSVersion.TLSv1_3


def test_a_missing_ca_file_fails_when_the_worker_builds_its_clients() -> None:
    kafka = config('{tls: {ca_file: /nonexistent/ca.pem}}').kafka
    assert kafka is not None
    with pytest.raises(OSError):
        kafka.client_options()


def test_stage_one_consumer_gets_timeouts_and_security() -> None:
    kafka = config("{session_timeout: 45s, heartbeat_interval: 15s, tls: {}, "
                   "auth: {sasl: {mechanism: PLAIN, username: u, password: p}}}").kafka
    assert kafka is not None

    async def build() -> object:
        return Intake(kafka, None, None, None, None, None)._new_consumer()  # type: ignore[arg-type]

    consumer = asyncio.run(build())
    coordinator_settings = vars(consumer)
    assert coordinator_settings["_session_timeout_ms"] == 45_000
    assert coordinator_settings["_heartbeat_interval_ms"] == 15_000
    client = coordinator_settings["_client"]
    assert (client._security_protocol, client._sasl_mechanism) == ("SASL_SSL", "PLAIN")


# --- processors.servicegraph -------------------------------------------------------------


def test_a_servicegraph_connector_block_pastes_as_is() -> None:
    sg = config(servicegraph="""
    latency_histogram_buckets: [100ms, 250ms, 1s]
    dimensions: [deployment.environment, http.method]
    store: {ttl: 1s, max_items: 10}
    virtual_node_peer_attributes: [peer.service]
    virtual_node_extra_label: true
    database_name_attributes: [db.namespace, db.name]
    """).servicegraph
    assert sg.bucket_bounds_s == (0.1, 0.25, 1.0)
    assert sg.virtual_node_extra_label and sg.database_name_attributes == ("db.namespace", "db.name")


def test_servicegraph_defaults_are_the_connectors() -> None:
    sg = config().servicegraph
    assert sg.bucket_bounds_s == (0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0,
                                  1.4, 2.0, 5.0, 10.0, 15.0)
    assert sg.latency_histogram_buckets == LATENCY_BUCKETS
    assert sg.virtual_node_peer_attributes == ("peer.service", "db.name", "db.system")
    assert (sg.virtual_node_extra_label, sg.database_name_attributes, sg.dimensions) == (
        False, ("db.name",), ())


@pytest.mark.parametrize(("servicegraph", "line"), [
    ("{latency_histogram_buckets: [1s, 100ms]}",
     "processors.servicegraph: latency_histogram_buckets must be strictly increasing"),
    ("{latency_histogram_buckets: [0s]}", "processors.servicegraph.latency_histogram_buckets[0]: must be greater than 0"),
    ("{dimensions: [a.b, a_b]}",
     "processors.servicegraph: dimensions ['a.b', 'a_b'] repeat a label name once written as "
     "Prometheus labels ([^A-Za-z0-9_] become '_')"),
    ("{database_name_attributes: []}", "processors.servicegraph.database_name_attributes: must not be empty"),
    ("{metrics_flush_interval: 60s}", "processors.servicegraph.metrics_flush_interval: unknown key"),
])
def test_servicegraph_mistakes_are_one_line(servicegraph: str, line: str) -> None:
    assert errors(servicegraph=servicegraph) == [line]


def test_label_names_as_the_prometheus_exporter_writes_them() -> None:
    assert label_name("db.system") == "db_system"
    assert label_name("some-attribute") == "some_attribute"
    assert label_name("kafka.header.tenant") == "kafka_header_tenant"
