"""OTel SDK -> rotel collector (Kafka exporter, zstd) -> Kafka -> pipeline -> ClickHouse rows."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SpanExporter

from tests.e2e.procs import RotelAgent, rotel_agent
from tests.e2e.sdk_traffic import assert_final_rows, send_requests
from tests.integration.harness import make_pipeline

pytestmark = pytest.mark.e2e

N = 30
ERRORS = {0, 7, 29}
DB_ERRORS = {4}


def _runnable_agent() -> tuple[Path | None, str]:
    agent = rotel_agent()
    if agent is None:
        return None, "the rotel wheel (rotel-agent binary) is not installed"
    try:
        done = subprocess.run([str(agent), "--version"], capture_output=True, timeout=20)
    except OSError as exc:  # wrong architecture, missing loader, ...
        return None, f"rotel-agent cannot run on this machine: {exc}"
    if done.returncode != 0:
        return None, f"rotel-agent cannot run on this machine: {done.stderr.decode(errors='replace')}"
    return agent, ""


AGENT, WHY_NOT = _runnable_agent()


def grpc_exporter(port: int) -> Callable[[], SpanExporter]:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return lambda: OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10)


@pytest.mark.skipif(AGENT is None, reason=WHY_NOT)
@pytest.mark.parametrize(("fmt", "encoding"), [("protobuf", "otlp_proto"), ("json", "otlp_json")])
def test_rotel_kafka_exporter_gives_exact_edges_and_health(broker, new_topic, unique_name, tmp_path,
                                                           fmt, encoding) -> None:
    assert AGENT is not None
    topic = new_topic("e2e-rotel")
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("rotel"), encoding=encoding,
                      window="2s", rekey="auto").start()
    try:
        with RotelAgent(AGENT, broker.bootstrap, topic, fmt, tmp_path) as agent:
            want = send_requests(grpc_exporter(agent.grpc_port), N, ERRORS, DB_ERRORS)
            assert_final_rows(p, want)
            agent.check_alive()
        assert p.metric("otel_insights_spans_total") == want.spans
        # rotel does not key records by trace id: every record went through the re-key topic.
        assert p.metric("otel_insights_rekeyed_records_total") > 0
        assert p.metric("otel_insights_dlq_records_total") == 0
        assert p.metric("otel_insights_late_spans_total") == 0
    finally:
        p.stop()
