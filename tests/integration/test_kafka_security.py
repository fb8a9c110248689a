"""receivers.kafka's tls and auth.sasl against a broker that demands them (tests.kafka_gate in
front of the local broker): every Kafka client of a worker authenticates, over TLS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from processor.config import parse_config
from processor.config.kafka import KafkaAuth, KafkaSASL, KafkaTLS, client_options
from processor.generate import GroundTruth, ShopGenerator
from processor.generate.sinks import export_request, send_kafka
from processor.localstack import LocalBroker, free_port
from tests.integration.harness import Pipeline, wait_until
from tests.kafka_gate import KafkaGate
from tests.truth_compare import assert_exact, counts_match

pytestmark = pytest.mark.integration
USERS = {"alice": "s3cret-256", "bob": "s3cret-512", "carol": "plain-pw"}
WINDOW_NS = 2_000_000_000


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for the name kafka.test (not the address clients dial)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("certs")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=otel-insights test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=kafka.test")
    (d / "ext.cnf").write_text("subjectAltName=DNS:kafka.test\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return d


@pytest.fixture(scope="module")
def secure(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalBroker, KafkaGate]]:
    """A broker reachable only through a gate that wants TLS and a SASL login."""
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(certs / "server.pem", certs / "server.key")
    gate_port = free_port()
    log = tmp_path_factory.mktemp("secure-broker") / "tansu.log"
    with LocalBroker(log_path=log, advertised_port=gate_port) as broker:
        gate = KafkaGate(("127.0.0.1", broker.port), gate_port, USERS, server_ssl=server_ssl).start()
        try:
            yield broker, gate
        finally:
            gate.stop()


def _tls(certs: Path, **kw: Any) -> KafkaTLS:
    return KafkaTLS(ca_file=str(certs / "ca.pem"), **{"server_name_override": "kafka.test", **kw})


async def _round_trip(bootstrap: str, topic: str, options: dict[str, Any]) -> bytes:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000, **options)
    await prod.start()
    try:
        await prod.send_and_wait(topic, b"hello", partition=0)
    finally:
        await prod.stop()
    cons = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                            request_timeout_ms=5000, **options)
    await cons.start()
    try:
        return (await asyncio.wait_for(cons.getone(), 20)).value
    finally:
        await cons.stop()


@pytest.mark.parametrize(("mechanism", "user"), [("SCRAM-SHA-256", "alice"), ("SCRAM-SHA-512", "bob"),
                                                  ("PLAIN", "carol")])
def test_each_sasl_mechanism_over_tls(secure: tuple[LocalBroker, KafkaGate], certs: Path,
                                      mechanism: Any, user: str) -> None:
    broker, gate = secure
    topic = f"sec-{mechanism.lower()}"
    broker.create_topic(topic, 1)
    auth = KafkaAuth(sasl=KafkaSASL(mechanism=mechanism, username=user, password=USERS[user]))
    options = client_options(_tls(certs), auth)
    assert options["security_protocol"] == "SASL_SSL"
    assert asyncio.run(_round_trip(f"127.0.0.1:{gate.port}", topic, options)) == b"hello"
    assert any(m == mechanism for _, m in gate.authenticated)


@pytest.mark.parametrize(("what", "refused"), [("password", "SCRAM-SHA-512 bob"),
                                               ("no_sasl", "api 3 before authentication")])
def test_a_wrong_password_or_no_login_is_refused(secure: tuple[LocalBroker, KafkaGate], certs: Path,
                                                 what: str, refused: str) -> None:
    _, gate = secure
    sasl = KafkaSASL(mechanism="SCRAM-SHA-512", username="bob", password="wrong")
    options = client_options(_tls(certs), KafkaAuth(sasl=sasl if what == "password" else None))
    before = gate.refused[refused]
    with pytest.raises(Exception):  # noqa: B017 - aiokafka reports either as a connection error
        asyncio.run(_round_trip(f"127.0.0.1:{gate.port}", "sec-refused", options))
    assert gate.refused[refused] > before


@pytest.mark.parametrize("tls", ["without server_name_override", "without ca_file"])
def test_the_broker_certificate_is_checked(secure: tuple[LocalBroker, KafkaGate], certs: Path,
                                           tls: str) -> None:
    _, gate = secure
    ctx = (KafkaTLS(ca_file=str(certs / "ca.pem")) if tls == "without server_name_override"
           else KafkaTLS(server_name_override="kafka.test")).context()  # 127.0.0.1 / system CAs

    async def connect() -> None:
        await asyncio.open_connection("127.0.0.1", gate.port, ssl=ctx)

    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(connect())
    assert asyncio.run(_round_trip(f"127.0.0.1:{gate.port}", "sec-cert", client_options(
        _tls(certs), KafkaAuth(sasl=KafkaSASL(mechanism="PLAIN", username="carol",
                                              password=USERS["carol"]))))) == b"hello"


CONFIG = """
receivers:
  kafka:
    brokers: ["127.0.0.1:{gate}"]
    group_id: {group}
    initial_offset: earliest
    tls: {{ca_file: "{ca}", server_name_override: kafka.test}}
    auth: {{sasl: {{mechanism: SCRAM-SHA-512, username: bob, password: "{password}"}}}}
    traces: {{topics: [{topic}], encoding: otlp_proto}}
    partitions: 1
    max_batch_wait: 100ms
    rekey_topic: {topic}-rekeyed
    partials_topic: {topic}-partials
  otlp:
    protocols: {{http: {{endpoint: "127.0.0.1:{http}"}}}}
processors:
  servicegraph: {{store: {{ttl: 1s}}}}
  windows: {{size: 2s, allowed_lateness: 2s, idle_timeout: 2s}}
exporters:
  clickhouse: {{endpoint: "chdb://{chdb}", ttl: 0s}}
  prometheus: {{endpoint: "127.0.0.1:{port}"}}
  kafka/dlq: {{topic: {topic}-dlq}}
service:
  pipelines:
    traces: {{receivers: [kafka, otlp], processors: [servicegraph, windows], exporters: [clickhouse, prometheus]}}
"""


def test_every_client_of_a_worker_uses_tls_and_sasl(secure: tuple[LocalBroker, KafkaGate], certs: Path,
                                                     tmp_path: Path) -> None:
    """The worker's topic check, stage 1's consumer, faust (partials, re-key, DLQ producer) and
    the gateway's producer all go through the gate: nothing it refuses can get through, so
    exact rows, a dead letter and gateway spans mean each of them logged in."""
    broker, gate = secure
    topic = f"sec-spans-{time.monotonic_ns()}"
    for t in (topic, f"{topic}-rekeyed", f"{topic}-partials", f"{topic}-dlq"):
        broker.create_topic(t, 1)
    port, http = free_port(), free_port()
    cfg = tmp_path / "secure.yaml"
    cfg.write_text(CONFIG.format(gate=gate.port, group="secure", ca=certs / "ca.pem",
                                 password=USERS["bob"], topic=topic, http=http,
                                 chdb=tmp_path / "chdb", port=port))
    parse_config(cfg.read_text(), environ={})  # the file is valid before the worker reads it
    start = (time.time_ns() // WINDOW_NS - 60) * WINDOW_NS
    traces = list(ShopGenerator(seed=41, rate=100, start_ns=start).traces(6))
    truth = GroundTruth(WINDOW_NS)
    truth.add_all(traces)
    options = client_options(_tls(certs), KafkaAuth(sasl=KafkaSASL(
        mechanism="SCRAM-SHA-256", username="alice", password=USERS["alice"])))
    refused_before = sum(n for why, n in gate.refused.items() if why.startswith("api"))
    logins_before = gate.authenticated.copy()
    p = Pipeline(cfg, port, tmp_path / "secure.log").start()
    try:
        asyncio.run(send_kafka(traces[:-1], [f"127.0.0.1:{gate.port}"], topic, "otlp_proto",
                               security=options))
        asyncio.run(_produce_bad(f"127.0.0.1:{gate.port}", topic, options))
        # The last trace comes through the worker's OTLP gateway, whose producer must log in
        # (a client retries until the gateway is up and has Kafka: 503 until then).
        wait_until(lambda: _export(http, export_request(traces[-1:])), 60, "the gateway took a trace", p)
        wait_until(lambda: counts_match(truth, p.query("health"), p.query("edges")), 90,
                   "exact rows through TLS + SASL", p)
        assert_exact(truth, p.query("health"), p.query("edges"))
        wait_until(lambda: p.metric("otel_insights_dlq_records_total") == 1, 30, "a dead letter", p)
        assert p.metric("otel_insights_gateway_requests_total", outcome="ok") == 1
    finally:
        p.stop()
    logins = gate.authenticated - logins_before  # this worker's (bob, SCRAM-SHA-512)
    clients = {client for client, mechanism in logins if mechanism == "SCRAM-SHA-512"}
    assert "otel-insights" in clients  # stage 1's consumer (receivers.kafka.client_id)
    assert "otel-insights-gateway" in clients  # the gateway's producer
    assert len(clients) >= 3, clients  # and faust's clients
    # No client of the worker ever sent a request without logging in (other tests of this
    # module do on purpose: count only this one's).
    assert sum(n for why, n in gate.refused.items() if why.startswith("api")) == refused_before


def _export(port: int, body: bytes) -> bool:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/traces", body,
                                 {"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status == 200
    except OSError:  # not listening yet, or 503 while its producer connects
        return False


async def _produce_bad(bootstrap: str, topic: str, options: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaProducer

    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, **options)
    await prod.start()
    try:
        await prod.send_and_wait(topic, b"\xff\x00not a protobuf", key=b"0" * 32, partition=0)
    finally:
        await prod.stop()
